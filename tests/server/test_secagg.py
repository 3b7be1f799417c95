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
from flwr.app import ConfigRecord, Context, MessageType, RecordDict

from client.replies import seal_fields
from client.secagg import accept_shares, mask_integers, mask_update
from client.site import handle_secagg
from common.adapter import arrays_to_state, hash_state, numpy_to_state, state_to_arrays, state_to_numpy
from common.config import FederationConfig, SecAggSection, SecuritySection
from common.errors import ConfigError, FederationFailed
from common.keys import generate_signing_key
from common.reply import reply_content, reply_parts
from common.run_request import HANDSHAKE_MESSAGE_TYPE
from server.checkpoint import RunDirectory
from server.federation import run_federation
from tests.fixtures.coordinator import federation_config, manifest_json
from tests.fixtures.push_pull import PushPull
from tests.fixtures.site_replies import handshake_reply, site_declaration

CLIP, RANGE = 1.0, 1 << 22
STEP = 2 * CLIP / RANGE  # one quantisation step: the largest rounding error of one coordinate


# The global adapter travels to the sites in fp16 (the default wire encoding): each site trains on, and
# sends its delta against, fp16(previous global), while the coordinator adds the weighted mean of the deltas
# to its own float32 previous global. That sum, computed here in float64, is what the round must store; the
# difference is the aggregation's own error (rounding each coordinate to the quantisation grid) plus float32
# storage of values below 1 (2^-24 of the value, well under FLOAT32_SLACK).
FLOAT32_SLACK = 1e-7


def _aggregation_error(run_dir: Path, rnd: int, grid: SecAggGrid, nodes: list[int]) -> float:
    got, prev = _global(run_dir, rnd), _global(run_dir, rnd - 1)
    weights = np.array([10.0 * n for n in nodes]) / sum(10.0 * n for n in nodes)

    def delta(n: int, k: str) -> np.ndarray:
        return grid.plain[rnd][n][k].astype(np.float64) - grid.received[rnd][n][k].astype(np.float64)

    expected = {
        k: p.astype(np.float64) + sum(w * delta(n, k) for w, n in zip(weights, nodes, strict=True))
        for k, p in prev.items()
    }
    return max(float(np.abs(got[k].astype(np.float64) - expected[k]).max()) for k in got)


class SecAggGrid(PushPull):
    """Sites with their own `context.state`; SecAgg stages go to the real site handler, train messages
    get a delta of norm 0.05 * node, masked by the real `mask_update` and sealed by `seal_fields`.

    `behaviours[site] in {"ok", "drop-after-keys", "tampered", "silent-unmask"}`."""

    def __init__(self, behaviours: dict[str, str]) -> None:
        self.sites = {n: (sid, how, generate_signing_key()) for n, (sid, how) in enumerate(behaviours.items(), 1)}
        self.contexts = {
            n: Context(run_id=1, node_id=n, node_config={}, state=RecordDict(), run_config={}) for n in self.sites
        }
        self.plain: dict[int, dict[int, dict[str, np.ndarray]]] = {}  # round -> node -> adapter trained
        self.received: dict[int, dict[int, dict[str, np.ndarray]]] = {}  # round -> node -> global as received
        self.seen_train: list[RecordDict] = []
        self.sent_updates: list[RecordDict] = []  # every train reply's content, as the coordinator receives it
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
            return handshake_reply(msg, site_id, key, node)
        if kind.startswith(MessageType.QUERY):
            if how == "silent-unmask" and msg.content["secagg"]["stage"] == "unmask":
                return None
            return handle_secagg(msg, context)
        if kind == MessageType.EVALUATE:
            return SimpleNamespace(
                content=reply_content(ConfigRecord(), metrics={"eval_loss": 1.0, "num-examples": 5}),
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
        self.received.setdefault(rnd, {})[node] = global_arrays
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
        content = reply_content(declarations, metrics=metrics, arrays=state_to_arrays(numpy_to_state(masked)))
        self.sent_updates.append(content)
        return SimpleNamespace(content=content, metadata=SimpleNamespace(src_node_id=node), has_error=lambda: False)


def _update(content: RecordDict) -> ConfigRecord:
    arrays = reply_parts(content).arrays
    assert arrays is not None
    return arrays


def _secagg_config(base_model_dir: Path, *, min_sites: int = 2, **secagg) -> FederationConfig:
    return federation_config(
        base_model_dir,
        min_sites=min_sites,
        secagg=SecAggSection(enabled=True, clip=CLIP, quantization_range=RANGE, **secagg),
    )


def _global(run_dir: Path, rnd: int) -> dict[str, np.ndarray]:
    arrays, _ = RunDirectory(run_dir, manifest_json(run_dir)).load_round(rnd)
    return arrays


def test_secagg_aggregate_equals_fedavg_within_quantisation_error(tmp_path, base_model_dir):
    grid = SecAggGrid({"a": "ok", "b": "ok", "c": "ok"})

    run_federation(grid, _secagg_config(base_model_dir), str(tmp_path / "run"))

    for rnd in (1, 2):
        error = _aggregation_error(tmp_path / "run", rnd, grid, [1, 2, 3])
        # Rounding of each coordinate, plus float32 storage of the result.
        assert error <= STEP + FLOAT32_SLACK, error
    entry = manifest_json(tmp_path / "run")["rounds"][1]
    assert entry["secagg"]["sites"] == [1, 2, 3] and entry["secagg"]["dropped"] == []
    assert entry["secagg"]["clip"] == CLIP and entry["secagg"]["quantization"]["range"] == RANGE
    assert entry["security"]["secagg"] is True and entry["security"]["max_update_norm"] is None
    assert all(s.get("update_norm") is None and s["secagg"]["masked"] and s["masked_sha256"] for s in entry["sites"])


def test_secagg_with_a_32_bit_modulus_sends_uint32_and_still_equals_fedavg(tmp_path, base_model_dir):
    grid = SecAggGrid({"a": "ok", "b": "ok", "c": "ok"})
    narrow = SecAggSection(enabled=True, clip=CLIP, quantization_range=1 << 16, modulus=1 << 32)
    run_federation(grid, federation_config(base_model_dir, min_sites=2, secagg=narrow), str(tmp_path / "run"))

    # 4 bytes a value on the wire where int64 takes 8 (the float32 adapter's own size).
    sent = [np.asarray(v.numpy()) for content in grid.sent_updates for v in arrays_to_state(_update(content)).values()]
    assert sent and all(a.dtype == np.uint32 for a in sent)
    for rnd in (1, 2):
        error = _aggregation_error(tmp_path / "run", rnd, grid, [1, 2, 3])
        assert error <= 2 * CLIP / (1 << 16) + FLOAT32_SLACK, error


def test_secagg_coordinator_never_receives_a_plain_update(tmp_path, base_model_dir):
    grid = SecAggGrid({"a": "ok", "b": "ok", "c": "ok"})
    run_federation(grid, _secagg_config(base_model_dir), str(tmp_path / "run"))

    assert len(grid.sent_updates) == 6
    for content in grid.sent_updates:
        arrays = {k: v.numpy() for k, v in arrays_to_state(_update(content)).items()}
        assert all(a.dtype == np.uint64 for a in arrays.values())  # the default modulus, 2^62
        plain = hash_state(numpy_to_state(arrays))
        assert plain not in {hash_state(numpy_to_state(p)) for r in grid.plain.values() for p in r.values()}


def test_secagg_site_dropping_after_key_sharing_gives_the_fedavg_of_the_rest(tmp_path, base_model_dir):
    grid = SecAggGrid({"a": "ok", "b": "drop-after-keys", "c": "ok", "d": "ok"})

    run_federation(grid, _secagg_config(base_model_dir), str(tmp_path / "run"))

    # Node 2 took part in key sharing (its shares were relayed to the others) and then sent nothing.
    assert any(len(c["secagg"]["srcs"]) == 3 and 2 in c["secagg"]["srcs"] for c in grid.seen_train)
    for rnd in (1, 2):
        error = _aggregation_error(tmp_path / "run", rnd, grid, [1, 3, 4])
        assert error <= STEP + FLOAT32_SLACK, error
    entry = manifest_json(tmp_path / "run")["rounds"][1]
    assert entry["secagg"]["sites"] == [1, 3, 4]
    assert [d["node_id"] for d in entry["secagg"]["dropped"]] == [2]


def test_secagg_tampered_masked_vector_is_rejected_and_cancelled_like_a_drop(tmp_path, base_model_dir):
    grid = SecAggGrid({"a": "ok", "b": "ok", "c": "tampered", "d": "ok"})

    run_federation(grid, _secagg_config(base_model_dir), str(tmp_path / "run"))

    entry = manifest_json(tmp_path / "run")["rounds"][1]
    assert [r["node_id"] for r in entry["rejected"]] == [3]
    assert "adapter differs" in entry["rejected"][0]["reason"]
    assert _aggregation_error(tmp_path / "run", 1, grid, [1, 2, 4]) <= STEP + FLOAT32_SLACK


def test_secagg_survivor_silent_at_unmask_is_covered_by_the_threshold(tmp_path, base_model_dir):
    grid = SecAggGrid({"a": "ok", "b": "ok", "c": "ok", "d": "silent-unmask"})

    run_federation(grid, _secagg_config(base_model_dir), str(tmp_path / "run"))

    assert _aggregation_error(tmp_path / "run", 1, grid, [1, 2, 3, 4]) <= STEP + FLOAT32_SLACK


def test_secagg_fails_closed_below_the_threshold(tmp_path, base_model_dir):
    # 4 sites, threshold 3 (reconstruction_threshold 0.6): two dropping leaves 2, too few to unmask.
    grid = SecAggGrid({"a": "ok", "b": "drop-after-keys", "c": "drop-after-keys", "d": "ok"})

    with pytest.raises(FederationFailed, match="need 3"):
        run_federation(grid, _secagg_config(base_model_dir), str(tmp_path / "run"))

    manifest = manifest_json(tmp_path / "run")
    assert manifest["status"] == "failed" and manifest["completed_rounds"] == 0


def test_secagg_config_refuses_robust_aggregators_and_central_dp(base_model_dir):
    with pytest.raises(ConfigError, match="aggregator"):
        federation_config(
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
    off = federation_config(base_model_dir, min_sites=2)
    # The hash as it was computed before `[secagg]` existed: the same body without the section.
    plain = dataclasses.asdict(off)
    for name in ("root", "secagg", "security", "central_dp"):
        plain.pop(name)
    plain["federation"].pop("round_timeout_s")
    before = hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()
    on = federation_config(base_model_dir, min_sites=2, secagg=SecAggSection(enabled=True))
    assert off.config_hash() == before != on.config_hash()


# ---- distributed noise: integer vectors, averaged unweighted, never unmasked below t -------------


class QueryGrid:
    """Only the SecAgg key stages, each to the real site handler with its own `context.state`."""

    def __init__(self, nodes: list[int]) -> None:
        self.contexts = {
            n: Context(run_id=1, node_id=n, node_config={}, state=RecordDict(), run_config={}) for n in nodes
        }
        self.asked: list[str] = []

    def send_and_receive(self, messages, timeout):
        replies = []
        for msg in messages:
            self.asked.append(msg.content["secagg"]["stage"])
            replies.append(handle_secagg(msg, self.contexts[msg.metadata.dst_node_id]))
        return replies


def _distributed_round(nodes: list[int], t: int):
    from server.secagg import SecAggRound

    grid = QueryGrid(nodes)
    rnd = SecAggRound(cfg=SecAggSection(enabled=True, clip=CLIP, quantization_range=RANGE), run_id="run-d", round=1)
    rnd.exchange_keys(grid, nodes, min_sites=2, timeout=5.0)
    vectors, masked = {}, {}
    shape = {"w": np.zeros((3, 2), np.float32)}
    for n in nodes:
        accept_shares(grid.contexts[n].state, rnd.train_record(n))
        vectors[n] = {"w": (np.arange(6, dtype=np.int64).reshape(3, 2) - 2) * 1000 * n}
        masked[n], declared = mask_integers(grid.contexts[n].state, integers=vectors[n], min_honest=t)
        rnd.validate_masked(n, masked[n], shape, {"secagg": json.dumps(declared)}, num_examples=10 * n)
    return grid, rnd, vectors, masked


def test_distributed_sum_is_the_unweighted_mean_of_the_sites_integer_steps():
    grid, rnd, vectors, masked = _distributed_round([1, 2, 3], t=3)
    mean, record = rnd.unmask(grid, masked, {n: 10 * n for n in masked}, min_sites=2, timeout=5.0)
    step = 2 * CLIP / RANGE  # the value of one integer
    expected = sum(v["w"] for v in vectors.values()) * step / 3
    assert np.allclose(mean["w"], expected, rtol=0, atol=1e-12)
    assert record["noise"] == "distributed" and record["min_honest"] == 3 and record["total_weight"] == 3


def test_distributed_round_with_fewer_survivors_than_t_asks_for_no_shares():
    grid, rnd, _, masked = _distributed_round([1, 2, 3], t=3)
    del masked[3]  # site 3's vector never arrived
    with pytest.raises(FederationFailed, match="need 3"):
        rnd.unmask(grid, masked, {1: 10, 2: 20}, min_sites=2, timeout=5.0)
    assert "unmask" not in grid.asked


def test_a_round_never_mixes_local_and_distributed_noise():
    from common.errors import UpdateRejected

    grid, rnd, _, masked = _distributed_round([1, 2, 3], t=2)
    local = json.dumps(
        {"clip": CLIP, "quantization_range": RANGE, "modulus": 1 << 62, "weight": 30, "masked_with": [1, 2]}
    )
    with pytest.raises(UpdateRejected, match="noise 'local' differs"):
        rnd.validate_masked(3, masked[3], {"w": np.zeros((3, 2), np.float32)}, {"secagg": local}, num_examples=30)
