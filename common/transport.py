"""The adapter on the wire: compact in both directions, exact where it matters.

Down: the global adapter travels in fp16 (fp32 when `wire_encoding = "fp32"`); a site trains from what
it received and binds its seal to the hash of exactly those bytes.

Up: a site sends the DELTA between the adapter it trained and the global adapter it received, in
fp16, or in int8 with one fp32 scale per tensor (`max|delta| / 127`, round to nearest), or fp32. The
coordinator checks the seal over the bytes that arrived, then adds the delta to its own fp32 copy of
the global adapter, so aggregation sees the site's adapter to within the encoding's rounding and no
error accumulates across rounds. The encoding runs after the DP noise is added: it is post-processing
and costs no privacy. A delta that does not fit fp16 (|x| > 65504) fails at the site: nothing is sent.

A tensor whose delta is exactly zero (one the site did not train, e.g. FFA-LoRA's frozen A) is left out
of the upload; the coordinator reads an absent tensor as a zero delta, which is what sending the zeros
would have said.

Secure aggregation sends its own masked integer vectors (client/secagg.py) and bypasses `encode_update`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from common.config import WireEncoding
from common.errors import UpdateRejected

StateDict = dict[str, torch.Tensor]
# int8 deltas carry one fp32 scale per tensor, under this prefix plus the tensor's key.
SCALE_PREFIX = "int8-scale/"
INT8_LEVELS = 127
WIRE_DTYPES = {WireEncoding.FP32: np.float32, WireEncoding.FP16: np.float16, WireEncoding.INT8: np.int8}


def down_dtype(encoding: WireEncoding) -> type[np.floating]:
    """The dtype the global adapter travels in."""
    return np.float32 if encoding is WireEncoding.FP32 else np.float16


def encode_global(arrays: Mapping[str, np.ndarray], encoding: WireEncoding) -> dict[str, np.ndarray]:
    dtype = down_dtype(encoding)
    out = {k: np.ascontiguousarray(v, dtype=dtype) for k, v in arrays.items()}
    if not all(np.isfinite(v).all() for v in out.values()):
        raise UpdateRejected(f"the global adapter does not fit {np.dtype(dtype).name}: a value overflows")
    return out


def received_global(state: StateDict) -> StateDict:
    """The global adapter a site received, as fp32 tensors to train from."""
    return {k: v.float() for k, v in state.items()}


def encode_update(update: StateDict, received: StateDict, encoding: WireEncoding) -> StateDict:
    """The site's trained adapter as the wire form of its delta from `received` (fp32 tensors)."""
    if set(update) != set(received):
        raise UpdateRejected("the trained adapter's keys differ from the global adapter's")
    out: StateDict = {}
    for key in sorted(update):
        delta = update[key].detach().float().cpu() - received[key].detach().float().cpu()
        if not delta.any():
            continue  # untrained: absent means a zero delta
        if encoding is WireEncoding.FP32:
            out[key] = delta.contiguous()
        elif encoding is WireEncoding.FP16:
            half = delta.half()
            if not torch.isfinite(half).all():
                raise UpdateRejected(f"the update of {key} does not fit fp16 (|delta| > 65504); nothing was sent")
            out[key] = half.contiguous()
        else:
            peak = float(delta.abs().max()) if delta.numel() else 0.0
            scale = peak / INT8_LEVELS if peak > 0 else 0.0
            q = torch.zeros_like(delta) if scale == 0 else torch.round(delta / scale)
            out[key] = q.clamp(-INT8_LEVELS, INT8_LEVELS).to(torch.int8).contiguous()
            out[SCALE_PREFIX + key] = torch.tensor([scale], dtype=torch.float32)
    return out


def decode_update(
    arrays: Mapping[str, np.ndarray], global_arrays: Mapping[str, np.ndarray], encoding: WireEncoding
) -> dict[str, np.ndarray]:
    """The site's adapter, `global + delta`, in the global adapter's dtype (an absent tensor: a zero delta);
    UpdateRejected when the wire form is not exactly the encoding's: unknown keys, dtypes or shapes, bad
    scales or int8 codes, or nothing at all."""
    wanted = WIRE_DTYPES[encoding]
    scales = {k.removeprefix(SCALE_PREFIX): v for k, v in arrays.items() if k.startswith(SCALE_PREFIX)}
    deltas = {k: v for k, v in arrays.items() if not k.startswith(SCALE_PREFIX)}
    if encoding is not WireEncoding.INT8 and scales:
        raise UpdateRejected(f"{encoding} updates carry no scales, got {len(scales)}")
    extra = sorted(set(deltas) - set(global_arrays))
    if extra:
        raise UpdateRejected(f"adapter keys differ: unexpected {extra[:3]}")
    if not deltas:
        raise UpdateRejected("the update holds no tensor")
    if encoding is WireEncoding.INT8 and set(scales) != set(deltas):
        raise UpdateRejected("an int8 update needs exactly one scale per tensor")
    out: dict[str, np.ndarray] = {}
    for key, w in global_arrays.items():
        if key not in deltas:
            out[key] = w.copy()
            continue
        d = deltas[key]
        if d.dtype != wanted:
            raise UpdateRejected(f"tensor {key} has dtype {d.dtype}, expected {np.dtype(wanted).name} ({encoding})")
        if d.shape != w.shape:
            raise UpdateRejected(f"tensor {key} has shape {tuple(d.shape)}, expected {tuple(w.shape)}")
        value = d.astype(np.float64)
        if encoding is WireEncoding.INT8:
            scale = scales[key]
            if scale.shape != (1,) or scale.dtype != np.float32 or not np.isfinite(scale).all() or scale[0] < 0:
                raise UpdateRejected(f"tensor {key}: its int8 scale must be one finite fp32 value >= 0")
            if (d == -128).any():
                raise UpdateRejected(f"tensor {key}: int8 code -128 is outside the encoding (-127..127)")
            value = value * float(scale[0])
        out[key] = (w.astype(np.float64) + value).astype(w.dtype)
    return out


def wire_bytes(state: Mapping[str, torch.Tensor | np.ndarray]) -> int:
    return sum(int(v.nbytes) for v in state.values())
