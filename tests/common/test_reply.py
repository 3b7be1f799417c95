"""A site's reply as one record (common/reply.py): what the coordinator reads back is what the site put in,
a reply is three Flower objects whatever the adapter, and any other form is refused before it is read."""

from __future__ import annotations

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

from common.adapter import arrays_to_state, hash_state, state_to_arrays
from common.errors import UpdateRejected
from common.reply import reply_content, reply_parts

ADAPTER = {"a.lora_A.weight": torch.randn(4, 8).half(), "a.lora_B.weight": torch.randn(8, 4).half()}
DECLARATIONS = ConfigRecord({"site-id": "hosp", "update-sha256": "ab" * 32, "seal-signature": b"\x01\x02"})
METRICS = {"num-examples": 199, "train_seconds": 1.5, "per_class": [0.5, 0.25]}


def test_the_parts_come_back_as_they_were_put_in():
    parts = reply_parts(reply_content(DECLARATIONS, metrics=METRICS, arrays=state_to_arrays(ADAPTER)))
    assert dict(parts.site) == dict(DECLARATIONS)
    assert isinstance(parts.metrics, MetricRecord) and dict(parts.metrics) == METRICS
    assert parts.arrays is not None and hash_state(arrays_to_state(parts.arrays)) == hash_state(ADAPTER)


def test_an_evaluate_reply_has_metrics_and_no_update():
    parts = reply_parts(reply_content(DECLARATIONS, metrics={"eval_loss": 2.5, "num-examples": 41.0}))
    assert parts.arrays is None and parts.metrics["eval_loss"] == 2.5


def test_a_train_reply_is_three_flower_objects_whatever_the_adapter(monkeypatch):
    from flwr.supercore.task_identity import TaskIdentity

    for name, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):  # Flower sets these in an app process
        monkeypatch.setattr(TaskIdentity, name, value)
    big = {f"l{i}.lora_A.weight": torch.zeros(8, 64).half() for i in range(400)}
    for adapter in (ADAPTER, big):
        content = reply_content(DECLARATIONS, metrics=METRICS, arrays=state_to_arrays(adapter))
        message = Message(content, dst_node_id=1, message_type=MessageType.TRAIN)
        # The message, its RecordDict and the one record; the update, metrics and declarations as three
        # records made 5 (each object is a request at every hop).
        assert len(get_all_nested_objects(message)) == 3


def _content(**records) -> RecordDict:
    return RecordDict(records)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        # The former three-record form (an older or hostile site): refused, not read.
        (
            lambda: _content(
                arrays=state_to_arrays(ADAPTER), metrics=MetricRecord({"num-examples": 1}), site=DECLARATIONS
            ),
            "needs exactly one 'site' config record",
        ),
        (lambda: _content(site=MetricRecord({"num-examples": 1})), "needs exactly one 'site' config record"),
        (lambda: _content(site=ArrayRecord({"w": torch.zeros(2)})), "needs exactly one 'site' config record"),
        (lambda: _content(other=DECLARATIONS), "needs exactly one 'site' config record"),
        (lambda: _content(), "needs exactly one 'site' config record"),
        (lambda: _content(site=ConfigRecord({"metric.num-examples": "199"})), "metric 'num-examples' is not a number"),
        (lambda: _content(site=ConfigRecord({"metric.x": True})), "metric 'x' is not a number"),
        (lambda: _content(site=ConfigRecord({"metric.x": [True, False]})), "metric 'x' is not a number"),
        (lambda: _content(site=ConfigRecord({"metric.x": ["a"]})), "metric 'x' is not a number"),
        (lambda: _content(site=ConfigRecord({"metric.x": b"\x00"})), "metric 'x' is not a number"),
    ],
)
def test_any_other_form_is_refused(content, why):
    with pytest.raises(UpdateRejected, match=why):
        reply_parts(content())


def test_update_keys_beyond_the_packed_pair_are_refused_when_the_update_is_read():
    content = reply_content(DECLARATIONS, metrics=METRICS, arrays=state_to_arrays(ADAPTER))
    content["site"]["arrays.extra"] = b"smuggled"
    parts = reply_parts(content)
    assert parts.arrays is not None
    with pytest.raises(UpdateRejected, match="expected exactly"):
        arrays_to_state(parts.arrays)
