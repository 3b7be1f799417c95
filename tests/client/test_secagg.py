"""The site's side of secure aggregation: stages only in order, secrets revealed once and never both
for one site, the ledger before the mask; and the real site handlers through the coordinator's
round loop, one site dropping after key sharing."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from client import site as site_module
from client.handshake import handle_handshake
from client.secagg import STATE, accept_shares, mask_update, reveal_shares, setup, share_keys
from client.site import handle_evaluate, handle_secagg, handle_train
from common.adapter import arrays_to_state, hash_state, numpy_to_state
from common.config import PrivacyConfig, SecAggSection
from common.declaration import PrivacyDeclaration
from common.errors import BudgetExhausted
from common.reply import reply_parts
from common.run_request import HANDSHAKE_MESSAGE_TYPE
from common.secagg import SecAggFailed
from server.checkpoint import RunDirectory
from server.federation import run_federation
from silo.demo import DemoLayout, demo_site_config, write_site
from silo.synthetic import make_clinical_notes
from tests.fixtures.coordinator import federation_config, manifest_json
from tests.fixtures.push_pull import PushPull

RUN, RND = "run-test", 1
PARAMS = {"run-id": RUN, "round": RND, "threshold": 2, "clip": 1.0, "quantization-range": 1 << 22, "modulus": 1 << 62}
SHAPES = {"w": (3, 4)}


@pytest.fixture(autouse=True)
def _task_identity() -> None:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1


def _shared(nodes: list[int]) -> tuple[dict[int, RecordDict], dict[int, ConfigRecord]]:
    """Sites' states after setup and share-keys, and the mask-stage record the coordinator relays to each."""
    states = {n: RecordDict() for n in nodes}
    keys = {n: setup(states[n], ConfigRecord({"stage": "setup", **PARAMS}), node_id=n) for n in nodes}
    request = ConfigRecord(
        {
            "stage": "share-keys",
            "run-id": RUN,
            "round": RND,
            "nodes": nodes,
            "pk1": [keys[n]["pk1"] for n in nodes],
            "pk2": [keys[n]["pk2"] for n in nodes],
        }
    )
    sent = {n: share_keys(states[n], request) for n in nodes}
    relayed = {}
    for n in nodes:
        srcs = [s for s in nodes if s != n]
        ctxts = [sent[s]["ctxts"][list(sent[s]["dsts"]).index(n)] for s in srcs]
        relayed[n] = ConfigRecord({"stage": "mask", "run-id": RUN, "round": RND, "srcs": srcs, "ctxts": ctxts})
    return states, relayed


def _keyed(nodes: list[int]) -> dict[int, RecordDict]:
    states, relayed = _shared(nodes)
    for n in nodes:
        accept_shares(states[n], relayed[n])
    return states


def _masked(state: RecordDict) -> None:
    zero = {k: np.zeros(s, np.float32) for k, s in SHAPES.items()}
    mask_update(state, update={k: v + 0.1 for k, v in zero.items()}, global_arrays=zero, weight=5)


def _unmask(active: list[int], dead: list[int]) -> ConfigRecord:
    return ConfigRecord({"stage": "unmask", "run-id": RUN, "round": RND, "active": active, "dead": dead})


def test_reveal_refuses_a_site_named_both_survivor_and_dropped() -> None:
    states = _keyed([1, 2, 3])
    _masked(states[1])
    with pytest.raises(SecAggFailed, match="named twice"):
        reveal_shares(states[1], _unmask([1, 2], [2, 3]))


def test_reveal_refuses_before_the_site_sent_its_update_and_without_it_among_survivors() -> None:
    states = _keyed([1, 2, 3])
    with pytest.raises(SecAggFailed, match="has not sent"):
        reveal_shares(states[1], _unmask([1, 2], [3]))
    _masked(states[1])
    with pytest.raises(SecAggFailed, match="leaves out this site"):
        reveal_shares(states[1], _unmask([2, 3], [1]))


def test_reveal_happens_once_and_erases_the_secrets() -> None:
    states = _keyed([1, 2, 3])
    _masked(states[1])
    first = reveal_shares(states[1], _unmask([1, 2], [3]))
    assert list(first["kinds"]) == ["seed", "seed", "key"] and list(first["nodes"]) == [1, 2, 3]
    assert STATE not in states[1].config_records
    # A second request (e.g. claiming node 2 dropped after all) finds nothing to reveal.
    with pytest.raises(SecAggFailed, match="setup never ran"):
        reveal_shares(states[1], _unmask([1, 3], [2]))


def test_stages_out_of_order_or_for_another_round_are_refused() -> None:
    state = RecordDict()
    with pytest.raises(SecAggFailed, match="setup never ran"):
        share_keys(state, ConfigRecord({"stage": "share-keys", "run-id": RUN, "round": RND}))
    states = _keyed([1, 2])
    with pytest.raises(SecAggFailed, match="round 2"):
        reveal_shares(
            states[1], ConfigRecord({"stage": "unmask", "run-id": RUN, "round": 2, "active": [1], "dead": []})
        )
    _masked(states[1])
    with pytest.raises(SecAggFailed, match="cannot mask"):
        _masked(states[1])


def test_share_keys_refuses_a_key_list_without_the_sites_own_keys() -> None:
    state = RecordDict()
    setup(state, ConfigRecord({"stage": "setup", **PARAMS}), node_id=1)
    other = RecordDict()
    theirs = setup(other, ConfigRecord({"stage": "setup", **PARAMS}), node_id=2)
    forged = ConfigRecord(
        {
            "stage": "share-keys",
            "run-id": RUN,
            "round": RND,
            "nodes": [1, 2],
            "pk1": [theirs["pk1"], theirs["pk1"]],
            "pk2": [theirs["pk2"], theirs["pk2"]],
        }
    )
    with pytest.raises(SecAggFailed, match="own keys"):
        share_keys(state, forged)


# --- the real site handlers ---------------------------------------------------------------------------


def _real_site(root: Path, base_model_dir: Path, name: str, budget: float, **privacy: Any) -> Path:
    """Site `name` (40 clinical notes of its own) with DP-SGD at noise 1 and budget `budget`."""
    layout = DemoLayout(root / name)
    records = [{"text": r.text} for r in make_clinical_notes(40, seed=len(name) + ord(name[-1]))]
    config = demo_site_config(name, base_model=str(base_model_dir), rounds=1)
    config = dataclasses.replace(
        config,
        lora=dataclasses.replace(config.lora, target_modules=("q_proj", "v_proj")),
        privacy=PrivacyConfig(
            max_grad_norm=1.0, noise_multiplier=1.0, budget_epsilon=budget, budget_delta=1e-5, **privacy
        ),
    )
    return write_site(layout, name, records, base_model=str(base_model_dir), rounds=1, config=config)


class SiteGrid(PushPull):
    """Routes each message to the real handler of its site, each site with its own `context.state`."""

    def __init__(self, configs: dict[int, Path]) -> None:
        self.contexts = {
            n: Context(run_id=1, node_id=n, node_config={"site-config": str(c)}, state=RecordDict(), run_config={})
            for n, c in configs.items()
        }
        self.run = SimpleNamespace(fab_hash="f" * 64)  # the app bundle the run request names

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def send_and_receive(self, messages, timeout):
        out = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            kind = msg.metadata.message_type
            handler = handle_train if kind == MessageType.TRAIN else handle_evaluate
            handler = handle_secagg if kind.startswith(MessageType.QUERY) else handler
            handler = handle_handshake if kind == HANDSHAKE_MESSAGE_TYPE else handler
            out.append(handler(msg, self.contexts[node]))
        return out


def test_real_sites_secagg_round_equals_fedavg_of_their_updates_with_one_dropping(
    tmp_path: Path, base_model_dir: Path, monkeypatch, site_ledger
) -> None:
    # Site "c" has budget for nothing: it shares keys, then refuses to train (BudgetExhausted).
    configs = {1: _real_site(tmp_path, base_model_dir, "a", 10.0), 2: _real_site(tmp_path, base_model_dir, "b", 10.0)}
    configs[3] = _real_site(tmp_path, base_model_dir, "c", 0.5)
    trained: dict[int, tuple[dict[str, np.ndarray], dict[str, np.ndarray], int]] = {}
    real_mask = site_module.mask_update

    def recording_mask(state, *, update, global_arrays, weight):
        # Records what the real mask_update is given (the plain adapter), to compute FedAvg from it.
        trained[int(state.config_records[STATE]["node"])] = (update, global_arrays, weight)
        return real_mask(state, update=update, global_arrays=global_arrays, weight=weight)

    monkeypatch.setattr(site_module, "mask_update", recording_mask)
    cfg = federation_config(base_model_dir, min_sites=2, secagg=SecAggSection(enabled=True, clip=1.0))
    cfg = dataclasses.replace(cfg, federation=dataclasses.replace(cfg.federation, rounds=1))

    run_federation(SiteGrid(configs), cfg, str(tmp_path / "run"))

    manifest = manifest_json(tmp_path / "run")
    entry = manifest["rounds"][1]
    assert entry["secagg"]["sites"] == [1, 2]
    assert [d["node_id"] for d in entry["secagg"]["dropped"]] == [3]
    assert BudgetExhausted.__name__ in entry["rejected"][0]["reason"]
    # The ledger names the adapter trained; the seal covers the masked vector that was sent.
    for s in entry["sites"]:
        ledger = [e for e in site_ledger(configs[s["node_id"]]) if e.get("kind") == "round"]
        assert ledger[0]["update_sha256"] == s["update_sha256"]
    assert sorted(trained) == [1, 2]
    run = RunDirectory(tmp_path / "run", manifest)
    got, _ = run.load_round(1)
    clip_ok = all(
        np.sqrt(sum(float(((u[k] - g) ** 2).sum()) for k, g in run.load_round(0)[0].items())) <= 1.0
        for u, _, _ in trained.values()
    )
    assert clip_ok, "the test needs updates inside the clip to compare with plain FedAvg"
    # Each site sends its delta against the global as it received it (fp16 on the wire); the coordinator adds
    # their weighted mean to its own float32 global. Beyond that sum: one quantisation step, and float32
    # storage of values below 1 (under 1e-7).
    total = sum(w for _, _, w in trained.values())
    expected = {
        k: p.astype(np.float64)
        + sum((w / total) * (u[k].astype(np.float64) - g[k].astype(np.float64)) for u, g, w in trained.values())
        for k, p in run.load_round(0)[0].items()
    }
    error = max(float(np.abs(got[k].astype(np.float64) - expected[k]).max()) for k in got)
    assert error <= 2.0 / (1 << 22) + 1e-7, error


def _secagg_train_message(plain: Message, node: int, record: ConfigRecord) -> Message:
    content = RecordDict({"arrays": plain.content["arrays"], "config": plain.content["config"], "secagg": record})
    return Message(content, dst_node_id=node, message_type=MessageType.TRAIN)


def test_handle_train_with_secagg_records_the_adapter_then_sends_it_masked(
    tmp_path: Path, base_model_dir: Path, train_message, site_ledger
) -> None:
    cfg = _real_site(tmp_path, base_model_dir, "a", 10.0)
    context = Context(run_id=1, node_id=1, node_config={"site-config": str(cfg)}, state=RecordDict(), run_config={})
    states, relayed = _shared([1, 2])
    context.state.config_records[STATE] = states[1].config_records[STATE]

    reply = handle_train(_secagg_train_message(train_message(RND), 1, relayed[1]), context)

    assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
    sent = {k: v.numpy() for k, v in arrays_to_state(reply_parts(reply.content).arrays).items()}
    assert all(a.dtype == np.uint64 for a in sent.values())  # the narrowest type for the modulus 2^62
    site = reply.content["site"]
    declared = json.loads(site["secagg"])
    assert declared["masked_with"] == [2] and declared["weight"] == reply_parts(reply.content).metrics["num-examples"]
    ledger = [e for e in site_ledger(cfg) if e.get("kind") == "round"]
    # The ledger and the declaration name the adapter trained; what left the site is its masked form.
    assert ledger[0]["update_sha256"] == site["update-sha256"] != hash_state(numpy_to_state(sent))


def test_handle_train_with_too_few_shares_refuses_before_planning(
    tmp_path: Path, base_model_dir: Path, train_message, site_ledger
) -> None:
    cfg = _real_site(tmp_path, base_model_dir, "a", 10.0)
    context = Context(run_id=1, node_id=1, node_config={"site-config": str(cfg)}, state=RecordDict(), run_config={})
    states, _ = _shared([1, 2])
    context.state.config_records[STATE] = states[1].config_records[STATE]
    empty = ConfigRecord({"stage": "mask", "run-id": RUN, "round": RND, "srcs": [], "ctxts": []})

    reply = handle_train(_secagg_train_message(train_message(RND), 1, empty), context)

    assert reply.has_error() and "secure aggregation failed" in reply.error.reason
    assert [e for e in site_ledger(cfg) if e.get("kind") in ("reserve", "round")] == []


# ---- distributed noise ([privacy] noise = "distributed") -----------------------------------------


def _distributed_site(tmp_path: Path, base_model_dir: Path, *, t: int) -> Path:
    return _real_site(tmp_path, base_model_dir, "a", 50.0, noise="distributed", distributed_min_honest=t)


def _context(cfg: Path) -> Context:
    return Context(run_id=1, node_id=1, node_config={"site-config": str(cfg)}, state=RecordDict(), run_config={})


def test_distributed_round_records_both_figures_and_sends_only_a_masked_integer_vector(
    tmp_path: Path, base_model_dir: Path, train_message, site_ledger
) -> None:
    cfg = _distributed_site(tmp_path, base_model_dir, t=3)
    context = _context(cfg)
    states, relayed = _shared([1, 2, 3])
    context.state.config_records[STATE] = states[1].config_records[STATE]

    reply = handle_train(_secagg_train_message(train_message(RND), 1, relayed[1]), context)

    assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
    sent = {k: v.numpy() for k, v in arrays_to_state(reply_parts(reply.content).arrays).items()}
    assert all(a.dtype == np.uint64 for a in sent.values())
    declared = json.loads(reply.content["site"]["secagg"])
    assert declared["noise"] == "distributed" and declared["min_honest"] == 3 and declared["weight"] == 1
    entry = [e for e in site_ledger(cfg) if e.get("kind") == "round"][0]
    figures = entry["distributed"]
    assert entry["steps"] == 1 and figures["min_honest"] == 3 and figures["budget_figure"] == "sum"
    assert figures["epsilon_round_sum"] < figures["epsilon_round_own"]
    # Site 3 drops: two survivors pass the Shamir threshold (2) but not this site's t, so it reveals nothing.
    request = {"run-id": RUN, "round": RND, "stage": "unmask", "active": [1, 2], "dead": [3]}
    with pytest.raises(SecAggFailed, match="distributed_min_honest 3"):
        reveal_shares(context.state, request)


def test_distributed_site_sends_nothing_without_secure_aggregation(
    tmp_path: Path, base_model_dir: Path, train_message, site_ledger
) -> None:
    cfg = _distributed_site(tmp_path, base_model_dir, t=2)

    reply = handle_train(train_message(RND), _context(cfg))

    assert reply.has_error() and "secure aggregation failed" in reply.error.reason
    assert [e for e in site_ledger(cfg) if e.get("kind") in ("reserve", "round", "evaluation")] == []


def test_distributed_site_refuses_a_key_list_shorter_than_t_before_spending(
    tmp_path: Path, base_model_dir: Path, train_message, site_ledger
) -> None:
    # The coordinator runs the round with 2 sites; this site counts on 3 honest ones.
    cfg = _distributed_site(tmp_path, base_model_dir, t=3)
    context = _context(cfg)
    states, relayed = _shared([1, 2])
    context.state.config_records[STATE] = states[1].config_records[STATE]

    reply = handle_train(_secagg_train_message(train_message(RND), 1, relayed[1]), context)

    assert reply.has_error() and "secure aggregation failed" in reply.error.reason
    assert [e for e in site_ledger(cfg) if e.get("kind") in ("reserve", "round", "evaluation")] == []


def test_real_distributed_sites_federate_and_every_figure_recomputes(
    tmp_path: Path, base_model_dir: Path, site_ledger
) -> None:
    from server.audit_epsilon import declared_epsilon_problem, ledger_epsilon_problem

    distributed = {"noise": "distributed", "distributed_min_honest": 3}
    configs = {n: _real_site(tmp_path, base_model_dir, name, 50.0, **distributed) for n, name in enumerate("abc", 1)}
    fine = SecAggSection(enabled=True, clip=1.0, quantization_range=1 << 28)  # the grid the README advises
    cfg = federation_config(base_model_dir, min_sites=3, secagg=fine)
    cfg = dataclasses.replace(cfg, federation=dataclasses.replace(cfg.federation, rounds=2))

    run_federation(SiteGrid(configs), cfg, str(tmp_path / "run"))

    manifest = manifest_json(tmp_path / "run")
    for rnd in (1, 2):
        record = manifest["rounds"][rnd]["secagg"]
        assert record["noise"] == "distributed" and record["min_honest"] == 3 and record["sites"] == [1, 2, 3]
        for s in manifest["rounds"][rnd]["sites"]:
            assert declared_epsilon_problem(PrivacyDeclaration.from_dict(s["privacy"])) is None
    for path in configs.values():
        entries = site_ledger(path)
        rounds = [e for e in entries if e["kind"] == "round"]
        assert len(rounds) == 2 and all(e["distributed"]["min_honest"] == 3 for e in rounds)
        assert ledger_epsilon_problem(entries)[0] is None
    global_1, _ = RunDirectory(tmp_path / "run", manifest).load_round(1)
    global_0, _ = RunDirectory(tmp_path / "run", manifest).load_round(0)
    assert any(not np.array_equal(global_1[k], global_0[k]) for k in global_0)  # the noisy step moved it
