"""The LoRA adapter as it crosses the wire and lands on disk.

Only adapter tensors travel: the LoRA A/B matrices (and, for classification, the trained head),
never base weights and never records. `save_embedding_layers=False` matters: when `lm_head` or an
embedding is a LoRA target, PEFT would otherwise add that layer's full base weight to the state.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from flwr.app import ConfigRecord
from peft import PeftModel, get_peft_model_state_dict, set_peft_model_state_dict

from common.errors import UpdateRejected
from common.packing import pack, unpack

StateDict = dict[str, torch.Tensor]


def adapter_state(model: PeftModel) -> StateDict:
    """A detached CPU copy of the adapter's trainable tensors, in PEFT's saved-key format."""
    return {
        k: v.detach().to("cpu").clone()
        for k, v in get_peft_model_state_dict(model, save_embedding_layers=False).items()
    }


def load_adapter_state(model: PeftModel, state: StateDict) -> None:
    """Load `state` into `model`, refusing missing or unexpected keys and wrong shapes."""
    expected = get_peft_model_state_dict(model, save_embedding_layers=False)
    check_compatible(state, {k: (tuple(v.shape), v.dtype) for k, v in expected.items()})
    result = set_peft_model_state_dict(model, state)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise UpdateRejected(f"adapter has keys the model does not: {unexpected[:3]}")


def check_compatible(state: StateDict, spec: dict[str, tuple[tuple[int, ...], torch.dtype]]) -> None:
    missing = sorted(set(spec) - set(state))
    extra = sorted(set(state) - set(spec))
    if missing or extra:
        raise UpdateRejected(f"adapter keys differ: missing {missing[:3]}, unexpected {extra[:3]}")
    for key, (shape, _dtype) in spec.items():
        if tuple(state[key].shape) != shape:
            raise UpdateRejected(f"adapter tensor {key} has shape {tuple(state[key].shape)}, expected {shape}")


def state_to_arrays(state: StateDict) -> ConfigRecord:
    """The tensors as they travel: one packed record of two byte strings (common/packing.py)."""
    return pack(state)


def arrays_to_state(arrays: ConfigRecord) -> StateDict:
    """The tensors of a record `state_to_arrays` made; UpdateRejected for anything else."""
    return unpack(arrays)


def state_to_numpy(state: StateDict) -> dict[str, np.ndarray]:
    return {
        k: v.detach().cpu().float().numpy() if v.dtype == torch.bfloat16 else v.detach().cpu().numpy()
        for k, v in state.items()
    }


def numpy_to_state(arrays: dict[str, np.ndarray], like: StateDict | None = None) -> StateDict:
    out = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    if like is not None:
        out = {k: v.to(like[k].dtype) for k, v in out.items()}
    return out


def hash_state(state: StateDict) -> str:
    """sha256 over keys, dtypes, shapes and raw bytes, in key order: the update's identity."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(json.dumps(list(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def state_nbytes(state: StateDict) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
