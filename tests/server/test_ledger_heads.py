"""The coordinator's record of each site's privacy-ledger head, across runs."""

from __future__ import annotations

import json

import pytest

from common.errors import ConfigError
from common.manifest import LedgerRegression
from server.ledger_heads import LEDGER_HEADS, LedgerHeads


def test_ledger_heads_live_beside_the_run_directories_and_survive_a_restart(tmp_path):
    heads = LedgerHeads.beside(tmp_path / "runs" / "2026-11")
    assert heads.path == (tmp_path / "runs" / LEDGER_HEADS).resolve()
    assert heads.observe("a", 4, run_id="r1", round=1) is None
    heads.save()

    again = LedgerHeads.beside(tmp_path / "runs" / "2026-12")

    assert again.observe("a", 3, run_id="r2", round=1) == LedgerRegression("a", 3, 4, "r1", 1)


@pytest.mark.parametrize(("index", "flagged"), [(5, False), (4, True), (0, True)])
def test_an_index_not_above_the_head_is_a_regression(tmp_path, index, flagged):
    heads = LedgerHeads(tmp_path / LEDGER_HEADS)
    heads.observe("a", 4, run_id="r1", round=2)

    assert (heads.observe("a", index, run_id="r1", round=3) is not None) is flagged


def test_a_site_without_a_ledger_index_is_neither_recorded_nor_flagged(tmp_path):
    heads = LedgerHeads(tmp_path / LEDGER_HEADS)

    assert heads.observe("old-site", None, run_id="r", round=1) is None
    assert heads.heads == {}


def test_the_same_round_seen_again_is_not_a_regression_and_a_reset_is_reported_once(tmp_path):
    heads = LedgerHeads(tmp_path / LEDGER_HEADS)
    heads.observe("a", 9, run_id="r1", round=1)
    assert heads.observe("a", 9, run_id="r1", round=1) is None

    assert heads.observe("a", 1, run_id="r2", round=1) is not None
    assert heads.observe("a", 2, run_id="r2", round=2) is None


def test_a_broken_heads_file_is_one_clear_error(tmp_path):
    (tmp_path / LEDGER_HEADS).write_text("{")
    with pytest.raises(ConfigError, match="unreadable ledger-head record"):
        LedgerHeads.load(tmp_path / LEDGER_HEADS)
    (tmp_path / LEDGER_HEADS).write_text(json.dumps({"sites": {"a": {"ledger_index": "x", "run_id": "r", "round": 1}}}))
    with pytest.raises(ConfigError, match="`ledger_index` must be an integer"):
        LedgerHeads.load(tmp_path / LEDGER_HEADS)
