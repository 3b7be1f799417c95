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
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from common.adapter import adapter_state, hash_state, numpy_to_state, state_to_arrays, state_to_numpy
from common.config import FederationConfig, SecuritySection
from common.errors import FederationFailed, UpdateRejected
from common.model import load_lora_model
from common.version import CODE_VERSION
from server.central_dp import CentralDP
from server.checkpoint import ADAPTER_CONFIG, RunDirectory
from server.secagg import SecAggRound
from server.strategy import Arrays, FedAvg, SiteUpdate, average_metrics, make_strategy, trimmed_per_side
from server.verify import IDENTITY_NONE, UpdateVerifier, check_payload_size, load_registry, validate_update

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


def _messages(
    nodes: Iterable[int], arrays: Arrays, config: dict[str, Any], message_type: str, rnd: int
) -> list[Message]:
    record = RecordDict({"arrays": state_to_arrays(numpy_to_state(arrays)), "config": ConfigRecord(config)})
    return [Message(content=record, dst_node_id=n, message_type=message_type, group_id=str(rnd)) for n in nodes]


def _reply_error(msg: Message) -> str:
    return msg.error.reason or f"error code {msg.error.code}"


@dataclass
class RoundGate:
    """What one round's replies are checked against: this run and round, the global adapter sent."""

    verifier: UpdateVerifier
    security: SecuritySection
    run_id: str
    round: int
    global_arrays: Arrays
    global_sha256: str = ""
    # Site ids already accepted this round: a second update from one site is a replay.
    seen: set[str] = field(default_factory=set)
    # With secure aggregation the replies are masked vectors: checked for form, not for norm.
    secagg: SecAggRound | None = None

    def __post_init__(self) -> None:
        self.global_sha256 = self.global_sha256 or hash_state(numpy_to_state(self.global_arrays))

    def admit(self, msg: Message) -> SiteUpdate:
        """The reply as a verified, validated update, or UpdateRejected with the reason."""
        content = msg.content
        if "arrays" not in content or "metrics" not in content or "site" not in content:
            raise UpdateRejected(f"malformed reply (records: {sorted(content.keys())})")
        site = content.config_records["site"]
        site_id = str(site.get("site-id", ""))
        arrays = {k: v.numpy() for k, v in content.array_records["arrays"].items()}
        check_payload_size(
            sum(a.nbytes for a in arrays.values()) + sum(len(v) for v in site.values() if isinstance(v, str | bytes)),
            self.global_arrays if self.secagg is None else self.secagg.field_like(self.global_arrays),
            max_update_bytes=self.security.max_update_bytes,
        )
        seal = self.verifier.verify(
            site,
            run_id=self.run_id,
            round=self.round,
            update_sha256=hash_state(numpy_to_state(arrays)),
            global_sha256=self.global_sha256,
            metrics=dict(content.metric_records["metrics"].items()),
        )
        metrics = {k: float(v) for k, v in content.metric_records["metrics"].items() if isinstance(v, int | float)}
        num_examples = int(metrics.get("num-examples", 0))
        norm: float | None = None
        declared: dict[str, Any] | None = None
        if self.secagg is None:
            norm = validate_update(arrays, self.global_arrays, max_update_norm=self.security.max_update_norm)
        else:
            node = msg.metadata.src_node_id
            declared = self.secagg.validate_masked(node, arrays, self.global_arrays, site, num_examples)
        if site_id in self.seen:
            raise UpdateRejected(f"a second update from site {site_id!r} in round {self.round}")
        self.seen.add(site_id)
        report = {
            k: json.loads(str(site[f"{k}-report" if k == "scrub" else k]))
            for k in ("scrub", "privacy")
            if (f"{k}-report" if k == "scrub" else k) in site
        }
        report["update_sha256"] = str(site.get("update-sha256", ""))
        report["update_norm"] = norm
        report["signing_key_fingerprint"] = seal.key_fingerprint if seal is not None else None
        if declared is not None:
            report["secagg"] = {"masked": True, "clipped": bool(declared.get("clipped"))}
        return SiteUpdate(
            node_id=msg.metadata.src_node_id,
            site_id=site_id,
            arrays=arrays,
            num_examples=num_examples,
            metrics=metrics,
            report=report,
        )


def collect_updates(replies: Iterable[Message], gate: RoundGate) -> tuple[list[SiteUpdate], list[dict[str, Any]]]:
    """Accepted updates, and a record of each rejected or failed reply with its reason."""
    accepted, rejected = [], []
    for msg in replies:
        node = msg.metadata.src_node_id
        if msg.has_error():
            rejected.append({"node_id": node, "reason": _reply_error(msg)})
            continue
        try:
            accepted.append(gate.admit(msg))
        except UpdateRejected as err:
            site: Any = msg.content.get("site", {})
            rejected.append({"node_id": node, "site_id": str(site.get("site-id", "")), "reason": str(err)})
    return accepted, rejected


def evaluate_round(grid: Grid, nodes: list[int], arrays: Arrays, rnd: int, timeout: float) -> dict[str, Any]:
    replies = list(
        grid.send_and_receive(
            _messages(nodes, arrays, {"server-round": rnd}, MessageType.EVALUATE, rnd), timeout=timeout
        )
    )
    per_site, failed = [], []
    for msg in replies:
        if msg.has_error():
            failed.append({"node_id": msg.metadata.src_node_id, "reason": _reply_error(msg)})
            continue
        if "metrics" not in msg.content:
            failed.append({"node_id": msg.metadata.src_node_id, "reason": "malformed reply (no metrics)"})
            continue
        m = {k: float(v) for k, v in msg.content["metrics"].items() if isinstance(v, int | float)}
        per_site.append((int(m.get("num-examples", 0)), m))
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


def run_federation(grid: Grid, cfg: FederationConfig, run_dir: str) -> RunDirectory:
    fed = cfg.federation
    run = RunDirectory.open_or_create(
        run_dir,
        config_hash=cfg.config_hash(),
        config=_config_dict(cfg),
        base_model=cfg.model.base,
        code_version=CODE_VERSION,
        rounds_planned=fed.rounds,
    )
    strategy = make_strategy(fed, cfg.security)
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
) -> tuple[list[SiteUpdate], list[dict[str, Any]]]:
    """Send the round to every site; while too few updates are in, ask the sites that were merely
    unreachable again (they trained nothing) until the round's timeout."""
    deadline = time.monotonic() + timeout
    accepted: list[SiteUpdate] = []
    pending = list(nodes)
    while True:
        replies = list(
            grid.send_and_receive(
                _messages(pending, arrays, config, MessageType.TRAIN, rnd),
                timeout=max(deadline - time.monotonic(), 1.0),
            )
        )
        new, rejected = collect_updates(replies, gate)
        accepted += new
        unavailable = [r for r in rejected if NODE_UNAVAILABLE in r["reason"]]
        if len(accepted) >= min_sites or not unavailable or time.monotonic() + RETRY_PAUSE_S > deadline:
            return accepted, rejected
        log(WARNING, "[silo] round %d: %d site(s) unreachable, asking again", rnd, len(unavailable))
        time.sleep(RETRY_PAUSE_S)
        pending = [r["node_id"] for r in unavailable] + [
            n for n in grid.get_node_ids() if n not in pending and n not in {u.node_id for u in accepted}
        ]


def secure_train_replies(
    grid: Grid, secagg: SecAggRound, arrays: Arrays, config: dict[str, Any], rnd: int, gate: RoundGate, timeout: float
) -> tuple[list[SiteUpdate], list[dict[str, Any]]]:
    """The train message to each site that shared keys, with the shares addressed to it; no second
    ask: a site that misses this message has dropped, and its masks are cancelled at unmasking."""
    global_record = state_to_arrays(numpy_to_state(arrays))
    messages = [
        Message(
            content=RecordDict(
                {"arrays": global_record, "config": ConfigRecord(config), "secagg": secagg.train_record(n)}
            ),
            dst_node_id=n,
            message_type=MessageType.TRAIN,
            group_id=str(rnd),
        )
        for n in secagg.sharing
    ]
    return collect_updates(grid.send_and_receive(messages, timeout=timeout), gate)


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
    central = CentralDP(cfg.central_dp) if cfg.central_dp.enabled else None
    if central is not None:
        central.load_history(run.manifest["rounds"])
    down_bytes = sum(v.nbytes for v in arrays.values())

    for rnd in range(run.completed_rounds + 1, fed.rounds + 1):
        t0 = time.perf_counter()
        nodes = wait_for_sites(grid, minimum=fed.min_sites, timeout_s=timeout)
        config = {"server-round": rnd, "run-id": run.run_id, **strategy.site_config()}
        secagg = SecAggRound(cfg.secagg, run.run_id, rnd) if cfg.secagg.enabled else None
        gate = RoundGate(verifier, cfg.security, run.run_id, rnd, arrays, secagg=secagg)
        if secagg is None:
            accepted, rejected = train_round_replies(grid, nodes, arrays, config, rnd, gate, fed.min_sites, timeout)
        else:
            secagg.exchange_keys(grid, nodes, min_sites=fed.min_sites, timeout=timeout)
            accepted, rejected = secure_train_replies(grid, secagg, arrays, config, rnd, gate, timeout)
        for r in rejected:
            log(WARNING, "[silo] round %d: update from node %s rejected: %s", rnd, r["node_id"], r["reason"])
        if len(accepted) < fed.min_sites:
            reasons = "; ".join(f"node {r['node_id']}: {r['reason']}" for r in rejected) or "no replies in time"
            raise FederationFailed(
                f"round {rnd}: {len(accepted)} usable update(s), `min_sites` is {fed.min_sites} ({reasons})"
            )
        # The sites evaluated the adapter they received (round rnd-1's) before training on it.
        run.update_round(rnd - 1, eval=eval_from_train_replies(accepted))
        _log_eval(rnd - 1, fed.rounds, run)
        run.set_sites({str(u.node_id): u.site_id for u in accepted})
        dp_record = secagg_record = None
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
            "sites": [
                {
                    "node_id": u.node_id,
                    "site_id": u.site_id,
                    "num_examples": u.num_examples,
                    "bytes_up": sum(a.nbytes for a in u.arrays.values()),
                    **u.metrics,
                    **u.report,
                }
                for u in accepted
            ],
            "rejected": rejected,
            "bytes_down_per_site": down_bytes,
            "round_seconds": time.perf_counter() - t0,
            "slowest_site_train_seconds": max(u.metrics.get("train_seconds", 0.0) for u in accepted),
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
            "[silo] round %d/%d  sites %d  train_loss %.4f  (%.1fs)",
            rnd,
            fed.rounds,
            len(accepted),
            record["train"].get("train_loss", float("nan")),
            record["round_seconds"],
        )
    # The final adapter has no next round to evaluate it: one evaluate message.
    run.update_round(run.completed_rounds, eval=evaluate_round(grid, nodes, arrays, run.completed_rounds, timeout))
    _log_eval(run.completed_rounds, fed.rounds, run)


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
        "aggregator": str(strategy.aggregator),
    }
    if cfg.secagg.enabled:
        out["max_update_norm"] = None
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
