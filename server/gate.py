"""The coordinator's gate for one round: every field of every reply checked, one reason per rejection.

No one site can stop a federation: whatever a reply holds (a NaN or negative example count,
declarations that are not JSON, records of the wrong type, arrays that do not parse), `admit` either
returns a verified `SiteUpdate` or raises `UpdateRejected` with the reason the manifest records, and
`collect_updates` turns anything else a reply can make the checks raise into a rejection too.

In order: the reply's records and arrays are readable; its size is within the limit; its seal verifies
(server/verify.py: signed by its site's key, for this run and round, over exactly what arrived); its
declarations parse (common/declaration.py); `num-examples` is a positive integer no larger than the
`dataset_size` the site declares; without secure aggregation, the declared `update-sha256` is the hash
of the arrays that arrived, they are a delta in the federation's wire encoding (common/transport.py),
and the adapter they make with the global one has its exact form and no NaN/Inf
(`validate_update`, with the fixed norm bound when one is configured). The relative norm bound needs
the whole round and is applied by `apply_norm_bound` once the replies are in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from flwr.app import ConfigRecord, Message, MetricRecord

from common.adapter import arrays_to_state, hash_state, numpy_to_state
from common.config import SecuritySection, WireEncoding
from common.declaration import SITE_ID, SiteDeclaration
from common.errors import UpdateRejected
from common.manifest import Rejection, SiteEntry
from common.reply import reply_parts
from common.transport import decode_update, encode_global
from server.secagg import SecAggRound
from server.strategy import Arrays, SiteUpdate
from server.verify import UpdateVerifier, check_payload_size, relative_norm_bounds, validate_update

NUM_EXAMPLES, HOLDOUT_EXAMPLES = "num-examples", "holdout-examples"
# What the coordinator records for a site that was asked and did not answer.
NO_REPLY = "no reply within the round timeout"


def reply_site_id(msg: Any) -> str | None:
    """The site id a reply claims (unverified), for the rejection record; None when there is none."""
    try:
        site = msg.content.config_records.get("site")
        value = site.get(SITE_ID) if site is not None else None
    except (AttributeError, KeyError, TypeError):
        return None
    return value if isinstance(value, str) and value else None


def _records(msg: Message) -> tuple[ConfigRecord, MetricRecord, ConfigRecord]:
    """The update, the metrics and the declarations of a train reply (common/reply.py)."""
    parts = reply_parts(msg.content)
    if parts.arrays is None:
        raise UpdateRejected("malformed reply: it carries no update")
    return parts.arrays, parts.metrics, parts.site


def _arrays(record: ConfigRecord) -> tuple[Arrays, str]:
    """The reply's arrays and their `hash_state`, or UpdateRejected when they do not parse."""
    state = arrays_to_state(record)  # UpdateRejected unless exactly the packed form
    try:
        arrays = {k: v.numpy() for k, v in state.items()}
        return arrays, hash_state(numpy_to_state(arrays))
    except (TypeError, ValueError, RuntimeError) as err:
        raise UpdateRejected(f"malformed arrays: {type(err).__name__}") from None


def example_count(metrics: Mapping[str, Any], name: str) -> int | None:
    """An integer-valued metric (ints, or floats that are whole numbers); None when absent."""
    if name not in metrics:
        return None
    value = metrics[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise UpdateRejected(f"`{name}` must be an integer, got {_kind(value)}")
    if not float(value).is_integer():
        raise UpdateRejected(f"`{name}` must be an integer, got {value:g}")
    return int(value)


def _kind(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)  # nan, inf
    return type(value).__name__


def check_num_examples(metrics: Mapping[str, Any], dataset_size: int | None) -> int:
    """The aggregation weight a site claims: a positive integer within its declared dataset size."""
    n = example_count(metrics, NUM_EXAMPLES)
    if n is None:
        raise UpdateRejected(f"`{NUM_EXAMPLES}` is missing")
    if n <= 0:
        raise UpdateRejected(f"`{NUM_EXAMPLES}` must be a positive integer, got {n}")
    if dataset_size is None:
        raise UpdateRejected(f"privacy declaration has no `dataset_size` to bound `{NUM_EXAMPLES}`")
    if n > dataset_size:
        raise UpdateRejected(f"`{NUM_EXAMPLES}` {n} exceeds the site's declared dataset size {dataset_size}")
    holdout = example_count(metrics, HOLDOUT_EXAMPLES)
    if holdout is not None and holdout < 0:
        raise UpdateRejected(f"`{HOLDOUT_EXAMPLES}` must be >= 0, got {holdout}")
    return n


def finite_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The metrics the manifest records and averages: every finite number. Unknown names are data;
    a value that is not a finite number is left out rather than poisoning the round's averages."""
    return {
        str(k): float(v)
        for k, v in metrics.items()
        if not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v)
    }


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
    # How the adapter crossed the wire: the sites bound their seals to the global adapter as it was SENT.
    encoding: WireEncoding = WireEncoding.FP32

    def __post_init__(self) -> None:
        sent = encode_global(self.global_arrays, self.encoding)
        self.global_sha256 = self.global_sha256 or hash_state(numpy_to_state(sent))

    def admit(self, msg: Message) -> SiteUpdate:
        """The reply as a verified, validated update, or UpdateRejected with the reason."""
        array_record, metric_record, site = _records(msg)
        arrays, received_sha256 = _arrays(array_record)
        bytes_up = sum(a.nbytes for a in arrays.values())
        check_payload_size(
            bytes_up + sum(len(v) for v in site.values() if isinstance(v, str | bytes)),
            self.global_arrays if self.secagg is None else self.secagg.field_like(self.global_arrays),
            max_update_bytes=self.security.max_update_bytes,
        )
        metrics = dict(metric_record.items())
        seal = self.verifier.verify(
            site,
            run_id=self.run_id,
            round=self.round,
            update_sha256=received_sha256,
            global_sha256=self.global_sha256,
            metrics=metrics,
        )
        declaration = SiteDeclaration.from_record(site)
        num_examples = check_num_examples(metrics, declaration.privacy.dataset_size)
        node = msg.metadata.src_node_id
        entry = SiteEntry(
            node_id=node,
            site_id=declaration.site_id,
            num_examples=num_examples,
            update_sha256=received_sha256,
            bytes_up=bytes_up,
            signing_key_fingerprint=seal.key_fingerprint if seal is not None else None,
            scrub=declaration.scrub_report,
            privacy=declaration.privacy,
            metrics=finite_metrics(metrics),
        )
        if self.secagg is None:
            if declaration.update_sha256 != received_sha256:
                raise UpdateRejected(
                    f"declared update-sha256 {declaration.update_sha256[:12]} is not the hash of the arrays "
                    f"received ({received_sha256[:12]})"
                )
            arrays = decode_update(arrays, self.global_arrays, self.encoding)
            norm = validate_update(arrays, self.global_arrays, max_update_norm=self.security.max_update_norm)
            entry = replace(entry, update_norm=norm)
        else:
            masked = self.secagg.validate_masked(node, arrays, self.global_arrays, site, num_examples)
            # The coordinator holds only the masked vector; the site's declared hash names the adapter it
            # trained (what its ledger recorded), which the coordinator cannot recompute.
            entry = replace(
                entry,
                update_sha256=declaration.update_sha256,
                masked_sha256=received_sha256,
                secagg={"masked": True, "clipped": bool(masked.get("clipped"))},
            )
        if declaration.site_id in self.seen:
            raise UpdateRejected(f"a second update from site {declaration.site_id!r} in round {self.round}")
        self.seen.add(declaration.site_id)
        return SiteUpdate(
            node_id=node,
            site_id=declaration.site_id,
            arrays=arrays,
            num_examples=num_examples,
            metrics=dict(entry.metrics),
            entry=entry,
        )


def collect_updates(replies: Iterable[Message], gate: RoundGate) -> tuple[list[SiteUpdate], list[Rejection]]:
    """Accepted updates, and a record of each rejected or failed reply with its reason.

    A reply that makes a check raise anything but UpdateRejected (a record type Flower allows but
    the gate did not foresee) is rejected as malformed: no reply can end the round."""
    accepted: list[SiteUpdate] = []
    rejected: list[Rejection] = []
    for msg in replies:
        node = msg.metadata.src_node_id
        if msg.has_error():
            rejected.append(Rejection(node_id=node, reason=msg.error.reason or f"error code {msg.error.code}"))
            continue
        try:
            accepted.append(gate.admit(msg))
        except UpdateRejected as err:
            rejected.append(Rejection(node_id=node, site_id=reply_site_id(msg), reason=str(err)))
        except (AttributeError, KeyError, TypeError, ValueError, OverflowError) as err:
            reason = f"malformed reply: {type(err).__name__}"
            rejected.append(Rejection(node_id=node, site_id=reply_site_id(msg), reason=reason))
    return accepted, rejected


def apply_norm_bound(
    updates: Sequence[SiteUpdate], *, previous_norms: Sequence[float], multiple: float
) -> tuple[list[SiteUpdate], list[Rejection]]:
    """The relative bound (server/verify.py `relative_norm_bounds`), used when `security.max_update_norm`
    is 0: updates far above their peers' norms are rejected; the others keep the bound they met."""
    norms = {i: u.entry.update_norm for i, u in enumerate(updates) if u.entry and u.entry.update_norm is not None}
    bounds = relative_norm_bounds(norms, previous=previous_norms, multiple=multiple)
    kept, rejected = [], []
    for i, u in enumerate(updates):
        bound = bounds.get(i)
        norm = norms.get(i)
        if bound is not None and norm is not None and norm > bound:
            reason = (
                f"update norm {norm:.4g} exceeds {multiple:g} x the median norm of the round's other updates "
                f"({bound / multiple:.4g})"
            )
            rejected.append(Rejection(node_id=u.node_id, site_id=u.site_id, reason=reason))
        else:
            kept.append(u)
    return kept, rejected


def previous_norms(round_entry: Mapping[str, Any] | None) -> list[float]:
    """The accepted update norms of a manifest round entry (the relative bound's reference)."""
    if not round_entry:
        return []
    return [float(s["update_norm"]) for s in round_entry.get("sites", []) if s.get("update_norm") is not None]
