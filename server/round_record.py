"""What the run manifest records about a round beside the adapter: the sites' hold-out answers about
its aggregate, where the round's time went, and the security it ran under."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from common.config import FederationConfig
from common.reply import ANSWERED_ROUND
from server.gate import HOLDOUT_EXAMPLES, finite_metrics
from server.strategy import FedAvg, SiteUpdate, average_metrics, trimmed_per_side
from server.verify import NORM_BOUND_MULTIPLE, UpdateVerifier

GLOBAL = "global_"


class RoundAnswers:
    """The sites' hold-out answers, filed under the round whose aggregate they are about.

    A site answers about the adapter it received either in the same reply as its training (on receipt,
    the answer is about round rnd - 1's aggregate) or, from a long-lived runtime, one reply later
    (client/answer_later.py), naming the round in `answered-round`. Kept in the coordinator's memory
    for the run: after a restart, a round's evaluation counts the answers received since."""

    def __init__(self) -> None:
        self.by_round: dict[int, dict[int, tuple[int, dict[str, Any]]]] = {}

    def add(self, node_id: int, metrics: Mapping[str, Any], *, default_round: int, latest: int) -> int | None:
        """File one reply's answer (its `global_*` metrics); the round it went to, or None when the reply
        carries none or names a round that is not in [0, latest] (the answer is dropped, not the reply).
        Only finite numbers are kept, as for every other metric (server/gate.py `finite_metrics`)."""
        answer = finite_metrics({k.removeprefix(GLOBAL): v for k, v in metrics.items() if k.startswith(GLOBAL)})
        if not answer:
            return None
        answered = metrics.get(ANSWERED_ROUND, default_round)
        if isinstance(answered, float) and answered.is_integer():
            answered = int(answered)
        if isinstance(answered, bool) or not isinstance(answered, int) or not 0 <= answered <= latest:
            return None
        self.by_round.setdefault(answered, {})[node_id] = (int(metrics.get(HOLDOUT_EXAMPLES, 0)), answer)
        return answered

    @staticmethod
    def without(metrics: Mapping[str, Any]) -> dict[str, Any]:
        """`metrics` less any answer they carry (its `global_*` metrics, hold-out size and round)."""
        answer_keys = (ANSWERED_ROUND, HOLDOUT_EXAMPLES)
        return {k: v for k, v in metrics.items() if not k.startswith(GLOBAL) and k not in answer_keys}

    def add_updates(self, updates: list[SiteUpdate], rnd: int) -> set[int]:
        """Round `rnd`'s train replies: the rounds whose evaluation they added to."""
        filed = {self.add(u.node_id, u.metrics, default_round=rnd - 1, latest=rnd - 1) for u in updates}
        return {k for k in filed if k is not None}

    def summary(self, rnd: int) -> dict[str, Any]:
        """Round `rnd`'s evaluation: the answers' metrics weighted by hold-out size, and how many sites answered."""
        pairs = list(self.by_round.get(rnd, {}).values())
        out: dict[str, Any] = average_metrics(pairs) if pairs else {}
        out["sites"] = len(pairs)
        return out


def round_timings(accepted: list[SiteUpdate], exchange_s: float, coordinator_s: float) -> dict[str, float]:
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


def security_record(cfg: FederationConfig, verifier: UpdateVerifier, strategy: FedAvg, sites: int) -> dict[str, Any]:
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
