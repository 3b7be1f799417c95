"""Code version recorded in manifests, ledgers and reports."""

import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def _package_version() -> str:
    try:
        return version("silo")
    except PackageNotFoundError:
        return "0+unknown"


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def code_version() -> str:
    """`<package version>+g<commit>` when run from a git checkout, the package version otherwise."""
    commit = _git_commit()
    return f"{_package_version()}+g{commit}" if commit else _package_version()


CODE_VERSION = code_version()
