"""The code version names the checkout's commit, read from `.git`'s files without starting git."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from common.version import _git_commit

SHA = "0123456789abcdef0123456789abcdef01234567"


def _git_dir(root: Path, head: str) -> Path:
    git = root / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text(head + "\n")
    return git


def test_git_commit_follows_head_to_a_loose_ref(tmp_path):
    git = _git_dir(tmp_path, "ref: refs/heads/main")
    (git / "refs" / "heads" / "main").write_text(SHA + "\n")
    assert _git_commit(tmp_path) == SHA[:12]


def test_git_commit_follows_head_to_a_packed_ref(tmp_path):
    git = _git_dir(tmp_path, "ref: refs/heads/main")
    (git / "packed-refs").write_text(f"# pack-refs with: peeled\n{'f' * 40} refs/heads/other\n{SHA} refs/heads/main\n")
    assert _git_commit(tmp_path) == SHA[:12]


def test_git_commit_reads_a_detached_head_and_refuses_garbage(tmp_path):
    git = _git_dir(tmp_path, SHA)
    assert _git_commit(tmp_path) == SHA[:12]
    (git / "HEAD").write_text("ref: refs/heads/missing\n")
    assert _git_commit(tmp_path) is None
    (git / "HEAD").write_text("not a commit\n")
    assert _git_commit(tmp_path) is None
    assert _git_commit(tmp_path / "elsewhere") is None


def test_git_commit_agrees_with_git_in_this_checkout():
    root = Path(__file__).resolve().parents[2]
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout with git installed")
    out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True)
    assert _git_commit(root) == out.stdout.strip()
