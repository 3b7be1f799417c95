"""Tensors as one Flower ConfigRecord of two byte strings: every tensor's bytes in one, their layout in the other.

Flower 1.41 sends every object of a message (the message, its RecordDict, each record, each Array and
each Array's chunks) on its own, pushed and pulled through the SuperLink one request at a time (two at
once). An adapter of 40 tensors made ~45 objects a message, and those round trips, not the bytes, were
most of a round's messaging (3-4 s each way for a 1.2M-parameter adapter on 2 cores). Packed into an
ArrayRecord of two arrays a message still held 8 objects (the record, two arrays and a chunk each); as
byte values of one ConfigRecord, which has no children, it holds 3: the message, its RecordDict and this
record. Flower's HTTP transport carries a protobuf object of up to 2 GiB, so one record holds any
adapter Silo sends (a rank-8 adapter of a 7B model is ~17 MB in fp16).

`pack` keeps each tensor's dtype, shape and raw bytes exactly (bf16 included), so `hash_state` of what
`unpack` returns equals the sender's. `unpack` reads input from the network: anything but exactly this
form (other arrays, a layout that does not parse or does not add up to the packed bytes, unknown dtypes,
duplicate keys) is refused with `UpdateRejected` before a tensor is built.
"""

from __future__ import annotations

import json
import math

import torch
from flwr.app import ConfigRecord

from common.errors import UpdateRejected

StateDict = dict[str, torch.Tensor]

PACKED = "packed"  # bytes: every tensor's raw bytes, in layout order
LAYOUT = "layout"  # bytes: UTF-8 JSON [[key, dtype, [dims...]], ...]
DTYPES = {
    str(d).removeprefix("torch."): d
    for d in (
        torch.float16,
        torch.bfloat16,
        torch.float32,
        torch.float64,
        torch.int8,
        torch.uint8,
        torch.int32,
        torch.uint32,
        torch.int64,
        torch.uint64,
    )
}
MAX_TENSORS = 100_000
MAX_LAYOUT_BYTES = 16 << 20


def pack(state: StateDict) -> ConfigRecord:
    """`state`, in its key order, as the two-value record `unpack` reads."""
    layout, parts = [], []
    for key, tensor in state.items():
        t = tensor.detach().cpu().contiguous()
        name = str(t.dtype).removeprefix("torch.")
        if name not in DTYPES:
            raise UpdateRejected(f"tensor {key} has dtype {name}, which does not travel")
        layout.append([key, name, list(t.shape)])
        parts.append(t.reshape(-1).view(torch.uint8) if t.numel() else torch.zeros(0, dtype=torch.uint8))
    packed = torch.cat(parts).numpy().tobytes() if parts else b""
    return ConfigRecord({LAYOUT: json.dumps(layout).encode(), PACKED: packed})


def unpack(record: ConfigRecord) -> StateDict:
    """The tensors `pack` was given; UpdateRejected for any other form."""
    if not isinstance(record, ConfigRecord) or set(record.keys()) != {LAYOUT, PACKED}:
        got = sorted(record)[:4] if isinstance(record, ConfigRecord) else type(record).__name__
        raise UpdateRejected(f"malformed arrays: expected exactly {LAYOUT!r} and {PACKED!r}, got {got}")
    raw_layout, packed = record[LAYOUT], record[PACKED]
    if not (isinstance(raw_layout, bytes) and isinstance(packed, bytes)):
        kinds = f"{type(raw_layout).__name__} and {type(packed).__name__}"
        raise UpdateRejected(f"malformed arrays: {LAYOUT!r} and {PACKED!r} must be bytes, got {kinds}")
    if len(raw_layout) > MAX_LAYOUT_BYTES:
        raise UpdateRejected(f"malformed arrays: a layout of {len(raw_layout)} bytes")
    entries = _layout(raw_layout)
    sizes = [math.prod(shape) * DTYPES[dtype].itemsize for _, dtype, shape in entries]
    if sum(sizes) != len(packed):
        raise UpdateRejected(f"malformed arrays: the layout describes {sum(sizes)} bytes, {len(packed)} arrived")
    data = torch.frombuffer(bytearray(packed), dtype=torch.uint8) if packed else torch.zeros(0, dtype=torch.uint8)
    out: StateDict = {}
    offset = 0
    for (key, dtype, shape), size in zip(entries, sizes, strict=True):
        out[key] = data[offset : offset + size].clone().view(DTYPES[dtype]).reshape(shape)
        offset += size
    return out


def _layout(raw: bytes) -> list[tuple[str, str, list[int]]]:
    try:
        entries = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise UpdateRejected("malformed arrays: the layout is not JSON") from None
    if not isinstance(entries, list) or len(entries) > MAX_TENSORS:
        raise UpdateRejected("malformed arrays: the layout must be a list of at most 100000 tensors")
    out: list[tuple[str, str, list[int]]] = []
    seen: set[str] = set()
    for entry in entries:
        if not (isinstance(entry, list) and len(entry) == 3):
            raise UpdateRejected(f"malformed arrays: bad layout entry {str(entry)[:80]}")
        key, dtype, shape = entry
        ok = isinstance(key, str) and key not in seen and dtype in DTYPES and isinstance(shape, list)
        ok = ok and len(shape) <= 8
        ok = ok and all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 1 << 40 for d in shape)
        if not ok:
            raise UpdateRejected(f"malformed arrays: bad layout entry {str(entry)[:80]}")
        seen.add(key)
        out.append((key, dtype, shape))
    return out
