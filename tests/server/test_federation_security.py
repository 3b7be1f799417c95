"""The round loop with the gate and central DP wired in, over a fake Grid of sealed site replies."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from flwr.app import MessageType, MetricRecord, RecordDict

from common.accounting import compute_epsilon
from common.adapter import arrays_to_state, hash_state, numpy_to_state, state_to_numpy
from common.config import CentralDPSection, SecuritySection, WireEncoding
from common.errors import FederationFailed
from common.keys import generate_signing_key
from common.manifest import read_manifest
from common.run_request import HANDSHAKE_MESSAGE_TYPE
from common.transport import encode_global, encode_update, received_global
from server.checkpoint import RunDirectory
from server.federation import run_federation
from server.ledger_heads import LEDGER_HEADS
from tests.fixtures.coordinator import federation_config, manifest_json
from tests.fixtures.site_replies import handshake_reply, train_reply

# Hostile sites, each signing what it sends: how its reply differs from an honest one.
HOSTILE = {
    "nan-examples": {"metrics": {"num-examples": float("nan")}},
    "inf-examples": {"metrics": {"num-examples": float("inf")}},
    "negative-examples": {"metrics": {"num-examples": -99}},
    "too-many-examples": {"metrics": {"num-examples": 11}},  # declared dataset size 10
    "privacy-not-json": {"site_fields": {"privacy": "{not json"}},
    "scrub-not-json": {"site_fields": {"scrub-report": "[1, 2"}},
    "privacy-wrong-schema": {"site_fields": {"privacy": '{"epsilon_round": 0.5}'}},
    "wrong-hash": {"declared_sha256": "0" * 64},
}


class FakeGrid:
    """Sites as functions: each train message gets the reply `behaviour(site_id)` makes.

    Behaviours: "ok", "tampered", "replay", "silent" (never answers), "scaled" (an update 1e6 times an
    honest one), "stale-ledger" (declares ledger index 0 every round), each key of HOSTILE."""

    def __init__(self, behaviours: dict[str, str], *, ledger_base: dict[str, int] | None = None) -> None:
        self.sites = {
            node: (site_id, how, generate_signing_key()) for node, (site_id, how) in enumerate(behaviours.items(), 1)
        }
        self.ledger_base = ledger_base or {}  # a site's ledger index in round r is its base + r
        self.run = SimpleNamespace(fab_hash="f" * 64)  # the app bundle the run request names

    def get_node_ids(self) -> list[int]:
        return list(self.sites)

    def send_and_receive(self, messages, timeout):
        return [r for r in (self._reply(m) for m in messages) if r is not None]

    def _reply(self, msg):
        node = msg.metadata.dst_node_id
        site_id, how, key = self.sites[node]
        if msg.metadata.message_type == MessageType.EVALUATE:
            metrics = MetricRecord({"eval_loss": 1.0, "num-examples": 5})
            return SimpleNamespace(
                content=RecordDict({"metrics": metrics}),
                metadata=SimpleNamespace(src_node_id=node),
                has_error=lambda: False,
            )
        if how == "silent":
            return None
        if msg.metadata.message_type == HANDSHAKE_MESSAGE_TYPE:
            return handshake_reply(msg, site_id, key, node)
        config = msg.content["config"]
        # As a real site: train from the global adapter as it arrived, send the delta in the encoding asked for.
        arrived = arrays_to_state(msg.content["arrays"])
        global_arrays = state_to_numpy(arrived)  # the bytes received: the seal binds to their hash
        shift = 0.01 * node * (1e6 if how == "scaled" else 1.0)
        arrays = fake_site_wire(arrived, shift, str(config.get("wire-encoding", "fp32")))
        rnd = int(config["server-round"]) - (1 if how == "replay" else 0)
        index = 0 if how == "stale-ledger" else self.ledger_base.get(site_id, 0) + rnd
        reply = train_reply(
            site_id,
            run_id=str(config["run-id"]),
            rnd=rnd,
            arrays=arrays,
            key=key,
            node=node,
            global_arrays=global_arrays,
            **(HOSTILE.get(how, {}) | {"privacy": {"ledger_index": index}}),
        )
        if how == "tampered":
            sig = bytearray(reply.content["site"]["seal-signature"])
            sig[0] ^= 1
            reply.content["site"]["seal-signature"] = bytes(sig)
        return reply


def fake_site_wire(arrived, shift: float, encoding: str) -> dict:
    """What a site whose adapter is the global one plus `shift` everywhere sends (common/transport.py)."""
    received = received_global(arrived)
    trained = {k: v + shift for k, v in received.items()}
    return state_to_numpy(encode_update(trained, received, WireEncoding(encoding)))


def test_tampered_and_replayed_updates_are_rejected_and_the_round_goes_on(tmp_path, base_model_dir):
    grid = FakeGrid({"a": "ok", "b": "tampered", "c": "ok", "d": "replay"})

    run_federation(grid, federation_config(base_model_dir, min_sites=2), str(tmp_path / "run"))

    manifest = manifest_json(tmp_path / "run")
    assert manifest["status"] == "completed"
    for entry in manifest["rounds"][1:]:
        assert {s["site_id"] for s in entry["sites"]} == {"a", "c"}
        reasons = {r["site_id"]: r["reason"] for r in entry["rejected"]}
        assert reasons["b"].startswith("bad signature")
        assert reasons["d"].startswith("replayed from another round")
        assert entry["security"]["site_identity"] == "pinned-on-first-use"


def test_round_fails_cleanly_when_too_few_updates_verify(tmp_path, base_model_dir):
    grid = FakeGrid({"a": "ok", "b": "tampered"})

    with pytest.raises(FederationFailed, match="1 usable update.*bad signature"):
        run_federation(grid, federation_config(base_model_dir, min_sites=2), str(tmp_path / "run"))

    manifest = manifest_json(tmp_path / "run")
    assert manifest["status"] == "failed" and manifest["completed_rounds"] == 0


def test_central_dp_is_applied_and_recorded_per_round(tmp_path, base_model_dir):
    cfg = federation_config(
        base_model_dir, min_sites=2, central_dp=CentralDPSection(enabled=True, noise_multiplier=1.0, clip=0.5)
    )

    run_federation(FakeGrid({"a": "ok", "b": "ok", "c": "ok"}), cfg, str(tmp_path / "run"))

    rounds = manifest_json(tmp_path / "run")["rounds"]
    records = [r["central_dp"] for r in rounds[1:]]
    assert [r["sites"] for r in records] == [3, 3]
    assert records[0]["noise_std"] == pytest.approx(1.0 * 0.5 / 3)
    assert records[1]["epsilon_total"] == pytest.approx(compute_epsilon([(1.0, 1.0, 2)], delta=1e-5))
    assert records[1]["epsilon_total"] > records[0]["epsilon_total"] == pytest.approx(records[0]["epsilon_round"])


def test_trimmed_mean_is_named_in_the_round_record(tmp_path, base_model_dir):
    cfg = federation_config(
        base_model_dir, min_sites=2, security=SecuritySection(aggregator="trimmed_mean", trim_fraction=0.25)
    )

    run_federation(FakeGrid({"a": "ok", "b": "ok", "c": "ok", "d": "ok"}), cfg, str(tmp_path / "run"))

    entry = manifest_json(tmp_path / "run")["rounds"][1]
    assert entry["security"]["aggregator"] == "trimmed_mean" and entry["security"]["trimmed_per_side"] == 1
    assert np.isfinite(entry["train"]["train_seconds"])


# ---- hostile input at the gate: the round goes on -------------------------------------------------
def test_every_malformed_reply_is_rejected_with_its_reason_and_the_run_completes(tmp_path, base_model_dir):
    grid = FakeGrid({"a": "ok", "b": "ok", **{name: name for name in HOSTILE}})

    run_federation(grid, federation_config(base_model_dir, min_sites=2), str(tmp_path / "run"))

    manifest = read_manifest(tmp_path / "run")
    assert manifest.status == "completed" and manifest.completed_rounds == 2
    for entry in manifest.rounds[1:]:
        assert {s.site_id for s in entry.sites} == {"a", "b"}
        reasons = {r.site_id: r.reason for r in entry.rejected}
        assert reasons == {
            "nan-examples": "`num-examples` must be an integer, got nan",
            "inf-examples": "`num-examples` must be an integer, got inf",
            "negative-examples": "`num-examples` must be a positive integer, got -99",
            "too-many-examples": "`num-examples` 11 exceeds the site's declared dataset size 10",
            "privacy-not-json": "site declaration: `privacy` is not well-formed JSON",
            "scrub-not-json": "site declaration: `scrub-report` is not well-formed JSON",
            "privacy-wrong-schema": "privacy declaration: `dp_enabled` is missing",
            "wrong-hash": reasons["wrong-hash"],
        }
        assert reasons["wrong-hash"].startswith("declared update-sha256 000000000000 is not the hash of the arrays")


def test_manifest_records_the_hash_the_coordinator_computed(tmp_path, base_model_dir):
    grid = FakeGrid({"a": "ok", "b": "ok"})

    run_federation(grid, federation_config(base_model_dir, min_sites=2), str(tmp_path / "run"))

    run = RunDirectory(tmp_path / "run", manifest_json(tmp_path / "run"))
    fed = federation_config(base_model_dir, min_sites=2).federation
    for n in (1, 2):
        sent, _ = run.load_round(n - 1)
        arrived = numpy_to_state(encode_global(sent, fed.wire_encoding))
        for site in read_manifest(tmp_path / "run").round(n).sites:
            wire = fake_site_wire(arrived, 0.01 * site.node_id, str(fed.wire_encoding))
            assert site.update_sha256 == hash_state(numpy_to_state(wire))


def test_a_site_that_never_answers_is_listed_as_rejected(tmp_path, base_model_dir):
    grid = FakeGrid({"a": "ok", "b": "ok", "quiet": "silent"})

    run_federation(grid, federation_config(base_model_dir, min_sites=2), str(tmp_path / "run"))

    for entry in read_manifest(tmp_path / "run").rounds[1:]:
        assert [r.to_dict() for r in entry.rejected] == [{"node_id": 3, "reason": "no reply within the round timeout"}]


def test_default_norm_bound_rejects_a_scaled_update_even_beside_one_honest_site(tmp_path, base_model_dir):
    grid = FakeGrid({"a": "ok", "big": "scaled"})
    cfg = federation_config(base_model_dir, min_sites=1)
    assert cfg.security.max_update_norm == 0  # the default: the relative bound

    run_federation(grid, cfg, str(tmp_path / "run"))

    manifest = read_manifest(tmp_path / "run")
    run = RunDirectory(tmp_path / "run", manifest_json(tmp_path / "run"))
    for n in (1, 2):
        entry = manifest.round(n)
        assert [s.site_id for s in entry.sites] == ["a"]
        assert entry.rejected[0].site_id == "big"
        assert "exceeds 10 x the median norm of the round's other updates" in entry.rejected[0].reason
        before, _ = run.load_round(n - 1)
        after, _ = run.load_round(n)
        # site a's update alone (its delta of 0.01 crossed the wire in fp16: rounding within 2^-11 of it)
        assert all(np.allclose(after[k], before[k] + 0.01, rtol=0, atol=1e-5) for k in before)
        assert entry.records["security"]["norm_bound"].startswith("relative: 10 x")


def test_negative_examples_cannot_move_the_aggregate_under_a_fixed_bound(tmp_path, base_model_dir):
    # The reproduction: with max_update_norm 2.0, a signed num-examples of -99 next to an honest 100
    # once extrapolated the mean far past both sites. Now it is rejected and the honest update stands.
    grid = FakeGrid({"a": "ok", "neg": "negative-examples"})
    cfg = federation_config(base_model_dir, min_sites=1, security=SecuritySection(max_update_norm=2.0))

    run_federation(grid, cfg, str(tmp_path / "run"))

    run = RunDirectory(tmp_path / "run", manifest_json(tmp_path / "run"))
    before, _ = run.load_round(0)
    after, _ = run.load_round(1)
    assert all(np.allclose(after[k], before[k] + 0.01, rtol=0, atol=1e-5) for k in before)  # fp16 delta
    assert read_manifest(tmp_path / "run").round(1).rejected[0].reason.startswith("`num-examples` must be a positive")


# ---- ledger heads across runs -----------------------------------------------------------------------
def test_a_site_whose_ledger_went_backwards_is_flagged_in_the_manifest(tmp_path, base_model_dir, caplog):
    cfg = federation_config(base_model_dir, min_sites=2)
    run_federation(FakeGrid({"a": "ok", "b": "ok"}, ledger_base={"a": 10, "b": 10}), cfg, str(tmp_path / "run-1"))
    heads = json.loads((tmp_path / LEDGER_HEADS).read_text())["sites"]
    assert heads["a"]["ledger_index"] == 12 and heads["b"]["ledger_index"] == 12

    # Run 2: site a's ledger restarted (indices 1, 2 again); site b's kept growing.
    run_federation(FakeGrid({"a": "ok", "b": "ok"}, ledger_base={"a": 0, "b": 20}), cfg, str(tmp_path / "run-2"))

    manifest = read_manifest(tmp_path / "run-2")
    first = manifest.round(1)
    assert [g.to_dict() for g in first.ledger_regressions] == [
        {
            "site_id": "a",
            "ledger_index": 1,
            "previous_ledger_index": 12,
            "previous_run_id": read_manifest(tmp_path / "run-1").run_id,
            "previous_round": 2,
        }
    ]
    site_a = next(s for s in first.sites if s.site_id == "a")
    assert "ledger index 1 is not above 12" in site_a.warnings[0]
    assert not next(s for s in first.sites if s.site_id == "b").warnings
    assert manifest.round(2).ledger_regressions == ()  # the restarted ledger then grows: flagged once
    assert "its ledger was deleted or replaced" in caplog.text


def test_a_ledger_index_that_repeats_within_a_run_is_flagged(tmp_path, base_model_dir):
    run_federation(
        FakeGrid({"a": "ok", "b": "stale-ledger"}), federation_config(base_model_dir, min_sites=2), str(tmp_path / "r")
    )

    manifest = read_manifest(tmp_path / "r")
    assert manifest.round(1).ledger_regressions == ()
    assert [(n, g.site_id, g.ledger_index) for n, g in manifest.ledger_regressions] == [(2, "b", 0)]
