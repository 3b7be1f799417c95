"""Train the layers above a frozen prefix from activations computed once per data version.

When every trainable parameter of a model sits in its top layers (LoRA on the top layer, the head), the
layers below compute the same activations for a record at every step of every round, and the gradients of
the parameters above do not depend on how those activations were computed. `build_prefix_cache` runs the
frozen layers once over a dataset and returns a `PrefixCache`: `top` runs only the layers from the split up
and the head, from the cached states; `dataset` holds (states, attention mask, label) rows in the dataset's
order. Training `top` on `dataset` (client/train.py `train_round(..., prefix=cache)`) trains the same
parameters with the same per-record gradients, so DP-SGD, its clipping and its accounting are unchanged.

Checked, not assumed:
- the split is the lowest encoder layer holding a trainable parameter; a trainable parameter anywhere below
  it or outside the layers and the head (embeddings, a pooler) means no cache;
- at build time the top's logits on the first records are compared with the whole model's (eval mode);
  beyond `CHECK_TOLERANCE`, no cache;
- `PrefixCache.valid_for` re-checks the split, the records and every prefix parameter (adapter tensors
  by value, base weights by identity and torch's in-place version counter) before a cache is reused.

The prefix runs in eval mode: no dropout below the split (the layers above keep theirs). Without dropout
(`[training] dropout = 0`) cached and uncached training are the same computation.

Supported: classification with `task.pooling = "mean"` (common.model.MeanPooledClassifier) over a
BERT-style encoder (an `encoder.layer` list and a bidirectional mask, e.g. all-MiniLM-L6-v2). Any other
model: `build_prefix_cache` returns None and the caller trains the whole model as before.

A holder that keeps caches across rounds (the warm site runtime keeps one per data version):

    caches = PrefixCaches()
    prefix = caches.get(model, dataset, device=device)   # built once, reused while valid; None if n/a
    train_round(model, dataset, ..., prefix=prefix)
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

from common.model import MeanPooledClassifier, pool_mean_scaled

log = logging.getLogger("silo.prefix_cache")
# Training from cached states, no input of the top needs a gradient, and torch says so at every backward
# through each of Opacus' per-sample hooks; the gradients Opacus needs (of the parameters) are unaffected.
warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed with respect")

# Largest |top logits - model logits| accepted at build time, relative to the logits' scale: float32 runs
# the same operations in the same order here, so the two agree to ~1e-6; a wrong mask or layer is O(1).
CHECK_TOLERANCE = 1e-4
# Records whose logits are compared at build time.
CHECK_RECORDS = 8
# Records per forward pass while the prefix is computed (no gradients are kept, so memory is small).
BUILD_BATCH = 128


class _StopForward(Exception):
    """Raised by the capture hook once the split's input is known: the layers above are not run."""


def _inner(model: torch.nn.Module) -> torch.nn.Module:
    """The model under PEFT's and Opacus' wrappers."""
    inner = getattr(model, "_module", model)
    get_base = getattr(inner, "get_base_model", None)
    return get_base() if callable(get_base) else inner


def _layers(model: torch.nn.Module) -> tuple[MeanPooledClassifier, torch.nn.ModuleList] | None:
    inner = _inner(model)
    if not isinstance(inner, MeanPooledClassifier):
        return None
    layers = getattr(getattr(inner.encoder, "encoder", None), "layer", None)
    if not isinstance(layers, torch.nn.ModuleList) or not len(layers):
        return None
    return inner, layers


def trainable_split(model: torch.nn.Module) -> int | None:
    """The lowest encoder layer holding a trainable parameter (the number of layers when only the head
    trains), or None when a trainable parameter sits elsewhere below the head or the layout is unknown."""
    found = _layers(model)
    if found is None:
        return None
    inner, layers = found
    layer_of = {id(p): i for i, layer in enumerate(layers) for p in layer.parameters()}
    head = {id(p) for p in inner.classifier.parameters()}
    split = len(layers)
    for param in inner.parameters():
        if not param.requires_grad or id(param) in head:
            continue
        if id(param) not in layer_of:
            return None  # trained below every layer (embeddings) or beside them (a pooler): no cache
        split = min(split, layer_of[id(param)])
    return split


class _TopOfMeanPooled(torch.nn.Module):
    """The encoder's layers from `split` up, mean pooling and the head, from the split's input states."""

    def __init__(self, inner: MeanPooledClassifier, layers: torch.nn.ModuleList, split: int) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(list(layers)[split:])
        self.classifier = inner.classifier
        self.encoder_config = inner.encoder.config

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: Any) -> Any:
        from transformers.masking_utils import create_bidirectional_mask
        from transformers.modeling_outputs import SequenceClassifierOutput

        if attention_mask is None:
            attention_mask = torch.ones(hidden_states.shape[:2], dtype=torch.long, device=hidden_states.device)
        mask = create_bidirectional_mask(
            config=self.encoder_config, inputs_embeds=hidden_states, attention_mask=attention_mask
        )
        for layer in self.layers:
            hidden_states = layer(hidden_states, mask, None)
        return SequenceClassifierOutput(logits=self.classifier(pool_mean_scaled(hidden_states, attention_mask)))


@dataclass
class PrefixCache:
    """The split's input states of every record of one dataset, and the module that trains from them."""

    split: int
    top: torch.nn.Module
    dataset: TensorDataset  # (states, attention mask, label) per record, in the source dataset's order
    records_sha256: str
    prefix_state: tuple[Any, ...] = field(repr=False, default=())

    def valid_for(self, model: torch.nn.Module, dataset: TensorDataset) -> bool:
        """Same trainable split, same records, and no prefix parameter changed since the build."""
        return (
            trainable_split(model) == self.split
            and _records_sha256(dataset) == self.records_sha256
            and _prefix_state(model, self.split) == self.prefix_state
        )


def _records_sha256(dataset: TensorDataset) -> str:
    h = hashlib.sha256()
    for t in dataset.tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _prefix_state(model: torch.nn.Module, split: int) -> tuple[Any, ...]:
    """What the cached states depend on: every parameter and buffer below the split. Adapter tensors (LoRA
    below the split, frozen this round but replaced by each round's global adapter) by value; base
    weights, which nothing should touch, by identity and in-place version counter (cheap for any size)."""
    found = _layers(model)
    if found is None:
        return ()
    inner, layers = found
    above = {id(p) for layer in list(layers)[split:] for p in layer.parameters()}
    above |= {id(p) for p in inner.classifier.parameters()}
    out: list[Any] = []
    for name, tensor in [*inner.named_parameters(), *inner.named_buffers()]:
        if id(tensor) in above:
            continue
        if "lora_" in name:
            out.append((name, hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()))
        else:
            out.append((name, tensor.data_ptr(), tensor._version))
    return tuple(out)


@torch.no_grad()
def _split_inputs(model: torch.nn.Module, layers: torch.nn.ModuleList, split: int, batch: tuple[Any, ...]) -> Any:
    """The hidden states entering layer `split` (leaving the last layer when `split` = the layer count)."""
    captured: list[torch.Tensor] = []

    def before(_module: Any, args: tuple[Any, ...]) -> None:
        captured.append(args[0].detach())
        raise _StopForward

    def after(_module: Any, _args: Any, output: Any) -> None:
        captured.append((output[0] if isinstance(output, tuple) else output).detach())
        raise _StopForward

    handle = (
        layers[split].register_forward_pre_hook(before)
        if split < len(layers)
        else layers[-1].register_forward_hook(after)
    )
    try:
        model(batch[0], attention_mask=batch[1])
    except _StopForward:
        pass
    finally:
        handle.remove()
    if len(captured) != 1:
        raise RuntimeError("the prefix cache's capture hook did not run exactly once")
    return captured[0]


def build_prefix_cache(
    model: torch.nn.Module, dataset: TensorDataset, *, device: torch.device, split: int | None = None
) -> PrefixCache | None:
    """The split's input states of `dataset`'s records under `model` (eval mode), or None when no split
    applies (see the module docstring). `split`: cache at this layer instead (it must be at or below the
    trainable split); the default is the trainable split itself, which skips the most work."""
    found, trainable = _layers(model), trainable_split(model)
    if found is None or trainable is None or trainable < 1 or not len(dataset):
        return None
    split = trainable if split is None else split
    if not 1 <= split <= trainable:
        raise ValueError(f"a prefix cache at layer {split} would freeze trained layers (trainable from {trainable})")
    inner, layers = found
    was_training = model.training
    model.eval()
    try:
        states = [
            _split_inputs(model, layers, split, tuple(t.to(device) for t in batch))
            for batch in DataLoader(dataset, batch_size=BUILD_BATCH)
        ]
        top = _TopOfMeanPooled(inner, layers, split)
        cached = TensorDataset(torch.cat(states), *(t.to(device) for t in dataset.tensors[1:]))
        if not _top_matches(model, top, dataset, cached, device):
            return None
    finally:
        model.train(was_training)
    return PrefixCache(
        split=split,
        top=top,
        dataset=cached,
        records_sha256=_records_sha256(dataset),
        prefix_state=_prefix_state(model, split),
    )


@torch.no_grad()
def _top_matches(
    model: torch.nn.Module, top: torch.nn.Module, dataset: TensorDataset, cached: TensorDataset, device: torch.device
) -> bool:
    n = min(CHECK_RECORDS, len(dataset))
    ids, attention = (t[:n].to(device) for t in dataset.tensors[:2])
    whole = model(ids, attention_mask=attention).logits.float()
    from_cache = top(cached.tensors[0][:n], attention_mask=cached.tensors[1][:n]).logits.float()
    error = float((whole - from_cache).abs().max()) / max(float(whole.abs().max()), 1.0)
    if error > CHECK_TOLERANCE:
        log.warning("[silo] prefix cache not used: its logits differ from the model's by %.2e", error)
        return False
    return True


class PrefixCaches:
    """Caches kept across rounds: one per dataset role ("train", "holdout"), rebuilt when no longer valid."""

    def __init__(self) -> None:
        self._caches: dict[str, PrefixCache] = {}
        self.builds = 0  # how many times a cache was computed (tests and logs read it)

    def get(
        self, model: torch.nn.Module, dataset: TensorDataset, *, device: torch.device, role: str = "train"
    ) -> PrefixCache | None:
        cache = self._caches.get(role)
        if cache is not None and cache.valid_for(model, dataset):
            return cache
        self._caches.pop(role, None)
        cache = build_prefix_cache(model, dataset, device=device)
        if cache is not None:
            self._caches[role] = cache
            self.builds += 1
        return cache
