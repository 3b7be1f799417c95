"""The run directory records which base model and which Flower submissions a run is (server/checkpoint.py),
and the rejections of the round a failed run stopped in."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import ConfigError
from common.manifest import Rejection, read_manifest
from server.checkpoint import RunDirectory

PIN, OTHER = "ab" * 32, "cd" * 32


def _open(path: Path) -> RunDirectory:
    return RunDirectory.open_or_create(
        path, config_hash="c" * 64, config={}, base_model="m", code_version="v", rounds_planned=2, at_rest_key=None
    )


def test_run_directory_records_base_model_and_every_flower_submission(tmp_path: Path) -> None:
    _open(tmp_path).record_submission(base_model_sha256=PIN, flower_run_id=111)
    _open(tmp_path).record_submission(base_model_sha256=PIN, flower_run_id=222)  # resumed: a second submission
    manifest = read_manifest(tmp_path)
    assert manifest.base_model_sha256 == PIN
    assert manifest.flower_run_ids == (111, 222)


def test_run_directory_refuses_to_resume_on_another_base_model(tmp_path: Path) -> None:
    _open(tmp_path).record_submission(base_model_sha256=PIN, flower_run_id=1)
    with pytest.raises(ConfigError, match="trained on base model sha256 abab"):
        _open(tmp_path).record_submission(base_model_sha256=OTHER, flower_run_id=2)
    assert read_manifest(tmp_path).base_model_sha256 == PIN


def test_run_directory_keeps_a_failed_rounds_rejections(tmp_path: Path) -> None:
    run = _open(tmp_path)
    run.record_failed_round(
        1, [Rejection(node_id=5, reason="bad seal", site_id="s-a"), Rejection(node_id=6, reason="no reply")]
    )
    run.finish("failed", "round 1: 0 usable update(s)")
    failed = read_manifest(tmp_path).failed_round
    assert failed is not None and failed.round == 1
    assert [(r.node_id, r.reason) for r in failed.rejected] == [(5, "bad seal"), (6, "no reply")]
