"""The round loop with the gate and central DP wired in, over a fake Grid of sealed site replies."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from flwr.app import MessageType, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from common.accounting import compute_epsilon
from common.adapter import arrays_to_state, state_to_numpy
from common.config import (
    CentralDPSection,
    FederationConfig,
    FederationSection,
    LoraSettings,
    ModelConfig,
    SecuritySection,
    TaskConfig,
)
from common.errors import FederationFailed
from common.keys import generate_signing_key
from server.federation import run_federation
from tests.server.test_verify import _reply

LORA = LoraSettings(target_modules=("q_proj", "v_proj"))


@pytest.fixture(autouse=True)
def _task_identity() -> None:
    # Set by Flower in a real ServerApp process; building messages reads it.
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1


class FakeGrid:
    """Sites as functions: each train message gets the reply `behaviour(site_id)` makes."""

    def __init__(self, behaviours: dict[str, str]) -> None:
        self.sites = {
            node: (site_id, how, generate_signing_key()) for node, (site_id, how) in enumerate(behaviours.items(), 1)
        }

    def get_node_ids(self) -> list[int]:
        return list(self.sites)

    def send_and_receive(self, messages, timeout):
        return [self._reply(m) for m in messages]

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
        config = msg.content["config"]
        global_arrays = state_to_numpy(arrays_to_state(msg.content["arrays"]))
        arrays = {k: (v + 0.01 * node).astype(v.dtype) for k, v in global_arrays.items()}
        rnd = int(config["server-round"]) - (1 if how == "replay" else 0)
        reply = _reply(
            site_id,
            run_id=str(config["run-id"]),
            rnd=rnd,
            arrays=arrays,
            key=key,
            node=node,
            global_arrays=global_arrays,
        )
        if how == "tampered":
            sig = bytearray(reply.content["site"]["seal-signature"])
            sig[0] ^= 1
            reply.content["site"]["seal-signature"] = bytes(sig)
        return reply


def _config(base_model_dir: Path, *, min_sites: int, **sections) -> FederationConfig:
    return FederationConfig(
        federation=FederationSection(rounds=2, min_sites=min_sites, round_timeout_s=5),
        model=ModelConfig(base=str(base_model_dir)),
        lora=LORA,
        task=TaskConfig(),
        **sections,
    )


def _manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


def test_tampered_and_replayed_updates_are_rejected_and_the_round_goes_on(tmp_path, base_model_dir):
    grid = FakeGrid({"a": "ok", "b": "tampered", "c": "ok", "d": "replay"})

    run_federation(grid, _config(base_model_dir, min_sites=2), str(tmp_path / "run"))

    manifest = _manifest(tmp_path / "run")
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
        run_federation(grid, _config(base_model_dir, min_sites=2), str(tmp_path / "run"))

    manifest = _manifest(tmp_path / "run")
    assert manifest["status"] == "failed" and manifest["completed_rounds"] == 0


def test_central_dp_is_applied_and_recorded_per_round(tmp_path, base_model_dir):
    cfg = _config(
        base_model_dir, min_sites=2, central_dp=CentralDPSection(enabled=True, noise_multiplier=1.0, clip=0.5)
    )

    run_federation(FakeGrid({"a": "ok", "b": "ok", "c": "ok"}), cfg, str(tmp_path / "run"))

    rounds = _manifest(tmp_path / "run")["rounds"]
    records = [r["central_dp"] for r in rounds[1:]]
    assert [r["sites"] for r in records] == [3, 3]
    assert records[0]["noise_std"] == pytest.approx(1.0 * 0.5 / 3)
    assert records[1]["epsilon_total"] == pytest.approx(compute_epsilon([(1.0, 1.0, 2)], delta=1e-5))
    assert records[1]["epsilon_total"] > records[0]["epsilon_total"] == pytest.approx(records[0]["epsilon_round"])


def test_trimmed_mean_is_named_in_the_round_record(tmp_path, base_model_dir):
    cfg = _config(base_model_dir, min_sites=2, security=SecuritySection(aggregator="trimmed_mean", trim_fraction=0.25))

    run_federation(FakeGrid({"a": "ok", "b": "ok", "c": "ok", "d": "ok"}), cfg, str(tmp_path / "run"))

    entry = _manifest(tmp_path / "run")["rounds"][1]
    assert entry["security"]["aggregator"] == "trimmed_mean" and entry["security"]["trimmed_per_side"] == 1
    assert np.isfinite(entry["train"]["train_loss"])
