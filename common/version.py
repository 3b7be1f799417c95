"""Code version recorded in manifests, ledgers and reports.

Read from the package metadata and, in a git checkout, from the files under `.git` (HEAD, the ref
it names, `packed-refs`): importing this module starts no process.
"""

import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
_COMMIT = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")  # sha1 or sha256 object names
SHORT_COMMIT = 12
"""Hex digits of the commit in the version string (as `git rev-parse --short=12`)."""


def _package_version() -> str:
    try:
        return version("silo")
    except PackageNotFoundError:
        return "0+unknown"


def _git_dir(root: Path) -> Path | None:
    """`root/.git`, or the directory a worktree's `.git` file points to."""
    dot_git = root / ".git"
    if dot_git.is_dir():
        return dot_git
    if dot_git.is_file():
        text = dot_git.read_text(errors="replace").strip()
        if text.startswith("gitdir:"):
            return (root / text.removeprefix("gitdir:").strip()).resolve()
    return None


def _resolve_ref(git_dir: Path, ref: str) -> str | None:
    common = git_dir
    if (git_dir / "commondir").is_file():  # a worktree keeps branches in the main repository's directory
        common = (git_dir / (git_dir / "commondir").read_text().strip()).resolve()
    for base in (git_dir, common):
        if (base / ref).is_file():
            return (base / ref).read_text().strip()
    packed = common / "packed-refs"
    if packed.is_file():
        for line in packed.read_text(errors="replace").splitlines():
            sha, _, name = line.partition(" ")
            if name == ref:
                return sha
    return None


def _git_commit(root: Path = _ROOT) -> str | None:
    try:
        git_dir = _git_dir(root)
        if git_dir is None:
            return None
        head = (git_dir / "HEAD").read_text().strip()
        sha = _resolve_ref(git_dir, head.removeprefix("ref:").strip()) if head.startswith("ref:") else head
    except OSError:
        return None
    return sha[:SHORT_COMMIT] if sha and _COMMIT.fullmatch(sha) else None


def code_version() -> str:
    """`<package version>+g<commit>` when run from a git checkout, the package version otherwise."""
    commit = _git_commit()
    return f"{_package_version()}+g{commit}" if commit else _package_version()


CODE_VERSION = code_version()
