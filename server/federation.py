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
from collections.abc import Callable
from dataclasses import asdict, replace
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import Message
from flwr.common.logger import log
from flwr.serverapp import Grid

from common.adapter import adapter_state, state_to_numpy
from common.config import FederationConfig
from common.errors import FederationFailed
from common.manifest import LedgerRegression
from common.model import load_lora_model
from common.model_pin import model_fingerprint
from common.transport import encode_global, wire_bytes
from common.version import CODE_VERSION
from server.central_dp import CentralDP
from server.checkpoint import ADAPTER_CONFIG, RunDirectory
from server.exchange import (
    PromptGrid,
    evaluate_round,
    secure_train_replies,
    train_round_replies,
    wait_for_sites,
)
from server.gate import (
    RoundGate,
    apply_norm_bound,
    previous_norms,
)
from server.handshake import agree_on_run
from server.ledger_heads import LedgerHeads
from server.round_record import RoundAnswers, round_timings, security_record
from server.secagg import SecAggRound
from server.strategy import Arrays, FedAvg, SiteUpdate, average_metrics, make_strategy
from server.verify import IDENTITY_NONE, NORM_BOUND_MULTIPLE, UpdateVerifier, load_registry


def initial_adapter(cfg: FederationConfig) -> tuple[Arrays, dict[str, Any]]:
    """Round 0: a fresh LoRA adapter on the base model (seeded), and its PEFT config."""
    model = load_lora_model(cfg.model_source(), cfg.lora, cfg.task, seed=cfg.federation.seed)
    peft_cfg = model.peft_config["default"]
    peft_cfg.base_model_name_or_path = cfg.model.base
    return state_to_numpy(adapter_state(model)), peft_cfg.to_dict()


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

    answers = RoundAnswers()
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
        # The sites' hold-out answers: about round rnd-1's adapter (evaluated on receipt) or, from a site's
        # long-lived runtime, about the one before it (evaluated after its last reply, client/answer_later.py).
        filed = answers.add_updates(accepted, rnd)
        for k in sorted(filed | {rnd - 1}):
            run.update_round(k, eval=answers.summary(k))
        for k in sorted(filed):
            _log_eval(k, fed.rounds, run)
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
            "security": security_record(cfg, verifier, strategy, len(accepted)),
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
            "timings": round_timings(accepted, exchanged - t0, time.perf_counter() - exchanged),
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
        saving = time.perf_counter()
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
        # Part of the round's time too (the next round starts after it); written with the next manifest write.
        run.note_timing(rnd, "checkpoint_seconds", time.perf_counter() - saving)
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
    last = run.completed_rounds
    final = evaluate_round(grid, nodes, arrays, last, timeout, encoding, run.run_id, answers=answers)
    if last - 1 in answers.by_round:  # the answers about the last round's input, computed after its replies
        run.update_round(last - 1, eval=answers.summary(last - 1))
        _log_eval(last - 1, fed.rounds, run)
    run.update_round(last, eval=final)
    _log_eval(last, fed.rounds, run)


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


def _config_dict(cfg: FederationConfig) -> dict[str, Any]:
    out = asdict(cfg)
    out.pop("root", None)
    return out
