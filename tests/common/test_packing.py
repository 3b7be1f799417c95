"""common/packing.py: an adapter crosses Flower as one record of two byte strings whatever its size,
bit-exact, and a packed record that is anything but exactly what `pack` makes is refused before a tensor is
built."""

from __future__ import annotations

import json

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

from common.adapter import hash_state, state_to_arrays
from common.errors import UpdateRejected
from common.packing import LAYOUT, PACKED, pack, unpack


def _adapter(tensors: int = 40) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {f"layer.{i}.lora_{'AB'[i % 2]}.weight": torch.randn(8, 64, generator=g).half() for i in range(tensors)}


def test_every_dtype_and_shape_comes_back_bit_for_bit():
    state = {
        "fp16": torch.randn(3, 5).half(),
        "bf16": torch.randn(4).bfloat16(),
        "fp32": torch.tensor([float("inf"), -0.0, 1e-45]),
        "int8": torch.tensor([-127, 0, 127], dtype=torch.int8),
        "uint64": torch.tensor([2**64 - 1, 0], dtype=torch.uint64),
        "empty": torch.zeros(0, 7),
        "scalar": torch.tensor(3.5),
    }
    back = unpack(pack(state))
    assert hash_state(back) == hash_state(state)
    assert {k: (v.dtype, tuple(v.shape)) for k, v in back.items()} == {
        k: (v.dtype, tuple(v.shape)) for k, v in state.items()
    }


def test_a_message_carries_a_handful_of_objects_however_many_tensors(monkeypatch):
    from flwr.supercore.task_identity import TaskIdentity

    for name, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):  # Flower sets these in an app process
        monkeypatch.setattr(TaskIdentity, name, value)

    def objects(tensors: int) -> int:
        content = RecordDict({"arrays": state_to_arrays(_adapter(tensors))})
        return len(get_all_nested_objects(Message(content, dst_node_id=1, message_type=MessageType.TRAIN)))

    # Message, RecordDict and the packed record (a ConfigRecord has no children): 3, for 4 tensors or 400.
    # An ArrayRecord of the same two arrays made 7 (the record, two arrays, a chunk each).
    assert objects(4) == objects(400) == 3
    unpacked = RecordDict({"arrays": ArrayRecord({k: v for k, v in _adapter(40).items()})})
    assert len(get_all_nested_objects(Message(unpacked, dst_node_id=1, message_type=MessageType.TRAIN))) > 40


def _record(layout: object, packed: bytes, **extra: object) -> ConfigRecord:
    return ConfigRecord({LAYOUT: json.dumps(layout).encode(), PACKED: packed, **extra})


GOOD = [["w", "float16", [2, 2]]]


@pytest.mark.parametrize(
    ("record", "why"),
    [
        (lambda: ArrayRecord({"w": torch.zeros(2, 2).half()}), "expected exactly"),  # an unpacked form
        (
            lambda: ArrayRecord({LAYOUT: torch.zeros(2, dtype=torch.uint8), PACKED: torch.zeros(8, dtype=torch.uint8)}),
            "expected exactly",
        ),  # the two-array form of before: an ArrayRecord is not accepted at all
        (lambda: _record(GOOD, b"\0" * 8, extra=b"\0"), "expected exactly"),
        (lambda: ConfigRecord({LAYOUT: json.dumps(GOOD), PACKED: b"\0" * 8}), "must be bytes"),  # str layout
        (lambda: ConfigRecord({LAYOUT: json.dumps(GOOD).encode(), PACKED: [0] * 8}), "must be bytes"),
        (lambda: _record(GOOD, b"\0" * 7), "describes 8 bytes, 7 arrived"),
        (lambda: _record(GOOD, b"\0" * 9), "describes 8 bytes, 9 arrived"),
        (lambda: _record([["w", "float16", [2, 2]], ["w", "float16", [0]]], b"\0" * 8), "bad layout entry"),
        (lambda: _record([["w", "complex64", [1]]], b"\0" * 8), "bad layout entry"),
        (lambda: _record([["w", "float16", [-2, -2]]], b"\0" * 8), "bad layout entry"),
        (lambda: _record([["w", "float16", [True, 4]]], b"\0" * 8), "bad layout entry"),
        (lambda: _record([["w", "float16", [1 << 62, 1 << 62]]], b"\0" * 8), "bad layout entry"),
        (lambda: _record([["w", "float16"]], b"\0" * 8), "bad layout entry"),
        (lambda: _record({"w": 1}, b""), "a list of at most"),
        (lambda: _record("x", b""), "a list of at most"),
    ],
)
def test_anything_but_the_packed_form_is_refused(record, why):
    with pytest.raises(UpdateRejected, match=why):
        unpack(record())


def test_a_layout_that_is_not_json_or_too_long_is_refused():
    with pytest.raises(UpdateRejected, match="not JSON"):
        unpack(ConfigRecord({LAYOUT: b"\xff\xfe", PACKED: b""}))
    from common.packing import MAX_LAYOUT_BYTES

    with pytest.raises(UpdateRejected, match="a layout of"):
        unpack(ConfigRecord({LAYOUT: b" " * (MAX_LAYOUT_BYTES + 1), PACKED: b""}))
