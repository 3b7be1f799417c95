"""The round loop with secure aggregation, over a fake Grid whose sites run the real site-side SecAgg
code (client/secagg.py via client/site.handle_secagg): the aggregate equals FedAvg within the
quantisation error, dropped sites are cancelled out, and failures fail closed."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, MessageType, MetricRecord, RecordDict

from client.secagg import accept_shares, mask_update
from client.site import handle_secagg, seal_fields
from common.adapter import arrays_to_state, hash_state, numpy_to_state, state_to_numpy
from common.config import FederationConfig, SecAggSection, SecuritySection
from common.errors import ConfigError, FederationFailed
from common.keys import generate_signing_key
from common.run_request import HANDSHAKE_MESSAGE_TYPE
from server.checkpoint import RunDirectory
from server.federation import run_federation
from server.strategy import weighted_average
from tests.server.test_federation_security import (  # noqa: F401 (_task_identity is a fixture)
    _config,
    _handshake_reply,
    _manifest,
    _task_identity,
)
from tests.server.test_verify import declaration as site_declaration

CLIP, RANGE = 1.0, 1 << 22
STEP = 2 * CLIP / RANGE  # one quantisation step: the largest rounding error of one coordinate


class SecAggGrid:
    """Sites with their own `context.state`; SecAgg stages go to the real site handler, train messages
    get a delta of norm 0.05 * node, masked by the real `mask_update` and sealed by `seal_fields`.

    `behaviours[site] in {"ok", "drop-after-keys", "tampered", "silent-unmask"}`."""

    def __init__(self, behaviours: dict[str, str]) -> None:
        self.sites = {n: (sid, how, generate_signing_key()) for n, (sid, how) in enumerate(behaviours.items(), 1)}
        self.contexts = {
            n: Context(run_id=1, node_id=n, node_config={}, state=RecordDict(), run_config={}) for n in self.sites
        }
        self.plain: dict[int, dict[int, dict[str, np.ndarray]]] = {}  # round -> node -> adapter trained
        self.seen_train: list[RecordDict] = []
        self.run = SimpleNamespace(fab_hash="f" * 64)  # the app bundle the run request names

    def get_node_ids(self) -> list[int]:
        return list(self.sites)

    def send_and_receive(self, messages, timeout):
        replies = [self._reply(m) for m in messages]
        return [r for r in replies if r is not None]

    def _reply(self, msg):
        node = msg.metadata.dst_node_id
        site_id, how, key = self.sites[node]
        context = self.contexts[node]
        kind = msg.metadata.message_type
        if kind == HANDSHAKE_MESSAGE_TYPE:
            return _handshake_reply(msg, site_id, key, node)
        if kind.startswith(MessageType.QUERY):
            if how == "silent-unmask" and msg.content["secagg"]["stage"] == "unmask":
                return None
            return handle_secagg(msg, context)
        if kind == MessageType.EVALUATE:
            metrics = MetricRecord({"eval_loss": 1.0, "num-examples": 5})
            return SimpleNamespace(
                content=RecordDict({"metrics": metrics}),
                metadata=SimpleNamespace(src_node_id=node),
                has_error=lambda: False,
            )
        self.seen_train.append(msg.content)
        if how == "drop-after-keys":
            return None
        config = msg.content["config"]
        rnd = int(config["server-round"])
        global_arrays = state_to_numpy(arrays_to_state(msg.content["arrays"]))
        rng = np.random.default_rng(100 * rnd + node)
        delta = {k: rng.normal(size=v.shape) for k, v in global_arrays.items()}
        norm = np.sqrt(sum(float((d**2).sum()) for d in delta.values()))
        trained = {k: (v + delta[k] * 0.05 * node / norm).astype(v.dtype) for k, v in global_arrays.items()}
        self.plain.setdefault(rnd, {})[node] = trained
        weight = 10 * node
        accept_shares(context.state, msg.content["secagg"])
        masked, declaration = mask_update(context.state, update=trained, global_arrays=global_arrays, weight=weight)
        metrics = {"num-examples": weight, "train_loss": 1.0 / node}
        declared = site_declaration(site_id, hash_state(numpy_to_state(trained)), dataset_size=weight)
        declarations = ConfigRecord(declared.to_record() | {"secagg": json.dumps(declaration)})
        declarations.update(
            seal_fields(
                key,
                run_id=str(config["run-id"]),
                round=rnd,
                site_id=site_id,
                update_sha256=hash_state(numpy_to_state(masked)),
                global_sha256=hash_state(numpy_to_state(global_arrays)),
                metrics=metrics,
                declarations=declarations,
            )
        )
        if how == "tampered":
            first = next(iter(masked))
            masked[first] = masked[first].copy()
            masked[first].flat[0] ^= 1
        content = RecordDict(
            {"arrays": ArrayRecord(numpy_to_state(masked)), "metrics": MetricRecord(metrics), "site": declarations}
        )
        return SimpleNamespace(content=content, metadata=SimpleNamespace(src_node_id=node), has_error=lambda: False)


def _secagg_config(base_model_dir: Path, *, min_sites: int = 2, **secagg) -> FederationConfig:
    return _config(
        base_model_dir,
        min_sites=min_sites,
        secagg=SecAggSection(enabled=True, clip=CLIP, quantization_range=RANGE, **secagg),
    )


def _fedavg(grid: SecAggGrid, rnd: int, nodes: list[int]) -> dict[str, np.ndarray]:
    plain = [grid.plain[rnd][n] for n in nodes]
    return weighted_average(plain, [10 * n for n in nodes])


def _global(run_dir: Path, rnd: int) -> dict[str, np.ndarray]:
    arrays, _ = RunDirectory(run_dir, _manifest(run_dir)).load_round(rnd)
    return arrays


def test_secagg_aggregate_equals_fedavg_within_quantisation_error(tmp_path, base_model_dir):
    grid = SecAggGrid({"a": "ok", "b": "ok", "c": "ok"})

    run_federation(grid, _secagg_config(base_model_dir), str(tmp_path / "run"))

    for rnd in (1, 2):
        got, expected = _global(tmp_path / "run", rnd), _fedavg(grid, rnd, [1, 2, 3])
        error = max(float(np.abs(got[k].astype(np.float64) - expected[k].astype(np.float64)).max()) for k in got)
        # Rounding of each coordinate, plus float32 storage of the result.
        assert error <= STEP + 1e-6, error
    entry = _manifest(tmp_path / "run")["rounds"][1]
    assert entry["secagg"]["sites"] == [1, 2, 3] and entry["secagg"]["dropped"] == []
    assert entry["secagg"]["clip"] == CLIP and entry["secagg"]["quantization"]["range"] == RANGE
    assert entry["security"]["secagg"] is True and entry["security"]["max_update_norm"] is None
    assert all(s.get("update_norm") is None and s["secagg"]["masked"] and s["masked_sha256"] for s in entry["sites"])


def test_secagg_coordinator_never_receives_a_plain_update(tmp_path, base_model_dir):
    grid = SecAggGrid({"a": "ok", "b": "ok", "c": "ok"})
    seen: list = []
    original = grid.send_and_receive

    def spy(messages, timeout):
        replies = original(messages, timeout)
        seen.extend(r for r in replies if "arrays" in r.content)
        return replies

    grid.send_and_receive = spy
    run_federation(grid, _secagg_config(base_model_dir), str(tmp_path / "run"))

    sent = [r for r in seen if "site" in r.content]
    assert len(sent) == 6
    for reply in sent:
        arrays = {k: v.numpy() for k, v in reply.content["arrays"].items()}
        assert all(a.dtype == np.int64 for a in arrays.values())
        plain = hash_state(numpy_to_state(arrays))
        assert plain not in {hash_state(numpy_to_state(p)) for r in grid.plain.values() for p in r.values()}


def test_secagg_site_dropping_after_key_sharing_gives_the_fedavg_of_the_rest(tmp_path, base_model_dir):
    grid = SecAggGrid({"a": "ok", "b": "drop-after-keys", "c": "ok", "d": "ok"})

    run_federation(grid, _secagg_config(base_model_dir), str(tmp_path / "run"))

    # Node 2 took part in key sharing (its shares were relayed to the others) and then sent nothing.
    assert any(len(c["secagg"]["srcs"]) == 3 and 2 in c["secagg"]["srcs"] for c in grid.seen_train)
    for rnd in (1, 2):
        got, expected = _global(tmp_path / "run", rnd), _fedavg(grid, rnd, [1, 3, 4])
        error = max(float(np.abs(got[k].astype(np.float64) - expected[k].astype(np.float64)).max()) for k in got)
        assert error <= STEP + 1e-6, error
    entry = _manifest(tmp_path / "run")["rounds"][1]
    assert entry["secagg"]["sites"] == [1, 3, 4]
    assert [d["node_id"] for d in entry["secagg"]["dropped"]] == [2]


def test_secagg_tampered_masked_vector_is_rejected_and_cancelled_like_a_drop(tmp_path, base_model_dir):
    grid = SecAggGrid({"a": "ok", "b": "ok", "c": "tampered", "d": "ok"})

    run_federation(grid, _secagg_config(base_model_dir), str(tmp_path / "run"))

    entry = _manifest(tmp_path / "run")["rounds"][1]
    assert [r["node_id"] for r in entry["rejected"]] == [3]
    assert "adapter differs" in entry["rejected"][0]["reason"]
    got, expected = _global(tmp_path / "run", 1), _fedavg(grid, 1, [1, 2, 4])
    assert max(float(np.abs(got[k] - expected[k]).max()) for k in got) <= STEP + 1e-6


def test_secagg_survivor_silent_at_unmask_is_covered_by_the_threshold(tmp_path, base_model_dir):
    grid = SecAggGrid({"a": "ok", "b": "ok", "c": "ok", "d": "silent-unmask"})

    run_federation(grid, _secagg_config(base_model_dir), str(tmp_path / "run"))

    got, expected = _global(tmp_path / "run", 1), _fedavg(grid, 1, [1, 2, 3, 4])
    assert max(float(np.abs(got[k] - expected[k]).max()) for k in got) <= STEP + 1e-6


def test_secagg_fails_closed_below_the_threshold(tmp_path, base_model_dir):
    # 4 sites, threshold 3 (reconstruction_threshold 0.6): two dropping leaves 2, too few to unmask.
    grid = SecAggGrid({"a": "ok", "b": "drop-after-keys", "c": "drop-after-keys", "d": "ok"})

    with pytest.raises(FederationFailed, match="need 3"):
        run_federation(grid, _secagg_config(base_model_dir), str(tmp_path / "run"))

    manifest = _manifest(tmp_path / "run")
    assert manifest["status"] == "failed" and manifest["completed_rounds"] == 0


def test_secagg_config_refuses_robust_aggregators_and_central_dp(base_model_dir):
    with pytest.raises(ConfigError, match="aggregator"):
        _config(
            base_model_dir,
            min_sites=2,
            security=SecuritySection(aggregator="median"),
            secagg=SecAggSection(enabled=True),
        )
    with pytest.raises(ConfigError, match="modulus"):
        SecAggSection(modulus=3)
    with pytest.raises(ConfigError, match="reconstruction_threshold"):
        SecAggSection(reconstruction_threshold=0.5)


def test_secagg_off_keeps_the_config_hash_of_existing_runs(base_model_dir):
    off = _config(base_model_dir, min_sites=2)
    # The hash as it was computed before `[secagg]` existed: the same body without the section.
    plain = dataclasses.asdict(off)
    for name in ("root", "secagg", "security", "central_dp"):
        plain.pop(name)
    plain["federation"].pop("round_timeout_s")
    before = hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()
    on = _config(base_model_dir, min_sites=2, secagg=SecAggSection(enabled=True))
    assert off.config_hash() == before != on.config_hash()
