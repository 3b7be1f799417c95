"""What the run manifest records about a round beside the adapter: the sites' hold-out metrics of the
adapter they received, where the round's time went, and the security it ran under."""

from __future__ import annotations

from typing import Any

from common.config import FederationConfig
from server.strategy import FedAvg, SiteUpdate, average_metrics, trimmed_per_side
from server.verify import NORM_BOUND_MULTIPLE, UpdateVerifier


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
