"""A site's reply to a train or evaluate message as one Flower record: its declarations, its metrics and
its packed update side by side in the "site" ConfigRecord.

Flower 1.41 moves every object of a message on its own, one request per hop (site runtime → SuperNode →
SuperLink → ServerApp): a reply of three records (the update, the metrics, the declarations) was five
objects with the message and its RecordDict, one record is three. Keys are kept apart by prefix:
`metric.NAME` holds a number the reply reports, `arrays.layout` and `arrays.packed` the update
(common/packing.py), every other key a declaration, as before (the site's seal covers the declarations,
the metrics and the update's hash, common/sealing.py).

`reply_parts` reads input from the network: a reply with any other record or a metric that is not a
number (or a list of numbers) is refused with `UpdateRejected` before anything else looks at it; update
keys that are not exactly the packed pair are refused when the update is unpacked (common/packing.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from flwr.app import ConfigRecord, MetricRecord, RecordDict

from common.errors import UpdateRejected

SITE = "site"
METRIC = "metric."
ARRAYS = "arrays."
ANSWERED_ROUND = "answered-round"
"""Metric of a reply that carries a hold-out answer (`global_*` metrics): the round whose aggregate it is
about. A site's runtime computes the answer after its reply and sends it with its next one
(client/answer_later.py); the coordinator files it under that round (server/round_record.py)."""
MetricValue = int | float | list[int] | list[float]
"""What a Flower MetricRecord holds."""


def reply_content(
    declarations: ConfigRecord, *, metrics: Mapping[str, MetricValue], arrays: ConfigRecord | None = None
) -> RecordDict:
    """The reply's one record: `declarations`, each metric as `metric.NAME`, the packed update as `arrays.*`."""
    record = ConfigRecord(dict(declarations))
    for name, value in metrics.items():
        record[METRIC + name] = value
    for name, packed in (arrays or ConfigRecord()).items():
        record[ARRAYS + name] = packed
    return RecordDict({SITE: record})


@dataclass(frozen=True)
class ReplyParts:
    """A reply split back: the declarations (what the seal names), the metrics and the packed update."""

    site: ConfigRecord
    metrics: MetricRecord
    arrays: ConfigRecord | None


def reply_parts(content: RecordDict) -> ReplyParts:
    """The parts of a reply `reply_content` made; UpdateRejected for any other form."""
    names = sorted(content.keys())
    record = content.get(SITE)
    if names != [SITE] or not isinstance(record, ConfigRecord):
        raise UpdateRejected(f"malformed reply: needs exactly one {SITE!r} config record (has {names})")
    site, arrays = ConfigRecord(), ConfigRecord()
    metrics: dict[str, MetricValue] = {}
    for key, value in record.items():
        if key.startswith(METRIC):
            if not _is_metric(value):
                raise UpdateRejected(f"malformed reply: metric {key[len(METRIC) :]!r} is not a number")
            metrics[key[len(METRIC) :]] = value  # type: ignore[assignment]  # checked just above
        elif key.startswith(ARRAYS):
            arrays[key[len(ARRAYS) :]] = value
        else:
            site[key] = value
    return ReplyParts(site=site, metrics=MetricRecord(metrics), arrays=arrays if len(arrays) else None)


def _is_metric(value: object) -> bool:
    def number(v: object) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool)

    return number(value) or (isinstance(value, list) and all(number(v) for v in value))
