"""Tensors as one Flower ArrayRecord of two arrays: every tensor's bytes in one, their layout in the other.

Flower 1.41 sends each Array of a message as its own object, pushed and pulled through the SuperLink one
request at a time (two at once when pulling). An adapter of 40 tensors made ~45 objects a message, and
those round trips, not the bytes, were most of a round's messaging (3-4 s each way for a 1.2M-parameter
adapter on 2 cores). Packed, a message holds a handful of objects whatever the adapter's size.

`pack` keeps each tensor's dtype, shape and raw bytes exactly (bf16 included), so `hash_state` of what
`unpack` returns equals the sender's. `unpack` reads input from the network: anything but exactly this
form (other arrays, a layout that does not parse or does not add up to the packed bytes, unknown dtypes,
duplicate keys) is refused with `UpdateRejected` before a tensor is built.
"""

from __future__ import annotations

import json
import math

import torch
from flwr.app import ArrayRecord

from common.errors import UpdateRejected

StateDict = dict[str, torch.Tensor]

PACKED = "packed"  # uint8: every tensor's raw bytes, in layout order
LAYOUT = "layout"  # uint8: UTF-8 JSON [[key, dtype, [dims...]], ...]
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


def _bytes_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.zeros(0, dtype=torch.uint8)


def pack(state: StateDict) -> ArrayRecord:
    """`state`, in its key order, as the two-array record `unpack` reads."""
    layout, parts = [], []
    for key, tensor in state.items():
        t = tensor.detach().cpu().contiguous()
        name = str(t.dtype).removeprefix("torch.")
        if name not in DTYPES:
            raise UpdateRejected(f"tensor {key} has dtype {name}, which does not travel")
        layout.append([key, name, list(t.shape)])
        parts.append(t.reshape(-1).view(torch.uint8) if t.numel() else torch.zeros(0, dtype=torch.uint8))
    packed = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.uint8)
    return ArrayRecord({LAYOUT: _bytes_tensor(json.dumps(layout).encode()), PACKED: packed})


def unpack(record: ArrayRecord) -> StateDict:
    """The tensors `pack` was given; UpdateRejected for any other form."""
    if set(record.keys()) != {LAYOUT, PACKED}:
        raise UpdateRejected(f"malformed arrays: expected exactly {LAYOUT!r} and {PACKED!r}, got {sorted(record)[:4]}")
    try:
        raw_layout, packed = record[LAYOUT].numpy(), record[PACKED].numpy()
    except (TypeError, ValueError, RuntimeError) as err:
        raise UpdateRejected(f"malformed arrays: {type(err).__name__}") from None
    for name, a in ((LAYOUT, raw_layout), (PACKED, packed)):
        if a.dtype.name != "uint8" or a.ndim != 1:
            raise UpdateRejected(f"malformed arrays: {name!r} must be 1-D uint8, got {a.dtype.name} {a.shape}")
    if raw_layout.size > MAX_LAYOUT_BYTES:
        raise UpdateRejected(f"malformed arrays: a layout of {raw_layout.size} bytes")
    entries = _layout(raw_layout.tobytes())
    sizes = [math.prod(shape) * DTYPES[dtype].itemsize for _, dtype, shape in entries]
    if sum(sizes) != packed.size:
        raise UpdateRejected(f"malformed arrays: the layout describes {sum(sizes)} bytes, {packed.size} arrived")
    data = torch.from_numpy(packed.copy())
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
