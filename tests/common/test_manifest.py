"""The run manifest's one schema: round trip, the old layout still read, and one clear error per bad field."""

from __future__ import annotations

import json

import pytest

from common.declaration import PrivacyDeclaration, ScrubReport
from common.manifest import (
    LedgerRegression,
    Manifest,
    ManifestError,
    Rejection,
    RoundEntry,
    SiteEntry,
    parse_manifest,
    read_manifest,
)

SHA = "ab" * 32
PRIVACY = PrivacyDeclaration(
    dp_enabled=True,
    noise_multiplier=1.1,
    sample_rate=0.01,
    steps=100,
    max_grad_norm=1.0,
    delta=1e-5,
    accountant="rdp",
    conversion="balle2020",
    epsilon_round=0.9,
    epsilon_total=float("inf"),
    budget_epsilon=float("inf"),
    dataset_size=500,
    ledger_index=3,
)


def _manifest() -> Manifest:
    site = SiteEntry(
        node_id=7,
        site_id="hospital-a",
        num_examples=500,
        update_sha256=SHA,
        update_norm=0.5,
        scrub=ScrubReport(records_in=600, quarantined=1, entities={"PERSON": 4}),
        privacy=PRIVACY,
        metrics={"train_seconds": 1.5},
        warnings=("ledger went backwards",),
    )
    regression = LedgerRegression("hospital-a", 3, 9, "run-0", 2)
    train = RoundEntry(
        round=1,
        adapter_sha256=SHA,
        completed_at="now",
        kind="train",
        sites=(site,),
        rejected=(Rejection(node_id=8, reason="no reply within the round timeout"),),
        ledger_regressions=(regression,),
        records={"security": {"aggregator": "mean"}, "round_seconds": 2.0},
    )
    initial = RoundEntry(round=0, adapter_sha256=SHA, completed_at="then", kind="initial")
    return Manifest(
        run_id="run-1",
        created="then",
        status="completed",
        code_version="test",
        config_hash="c0" * 32,
        base_model="tiny",
        rounds_planned=1,
        completed_rounds=1,
        rounds=(initial, train),
    )


def test_manifest_round_trips_through_strict_json(tmp_path):
    text = json.dumps(_manifest().to_dict(), allow_nan=False)  # inf epsilon is the string "inf"
    (tmp_path / "manifest.json").write_text(text)

    back = read_manifest(tmp_path)

    assert back == _manifest()
    assert back.round(1).sites[0].privacy.epsilon_total == float("inf")
    assert back.ledger_regressions == [(1, LedgerRegression("hospital-a", 3, 9, "run-0", 2))]


def test_manifest_schema_1_site_metrics_beside_the_fields_are_read_as_metrics():
    raw = _manifest().to_dict() | {"schema": 1}
    site = raw["rounds"][1]["sites"][0]
    site.update(site.pop("metrics"))

    assert parse_manifest(json.dumps(raw)).round(1).sites[0].metrics == {"train_seconds": 1.5}


def _bad(change) -> str:
    raw = _manifest().to_dict()
    change(raw)
    with pytest.raises(ManifestError) as err:
        parse_manifest(json.dumps(raw), "run/manifest.json")
    return str(err.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.pop("run_id"), "`run_id` is missing"),
        (lambda m: m.update(schema=9), "`schema` is 9"),
        (lambda m: m.update(surprise=1), "unknown field(s) `surprise`"),
        (lambda m: m["rounds"][1].update(round="1"), "`round` must be an integer"),
        (lambda m: m["rounds"][1]["sites"][0].update(num_examples=1.5), "site 0: `num_examples` must be an integer"),
        (lambda m: m["rounds"][1]["sites"][0]["metrics"].update(x="y"), "metric `x` must be a number"),
        (lambda m: m["rounds"][1]["sites"][0]["privacy"].update(epsilon_round=-1), "`epsilon_round` must be >= 0"),
        (lambda m: m["rounds"][1]["sites"][0].update(train_loss=1.0), "unknown field(s) `train_loss`"),
        (lambda m: m["rounds"][1]["rejected"][0].pop("reason"), "rejected 0: `reason` is missing"),
        (lambda m: m["rounds"][1]["ledger_regressions"][0].pop("site_id"), "`site_id` is missing"),
    ],
)
def test_manifest_rejects_a_malformed_field_with_one_clear_error(change, message):
    assert message in _bad(change)


def test_read_manifest_names_a_missing_or_broken_file(tmp_path):
    with pytest.raises(ManifestError, match="no run manifest here"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(ManifestError, match="unreadable manifest, not JSON"):
        read_manifest(tmp_path / "manifest.json")
