"""The coordinator's gate: registry, seals (as the site makes them), validation, each with its reason."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from flwr.app import MetricRecord
from hypothesis import given
from hypothesis import strategies as st

from common.adapter import hash_state, numpy_to_state
from common.config import SecuritySection
from common.errors import ConfigError, UpdateRejected
from common.keys import generate_signing_key, save_public_key
from server.gate import RoundGate, collect_updates
from server.verify import (
    IDENTITY_PINNED,
    IDENTITY_REGISTRY,
    NORM_BOUND_MULTIPLE,
    UpdateVerifier,
    check_payload_size,
    load_registry,
    registry_entry,
    relative_norm_bounds,
    update_norm,
    validate_update,
    write_registry,
)
from tests.fixtures.site_replies import GLOBAL, KEYS, site_arrays, train_reply, wire


@pytest.fixture
def registry(tmp_path):
    pubs = {}
    for site_id, key in KEYS.items():
        pubs[site_id] = save_public_key(key, tmp_path / f"{site_id}.pub")
    return load_registry(write_registry(tmp_path / "registry.json", pubs))


def _gate(registry=None, rnd: int = 1, **security) -> RoundGate:
    return RoundGate(
        UpdateVerifier(registry=registry, require_signatures=security.pop("require_signatures", True)),
        SecuritySection(**security),
        "run-1",
        rnd,
        GLOBAL,
    )


def _reason(gate: RoundGate, reply) -> str:
    accepted, rejected = collect_updates([reply], gate)
    assert not accepted
    return rejected[0].reason


# ---- registry ------------------------------------------------------------------------------
def test_load_registry_reads_keys_and_hash(registry):
    assert set(registry.keys) == {"site-0", "site-1"}
    assert len(registry.sha256) == 64


def test_load_registry_rejects_a_wrong_fingerprint(tmp_path):
    entry = registry_entry(KEYS["site-0"]) | {"fingerprint": "0" * 64}
    (tmp_path / "r.json").write_text(json.dumps({"sites": {"site-0": entry}}))

    with pytest.raises(ConfigError, match="fingerprint .* does not match"):
        load_registry(tmp_path / "r.json")


def test_load_registry_rejects_a_shared_key(tmp_path):
    entry = registry_entry(KEYS["site-0"])
    (tmp_path / "r.json").write_text(json.dumps({"sites": {"a": entry, "b": entry}}))

    with pytest.raises(ConfigError, match="share one signing key"):
        load_registry(tmp_path / "r.json")


@pytest.mark.parametrize("body", ["[]", "{}", '{"sites": {"a": {}}}', "not json"])
def test_load_registry_rejects_malformed_files(tmp_path, body):
    (tmp_path / "r.json").write_text(body)

    with pytest.raises(ConfigError):
        load_registry(tmp_path / "r.json")


# ---- signatures ----------------------------------------------------------------------------
def test_gate_accepts_a_registered_signed_update(registry):
    gate = _gate(registry)
    accepted, rejected = collect_updates([train_reply("site-0"), train_reply("site-1", node=8)], gate)

    assert rejected == []
    assert [u.site_id for u in accepted] == ["site-0", "site-1"]
    assert accepted[0].entry.signing_key_fingerprint
    assert accepted[0].entry.update_norm == pytest.approx(update_norm(site_arrays(), GLOBAL))
    assert accepted[0].entry.update_sha256 == hash_state(numpy_to_state(wire(site_arrays())))
    assert gate.verifier.identity == IDENTITY_REGISTRY


def test_gate_rejects_a_site_not_in_the_registry(registry):
    assert "not in the coordinator's key registry" in _reason(
        _gate(registry), train_reply("site-9", key=generate_signing_key())
    )


def test_gate_rejects_a_registered_name_signed_with_another_key(registry):
    assert "bad signature" in _reason(_gate(registry), train_reply("site-0", key=KEYS["site-1"]))


def test_gate_rejects_an_unsigned_update(registry):
    assert "unsigned update" in _reason(_gate(registry), train_reply("site-0", signed=False))


def test_gate_rejects_a_replay_from_another_round(registry):
    assert "another round" in _reason(_gate(registry, rnd=2), train_reply("site-0", rnd=1))


def test_gate_rejects_a_replay_from_another_run(registry):
    assert "another run" in _reason(_gate(registry), train_reply("site-0", run_id="run-0"))


def test_gate_rejects_a_second_update_from_one_site_in_a_round(registry):
    _accepted, rejected = collect_updates([train_reply("site-0"), train_reply("site-0", node=9)], _gate(registry))

    assert [r.reason for r in rejected] == ["a second update from site 'site-0' in round 1"]


def test_gate_rejects_arrays_changed_after_signing(registry):
    assert "adapter differs" in _reason(_gate(registry), train_reply("site-0", sign_arrays=wire(site_arrays(0.25))))


def test_gate_without_registry_pins_the_first_key(registry):
    gate = _gate(None)
    accepted, _ = collect_updates([train_reply("site-0")], gate)
    assert accepted and gate.verifier.identity == IDENTITY_PINNED

    gate2 = RoundGate(gate.verifier, SecuritySection(), "run-1", 2, GLOBAL)
    reason = _reason(gate2, train_reply("site-0", rnd=2, key=generate_signing_key()))

    assert "pinned" in reason


def test_gate_may_accept_unsigned_updates_only_when_told():
    accepted, rejected = collect_updates([train_reply("site-0", signed=False)], _gate(None, require_signatures=False))

    assert rejected == [] and accepted[0].entry.signing_key_fingerprint is None


# ---- validation ----------------------------------------------------------------------------
def _bad(**change):
    arrays = {**site_arrays(), **change}
    return arrays


@pytest.mark.parametrize(
    ("arrays", "reason"),
    [
        (_bad(**{"a.lora_A.weight": np.full((2, 3), np.nan, np.float32)}), "NaN or Inf"),
        (_bad(**{"a.lora_A.weight": np.full((2, 3), np.inf, np.float32)}), "NaN or Inf"),
        (_bad(**{"a.lora_A.weight": np.zeros((3, 2), np.float32)}), "has shape"),
        (_bad(**{"a.lora_A.weight": np.zeros((2, 3), np.float64)}), "has dtype"),
        (_bad(**{"extra.weight": np.zeros(1, np.float32)}), "unexpected adapter keys"),
        ({"a.lora_A.weight": np.zeros((2, 3), np.float32)}, "unexpected adapter keys"),
    ],
)
def test_validate_update_rejects_with_reason(arrays, reason):
    with pytest.raises(UpdateRejected, match=reason):
        validate_update(arrays, GLOBAL)


def test_validate_update_norm_bound():
    # Every one of the 12 coordinates moved by 0.5: norm sqrt(12 * 0.25) = sqrt(3).
    assert validate_update(site_arrays(), GLOBAL) == pytest.approx(np.sqrt(3))
    validate_update(site_arrays(), GLOBAL, max_update_norm=1.74)
    with pytest.raises(UpdateRejected, match=r"update norm 1.732 exceeds `security.max_update_norm` 1.7"):
        validate_update(site_arrays(), GLOBAL, max_update_norm=1.7)


def test_check_payload_size_default_is_adapter_plus_allowance():
    adapter = sum(a.nbytes for a in GLOBAL.values())
    check_payload_size(adapter + (1 << 20), GLOBAL)
    with pytest.raises(UpdateRejected, match="oversized update"):
        check_payload_size(adapter + (1 << 20) + 1, GLOBAL)
    with pytest.raises(UpdateRejected, match="limit 100"):
        check_payload_size(101, GLOBAL, max_update_bytes=100)


def test_gate_records_validation_reasons(registry):
    assert "NaN or Inf" in _reason(
        _gate(registry), train_reply("site-0", arrays=_bad(**{"a.lora_B.weight": np.full((3, 2), np.nan, np.float32)}))
    )
    assert "exceeds" in _reason(_gate(registry, max_update_norm=0.1), train_reply("site-0"))
    assert "oversized" in _reason(_gate(registry, max_update_bytes=64), train_reply("site-0"))


def test_gate_passes_error_replies_through_with_their_reason(registry):
    error = SimpleNamespace(
        has_error=lambda: True,
        metadata=SimpleNamespace(src_node_id=3),
        error=SimpleNamespace(reason="BudgetExhausted: no budget", code=1005),
    )

    _accepted, rejected = collect_updates([error], _gate(registry))

    assert [r.to_dict() for r in rejected] == [{"node_id": 3, "reason": "BudgetExhausted: no budget"}]


# ---- hostile replies: each field at the gate ---------------------------------------------------------
@pytest.mark.parametrize(
    ("metrics", "reason"),
    [
        ({"num-examples": float("nan")}, "`num-examples` must be an integer, got nan"),
        ({"num-examples": 0}, "`num-examples` must be a positive integer, got 0"),
        ({"num-examples": 2.5}, "`num-examples` must be an integer, got 2.5"),
        ({"train_seconds": 1.0}, "`num-examples` is missing"),
        ({"num-examples": 10, "holdout-examples": -1}, "`holdout-examples` must be >= 0, got -1"),
        ({"num-examples": 10, "holdout-examples": float("inf")}, "`holdout-examples` must be an integer, got inf"),
    ],
)
def test_gate_rejects_a_signed_bad_example_count(registry, metrics, reason):
    assert _reason(_gate(registry), train_reply("site-0", metrics=metrics)) == reason


def test_gate_keeps_unknown_metrics_as_data_and_leaves_non_finite_ones_out(registry):
    metrics = {"num-examples": 10.0, "eval_noisy_accuracy": 0.7, "odd": float("nan")}
    accepted, rejected = collect_updates([train_reply("site-0", metrics=metrics)], _gate(registry))

    assert rejected == [] and accepted[0].num_examples == 10
    assert accepted[0].entry.metrics == {"num-examples": 10.0, "eval_noisy_accuracy": 0.7}


def test_gate_requires_a_declared_dataset_size_to_bound_the_weight(registry):
    reason = _reason(_gate(registry), train_reply("site-0", privacy={"dataset_size": None}))

    assert reason == "privacy declaration has no `dataset_size` to bound `num-examples`"


def test_gate_rejects_a_declared_hash_that_is_not_the_arrays(registry):
    reason = _reason(_gate(registry), train_reply("site-0", declared_sha256="ab" * 32))

    assert reason.startswith("declared update-sha256 abababababab is not the hash of the arrays received")


def test_gate_turns_records_of_the_wrong_kind_into_a_rejection(registry):
    reply = train_reply("site-0")
    reply.content["site"] = MetricRecord({"x": 1.0})

    assert _reason(_gate(registry), reply).startswith("malformed reply: needs exactly one 'site' config record")


def test_gate_rejects_a_reply_without_an_update(registry):
    reply = train_reply("site-0")
    for key in [k for k in reply.content["site"] if k.startswith("arrays.")]:
        del reply.content["site"][key]

    assert _reason(_gate(registry), reply) == "malformed reply: it carries no update"


def test_gate_rejects_arrays_sent_in_the_former_array_record_form(registry):
    """An older or hostile site sending the packed bytes as an ArrayRecord of two uint8 arrays: rejected
    before a tensor is built, not read."""
    import torch
    from flwr.app import ArrayRecord

    from common.packing import LAYOUT, PACKED

    reply = train_reply("site-0")
    site = reply.content["site"]
    layout, packed = site.pop(f"arrays.{LAYOUT}"), site.pop(f"arrays.{PACKED}")
    reply.content["arrays"] = ArrayRecord(
        {
            LAYOUT: torch.frombuffer(bytearray(layout), dtype=torch.uint8),
            PACKED: torch.frombuffer(bytearray(packed), dtype=torch.uint8),
        }
    )

    assert _reason(_gate(registry), reply).startswith("malformed reply: needs exactly one 'site' config record")


def test_gate_turns_an_unforeseen_failure_into_a_rejection(registry):
    reply = train_reply("site-0")
    reply.content = None  # anything a check trips over is a malformed reply, not the end of the round

    assert _reason(_gate(registry), reply) == "malformed reply: AttributeError"


# ---- the default norm bound ----------------------------------------------------------------------------
def test_relative_bound_leaves_each_update_out_of_its_own_reference():
    bounds = relative_norm_bounds({"a": 1.0, "b": 1.2, "x": 1e6}, multiple=10)

    assert bounds == {"a": 1e7, "b": 1e7, "x": 12.0}  # upper median of the other two


def test_relative_bound_with_two_sites_uses_last_rounds_norms_once_there_are_some():
    assert relative_norm_bounds({"a": 1.0, "x": 1e-9}, multiple=10)["a"] == pytest.approx(1e-8)
    bounds = relative_norm_bounds({"a": 1.0, "x": 1e-9}, previous=[0.9, 1.1], multiple=10)

    assert bounds["a"] == pytest.approx(9.0)  # a near-zero peer cannot set an honest site's bound alone


def test_relative_bound_needs_a_nonzero_reference():
    assert relative_norm_bounds({"a": 1.0}, multiple=10) == {"a": None}
    assert relative_norm_bounds({"a": 1.0, "b": 0.0}, multiple=10)["a"] is None


@given(
    st.lists(st.floats(0.01, 100), min_size=3, max_size=9),
    st.floats(NORM_BOUND_MULTIPLE * 100 + 1, 1e12),
)
def test_a_minority_scaled_update_never_passes_and_honest_ones_always_do(honest, scale):
    norms = {i: n for i, n in enumerate(honest)}
    norms["x"] = scale * max(honest)
    bounds = relative_norm_bounds(norms)

    assert norms["x"] > bounds["x"]
    spread_ok = max(honest) <= NORM_BOUND_MULTIPLE * min(honest)
    assert not spread_ok or all(norms[i] <= bounds[i] for i in range(len(honest)))
