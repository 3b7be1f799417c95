"""The coordinator's round loop over Flower's Grid: send the global adapter, collect site updates,
verify and validate them (server/verify.py), aggregate (server/strategy.py, optionally with central
DP, server/central_dp.py), checkpoint, evaluate, and record everything in the run manifest.

An update is aggregated only when its seal verifies (signed by its site's key, for this run and
round, over exactly the adapter, metrics and declarations that arrived) and it passes validation;
every other reply is listed under the round's `rejected` with its reason.

With `[secagg] enabled`, each round runs the secure aggregation stages around the train message
(server/secagg.py): the sites send masked vectors, the gate checks their seals and form only, and
the coordinator learns just the weighted sum of the survivors' clipped updates.

Resuming is the same call on the same run directory: rounds already on disk are not re-run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, replace
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from common.adapter import adapter_state, numpy_to_state, state_to_arrays, state_to_numpy
from common.config import FederationConfig, WireEncoding
from common.errors import FederationFailed, UpdateRejected
from common.manifest import LedgerRegression, Rejection
from common.model import load_lora_model
from common.model_pin import model_fingerprint
from common.transport import encode_global, wire_bytes
from common.version import CODE_VERSION
from server.central_dp import CentralDP
from server.checkpoint import ADAPTER_CONFIG, RunDirectory
from server.exchange import PromptGrid
from server.gate import (
    NO_REPLY,
    NUM_EXAMPLES,
    RoundGate,
    apply_norm_bound,
    collect_updates,
    example_count,
    finite_metrics,
    previous_norms,
)
from server.handshake import agree_on_run
from server.ledger_heads import LedgerHeads
from server.secagg import SecAggRound
from server.strategy import Arrays, FedAvg, SiteUpdate, average_metrics, make_strategy, trimmed_per_side
from server.verify import IDENTITY_NONE, NORM_BOUND_MULTIPLE, UpdateVerifier, load_registry

# How often to look for connected SuperNodes while waiting for `min_sites` of them.
NODE_POLL_S = 1.0


def initial_adapter(cfg: FederationConfig) -> tuple[Arrays, dict[str, Any]]:
    """Round 0: a fresh LoRA adapter on the base model (seeded), and its PEFT config."""
    model = load_lora_model(cfg.model_source(), cfg.lora, cfg.task, seed=cfg.federation.seed)
    peft_cfg = model.peft_config["default"]
    peft_cfg.base_model_name_or_path = cfg.model.base
    return state_to_numpy(adapter_state(model)), peft_cfg.to_dict()


def wait_for_sites(grid: Grid, *, minimum: int, timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= minimum:
            return nodes
        if time.monotonic() > deadline:
            raise FederationFailed(
                f"only {len(nodes)} site(s) connected after {timeout_s:.0f}s; `min_sites` is {minimum}"
            )
        time.sleep(NODE_POLL_S)


def global_record(arrays: Arrays, encoding: WireEncoding) -> ArrayRecord:
    """The global adapter as it goes down to the sites (common/transport.py)."""
    return state_to_arrays(numpy_to_state(encode_global(arrays, encoding)))


def _messages(
    nodes: Iterable[int],
    arrays: Arrays,
    config: dict[str, Any],
    message_type: str,
    rnd: int,
    encoding: WireEncoding = WireEncoding.FP32,
) -> list[Message]:
    record = RecordDict({"arrays": global_record(arrays, encoding), "config": ConfigRecord(config)})
    return [Message(content=record, dst_node_id=n, message_type=message_type, group_id=str(rnd)) for n in nodes]


def _reply_error(msg: Message) -> str:
    return msg.error.reason or f"error code {msg.error.code}"


def evaluate_round(
    grid: Grid,
    nodes: list[int],
    arrays: Arrays,
    rnd: int,
    timeout: float,
    encoding: WireEncoding = WireEncoding.FP32,
    run_id: str | None = None,
) -> dict[str, Any]:
    # The run id names the run in the site's ledger entry for the answer (without it: "unknown").
    config: dict[str, Any] = {"server-round": rnd} if run_id is None else {"server-round": rnd, "run-id": run_id}
    messages = _messages(nodes, arrays, config, MessageType.EVALUATE, rnd, encoding)
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    per_site, failed = [], []
    for msg in replies:
        if msg.has_error():
            failed.append({"node_id": msg.metadata.src_node_id, "reason": _reply_error(msg)})
            continue
        try:
            metrics = msg.content["metrics"]
            n = example_count(metrics, NUM_EXAMPLES)
            if not isinstance(metrics, MetricRecord) or n is None or n < 0:
                raise UpdateRejected(f"malformed reply: needs a metrics record with `{NUM_EXAMPLES}` >= 0")
        except (UpdateRejected, KeyError, TypeError) as err:
            failed.append({"node_id": msg.metadata.src_node_id, "reason": str(err)})
            continue
        per_site.append((n, finite_metrics(metrics)))
    out: dict[str, Any] = average_metrics(per_site) if per_site else {}
    out["sites"] = len(per_site)
    if failed:
        out["failed"] = failed
    return out


def make_verifier(cfg: FederationConfig, run: RunDirectory) -> UpdateVerifier:
    """The registry's keys; without one, the keys sites signed with so far in this run, pinned."""
    path = cfg.registry_path()
    verifier = UpdateVerifier(
        registry=load_registry(path) if path else None, require_signatures=cfg.security.require_signatures
    )
    if verifier.identity == IDENTITY_NONE:
        log(WARNING, "[silo] INSECURE: `security.require_signatures = false`: unsigned updates are aggregated")
    elif verifier.registry is None:
        log(
            WARNING,
            "[silo] no `security.registry`: signatures are checked against keys pinned on first use; "
            "site identity is not verified",
        )
    for entry in run.manifest["rounds"]:
        for s in entry.get("sites", []):
            if s.get("signing_key_fingerprint"):
                verifier.pinned.setdefault(s["site_id"], s["signing_key_fingerprint"])
    return verifier


def run_federation(
    grid: Grid, cfg: FederationConfig, run_dir: str, on_reply: Callable[[Message], None] | None = None
) -> RunDirectory:
    """Run (or resume) the federation `cfg` describes in `run_dir`; `on_reply` sees each reply as it arrives."""
    fed = cfg.federation
    run = RunDirectory.open_or_create(
        run_dir,
        config_hash=cfg.config_hash(),
        config=_config_dict(cfg),
        base_model=cfg.model.base,
        code_version=CODE_VERSION,
        rounds_planned=fed.rounds,
    )
    run.record_submission(base_model_sha256=model_fingerprint(cfg.model_source()), flower_run_id=_flower_run_id(grid))
    strategy = make_strategy(fed, cfg.security)
    grid = PromptGrid(grid, poll_s=fed.reply_poll_s, on_reply=on_reply)  # type: ignore[assignment]
    try:
        _run_rounds(grid, cfg, run, strategy)
    except FederationFailed as err:
        run.finish("failed", str(err))
        raise
    except Exception as err:
        run.finish("failed", f"{type(err).__name__}: {err}")
        raise
    run.finish("completed")
    log(
        INFO,
        "[silo] run %s completed: %d rounds, final adapter in %s",
        run.run_id,
        run.completed_rounds,
        run.path / "final",
    )
    return run


# Flower's error for a SuperNode that is registered but not connected (restarting, backing off).
NODE_UNAVAILABLE = "Node Unavailable"
# Pause before asking unavailable sites again; their reconnect back-off is a few seconds to ~20 s.
RETRY_PAUSE_S = 3.0


def train_round_replies(
    grid: Grid,
    nodes: list[int],
    arrays: Arrays,
    config: dict[str, Any],
    rnd: int,
    gate: RoundGate,
    min_sites: int,
    timeout: float,
    encoding: WireEncoding = WireEncoding.FP32,
) -> tuple[list[SiteUpdate], list[Rejection]]:
    """Send the round to every site; while too few updates are in, ask the sites that were merely
    unreachable again (they trained nothing) until the round's timeout. Every site asked ends up
    accepted or rejected: one that never answered is rejected with `NO_REPLY`."""
    deadline = time.monotonic() + timeout
    accepted: list[SiteUpdate] = []
    outcome: dict[int, Rejection | None] = {}  # node -> its latest rejection, None once it replied usefully
    pending = list(nodes)
    while True:
        replies = list(
            grid.send_and_receive(
                _messages(pending, arrays, config, MessageType.TRAIN, rnd, encoding),
                timeout=max(deadline - time.monotonic(), 1.0),
            )
        )
        new, rejected = collect_updates(replies, gate)
        accepted += new
        outcome.update({u.node_id: None for u in new})
        outcome.update({r.node_id: r for r in rejected})
        for node in pending:
            outcome.setdefault(node, Rejection(node_id=node, reason=NO_REPLY))
        unavailable = [r for r in rejected if NODE_UNAVAILABLE in r.reason]
        if len(accepted) >= min_sites or not unavailable or time.monotonic() + RETRY_PAUSE_S > deadline:
            return accepted, [r for r in outcome.values() if r is not None]
        log(WARNING, "[silo] round %d: %d site(s) unreachable, asking again", rnd, len(unavailable))
        time.sleep(RETRY_PAUSE_S)
        pending = [r.node_id for r in unavailable] + [
            n for n in grid.get_node_ids() if n not in pending and n not in {u.node_id for u in accepted}
        ]


def secure_train_replies(
    grid: Grid, secagg: SecAggRound, arrays: Arrays, config: dict[str, Any], rnd: int, gate: RoundGate, timeout: float
) -> tuple[list[SiteUpdate], list[Rejection]]:
    """The train message to each site that shared keys, with the shares addressed to it; no second
    ask: a site that misses this message has dropped, and its masks are cancelled at unmasking."""
    sent = global_record(arrays, gate.encoding)
    messages = [
        Message(
            content=RecordDict({"arrays": sent, "config": ConfigRecord(config), "secagg": secagg.train_record(n)}),
            dst_node_id=n,
            message_type=MessageType.TRAIN,
            group_id=str(rnd),
        )
        for n in secagg.sharing
    ]
    accepted, rejected = collect_updates(grid.send_and_receive(messages, timeout=timeout), gate)
    answered = {u.node_id for u in accepted} | {r.node_id for r in rejected}
    return accepted, rejected + [Rejection(node_id=n, reason=NO_REPLY) for n in secagg.sharing if n not in answered]


def eval_from_train_replies(updates: list[SiteUpdate]) -> dict[str, Any]:
    """The sites' hold-out metrics of the adapter they received, weighted by hold-out size."""
    pairs = []
    for u in updates:
        m = {k.removeprefix("global_"): v for k, v in u.metrics.items() if k.startswith("global_")}
        if m:
            pairs.append((int(u.metrics.get("holdout-examples", 0)), m))
    out: dict[str, Any] = average_metrics(pairs) if pairs else {}
    out["sites"] = len(pairs)
    return out


def _flower_run_id(grid: Grid) -> int | None:
    """Flower's id of this submission (what `flwr ls/log/stop` take), when the Grid knows its run."""
    try:
        return int(grid.run.run_id)
    except (AttributeError, RuntimeError, TypeError, ValueError):
        return None


def _run_rounds(grid: Grid, cfg: FederationConfig, run: RunDirectory, strategy: FedAvg) -> None:
    fed = cfg.federation
    timeout = fed.round_timeout_s
    nodes = wait_for_sites(grid, minimum=fed.min_sites, timeout_s=timeout)
    if run.completed_rounds < 0:
        initial, initial_config = initial_adapter(cfg)
        run.save_round(0, initial, adapter_config=initial_config, record={"kind": "initial"})
    else:
        log(INFO, "[silo] resuming run %s after round %d", run.run_id, run.completed_rounds)
    arrays, server_state = run.load_round(run.completed_rounds)
    strategy.load_state_dict(server_state.get("strategy", {}))
    adapter_config = json.loads((run.round_dir(0) / ADAPTER_CONFIG).read_text())
    verifier = make_verifier(cfg, run)
    # Round 0: every site agrees to this run (signed request, handshake) before anyone trains.
    grid = agreed = agree_on_run(grid, cfg, run.run_id, verifier, nodes)
    central = CentralDP(cfg.central_dp) if cfg.central_dp.enabled else None
    if central is not None:
        central.load_history(run.manifest["rounds"])
    encoding = fed.wire_encoding
    heads = LedgerHeads.beside(run.path)
    last_norms = previous_norms(run.manifest["rounds"][-1] if run.manifest["rounds"] else None)

    for rnd in range(run.completed_rounds + 1, fed.rounds + 1):
        t0 = time.perf_counter()
        nodes = wait_for_sites(grid, minimum=fed.min_sites, timeout_s=timeout)
        config = {"server-round": rnd, "run-id": run.run_id, "wire-encoding": str(encoding), **strategy.site_config()}
        secagg = SecAggRound(cfg.secagg, run.run_id, rnd) if cfg.secagg.enabled else None
        gate = RoundGate(verifier, cfg.security, run.run_id, rnd, arrays, secagg=secagg, encoding=encoding)
        if secagg is None:
            accepted, rejected = train_round_replies(
                grid, nodes, arrays, config, rnd, gate, fed.min_sites, timeout, encoding
            )
        else:
            secagg.exchange_keys(grid, nodes, min_sites=fed.min_sites, timeout=timeout)
            accepted, rejected = secure_train_replies(grid, secagg, arrays, config, rnd, gate, timeout)
        rejected = agreed.refused + rejected  # sites that did not agree to the run: asked nothing, spent nothing
        if secagg is None and not cfg.security.max_update_norm:
            accepted, too_far = apply_norm_bound(accepted, previous_norms=last_norms, multiple=NORM_BOUND_MULTIPLE)
            rejected += too_far
        for r in rejected:
            log(WARNING, "[silo] round %d: update from node %s rejected: %s", rnd, r.node_id, r.reason)
        if len(accepted) < fed.min_sites:
            reasons = "; ".join(f"node {r.node_id}: {r.reason}" for r in rejected) or "no replies in time"
            run.record_failed_round(rnd, rejected)
            raise FederationFailed(
                f"round {rnd}: {len(accepted)} usable update(s), `min_sites` is {fed.min_sites} ({reasons})"
            )
        exchanged = time.perf_counter()
        accepted, regressions = _check_ledger_heads(heads, accepted, run.run_id, rnd)
        # The sites evaluated the adapter they received (round rnd-1's) before training on it.
        run.update_round(rnd - 1, eval=eval_from_train_replies(accepted))
        _log_eval(rnd - 1, fed.rounds, run)
        run.set_sites({str(u.node_id): u.site_id for u in accepted})
        dp_record = secagg_record = None
        arrays_before = arrays
        if secagg is not None:
            mean_delta, secagg_record = secagg.unmask(
                grid,
                {u.node_id: u.arrays for u in accepted},
                {u.node_id: u.num_examples for u in accepted},
                min_sites=fed.min_sites,
                timeout=timeout,
            )
            combined = {k: (w.astype(np.float64) + mean_delta[k]).astype(w.dtype) for k, w in arrays.items()}
            arrays = strategy.aggregate_combined(arrays, combined)
        elif central is not None:
            combined, dp_record = central.aggregate(arrays, [u.arrays for u in accepted])
            arrays = strategy.aggregate_combined(arrays, combined)
        else:
            arrays = strategy.aggregate(arrays, accepted)
        record: dict[str, Any] = {
            "kind": "train",
            "strategy": str(fed.strategy),
            "security": _security_record(cfg, verifier, strategy, len(accepted)),
            "train": average_metrics(accepted),
            "sites": [u.entry.to_dict() for u in accepted if u.entry is not None],
            "rejected": [r.to_dict() for r in rejected],
            "ledger_regressions": [g.to_dict() for g in regressions],
            "bytes_down_per_site": wire_bytes(encode_global(arrays_before, encoding)),
            "transport": {
                "wire_encoding": str(encoding),
                "bytes_fp32_adapter": 4 * sum(a.size for a in arrays_before.values()),
            },
            "round_seconds": time.perf_counter() - t0,
            "slowest_site_train_seconds": max(u.metrics.get("train_seconds", 0.0) for u in accepted),
            "timings": _round_timings(accepted, exchanged - t0, time.perf_counter() - exchanged),
        }
        if secagg_record is not None:
            record["secagg"] = secagg_record
            log(
                INFO,
                "[silo] round %d: secure aggregation of %d site(s), %d dropped; only their sum was seen",
                rnd,
                len(secagg_record["sites"]),
                len(secagg_record["dropped"]),
            )
        if dp_record is not None:
            record["central_dp"] = dp_record
            log(
                INFO,
                "[silo] round %d: central DP epsilon %.3f this round, %.3f in total (delta %g)",
                rnd,
                dp_record["epsilon_round"],
                dp_record["epsilon_total"],
                dp_record["delta"],
            )
        heads.save()
        last_norms = [u.entry.update_norm for u in accepted if u.entry is not None and u.entry.update_norm is not None]
        state = strategy.state_dict()
        run.save_round(
            rnd,
            arrays,
            adapter_config=adapter_config,
            record=record,
            server_state={"strategy": state} if state else None,
        )
        log(
            INFO,
            "[silo] round %d/%d  sites %d  rejected %d  (%.1fs)",
            rnd,
            fed.rounds,
            len(accepted),
            len(rejected),
            record["round_seconds"],
        )
    # The final adapter has no next round to evaluate it: one evaluate message.
    final = evaluate_round(grid, nodes, arrays, run.completed_rounds, timeout, encoding, run.run_id)
    run.update_round(run.completed_rounds, eval=final)
    _log_eval(run.completed_rounds, fed.rounds, run)


def _round_timings(accepted: list[SiteUpdate], exchange_s: float, coordinator_s: float) -> dict[str, float]:
    """Where a round's time went: at the slowest site (preparing: config, records, model; the hold-out
    answer; training; the rest: ledger, encoding, sealing), on the wire (the exchange minus that site's
    work), and at the coordinator after the replies (heads, aggregation; checkpointing comes after)."""
    slowest = max(accepted, key=lambda u: u.metrics.get("site_seconds", 0.0))
    m = slowest.metrics
    site_s = float(m.get("site_seconds", 0.0))
    parts = {k: float(m.get(k, 0.0)) for k in ("prepare_seconds", "eval_seconds", "train_seconds")}
    return {
        "slowest_site_seconds": site_s,
        "site_prepare_seconds": parts["prepare_seconds"],
        "site_eval_seconds": parts["eval_seconds"],
        "site_train_seconds": parts["train_seconds"],
        "site_other_seconds": max(site_s - sum(parts.values()), 0.0),
        "messaging_seconds": max(exchange_s - site_s, 0.0),
        "coordinator_seconds": coordinator_s,
    }


def _check_ledger_heads(
    heads: LedgerHeads, accepted: list[SiteUpdate], run_id: str, rnd: int
) -> tuple[list[SiteUpdate], list[LedgerRegression]]:
    """Each accepted site's declared ledger index against the highest seen before (server/ledger_heads.py);
    a site whose ledger went backwards keeps its update but carries a warning, here and in the log."""
    out, regressions = [], []
    for u in accepted:
        privacy = u.entry.privacy if u.entry is not None else None
        found = heads.observe(u.site_id, privacy.ledger_index if privacy else None, run_id=run_id, round=rnd)
        if found is not None and u.entry is not None:
            regressions.append(found)
            log(WARNING, "[silo] round %d: %s", rnd, found.message())
            u = replace(u, entry=replace(u.entry, warnings=(*u.entry.warnings, found.message())))
        out.append(u)
    return out, regressions


def _log_eval(rnd: int, planned: int, run: RunDirectory) -> None:
    entry = next(r for r in run.manifest["rounds"] if r["round"] == rnd)
    log(
        INFO,
        "[silo] round %d/%d  held-out eval_loss %.4f over %d site(s)",
        rnd,
        planned,
        entry["eval"].get("eval_loss", float("nan")),
        entry["eval"].get("sites", 0),
    )


def _security_record(cfg: FederationConfig, verifier: UpdateVerifier, strategy: FedAvg, sites: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "site_identity": verifier.identity,
        "registry_sha256": verifier.registry.sha256 if verifier.registry is not None else None,
        "max_update_norm": cfg.security.max_update_norm or None,
        "norm_bound": (
            f"fixed: {cfg.security.max_update_norm:g}"
            if cfg.security.max_update_norm
            else f"relative: {NORM_BOUND_MULTIPLE:g} x the upper median norm of the other updates and last round's"
        ),
        "update_hash": "declared update-sha256 checked against the arrays received",
        "aggregator": str(strategy.aggregator),
    }
    if cfg.secagg.enabled:
        out["max_update_norm"] = None
        out["norm_bound"] = f"sites clip to {cfg.secagg.clip:g} before masking"
        out["update_hash"] = "masked: the declared update-sha256 is checked by the site's ledger, not here"
        out["secagg"] = True
        out["update_validation"] = (
            "masked: each update's seal, form and secagg declaration only; norms are bounded by the "
            f"sites' own clipping to {cfg.secagg.clip:g} before masking"
        )
    if str(strategy.aggregator) == "trimmed_mean":
        out["trimmed_per_side"] = trimmed_per_side(sites, strategy.trim_fraction)
    return out


def _config_dict(cfg: FederationConfig) -> dict[str, Any]:
    out = asdict(cfg)
    out.pop("root", None)
    return out
