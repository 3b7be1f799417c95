"""Local LoRA training and evaluation at a site.

The loss is a per-sample mean (each record's mean token loss, then the mean over the batch), not
the token mean over the whole batch that transformers computes: with DP-SGD, a record's gradient
must not depend on the other records in its batch, or per-sample clipping does not bound it.

FedProx's proximal term mu/2 * ||w - w_global||^2 is applied as a decoupled step after each
optimiser step (w -= lr * mu * (w - w_global)). It uses no data, so it is DP post-processing and
works the same with and without Opacus (whose optimiser would drop a gradient added to the loss).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from client.prepare import IGNORE_INDEX
from common.config import Optimizer, Precision, TaskConfig, TaskType, TrainingConfig
from common.errors import ConfigError

# Wraps (model, optimizer, loader) for DP-SGD: client.privacy.make_private with the round's settings.
PrivacyWrapper = Callable[[torch.nn.Module, torch.optim.Optimizer, DataLoader], Any]


@dataclass(frozen=True)
class TrainResult:
    loss: float  # mean per-record training loss over every record the round trained on
    steps: int  # optimiser steps taken
    num_examples: int  # size of the training split (FedAvg's weight)
    seconds: float
    # client.privacy.PrivateTraining when trained under DP: its accountant history goes to the ledger.
    private: Any = None


@dataclass(frozen=True)
class EvalResult:
    loss: float
    num_examples: int
    accuracy: float | None = None  # classification only
    macro_f1: float | None = None  # classification only

    def metrics(self) -> dict[str, int | float | list[int] | list[float]]:
        """As a Flower MetricRecord takes them."""
        out: dict[str, int | float | list[int] | list[float]] = {
            "eval_loss": self.loss,
            "num-examples": float(self.num_examples),
        }
        if self.accuracy is not None:
            out["accuracy"] = self.accuracy
        if self.macro_f1 is not None:
            out["macro_f1"] = self.macro_f1
        return out


def autocast_context(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on a GPU that has it (AUTO), fp16/bf16 when asked, plain fp32 otherwise."""
    if device.type != "cuda" or precision is Precision.FP32:
        return contextlib.nullcontext()
    if precision is Precision.FP16:
        return torch.autocast("cuda", dtype=torch.float16)
    if precision is Precision.BF16 or torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def per_sample_loss(model: torch.nn.Module, batch: tuple[torch.Tensor, ...], task: TaskConfig) -> torch.Tensor:
    """One loss per record in the batch (shape [B])."""
    input_ids, attention, labels = batch
    # Positional inputs: a prefix cache's top model (client/prefix_cache.py) takes hidden states there.
    logits = model(input_ids, attention_mask=attention).logits
    if task.type is TaskType.CLASSIFICATION:
        return F.cross_entropy(logits.float(), labels, reduction="none")
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    token_loss = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(shift_labels.shape)
    valid = (shift_labels != IGNORE_INDEX).float()
    return (token_loss * valid).sum(1) / valid.sum(1).clamp(min=1.0)


def _batches(loader: DataLoader, device: torch.device) -> Iterator[tuple[torch.Tensor, ...]]:
    for batch in loader:
        yield tuple(t.to(device) for t in batch)


def round_plan_steps(dataset_size: int, training: TrainingConfig) -> tuple[int, int]:
    """(batch size, optimiser steps) a round will take: what the ledger reserves before training."""
    batch = min(training.batch_size, dataset_size)
    steps = training.epochs * math.ceil(dataset_size / batch)
    return batch, min(steps, training.max_steps) if training.max_steps else steps


def make_optimizer(params: list[torch.nn.Parameter], training: TrainingConfig) -> Any:
    """A fresh optimiser over `params` for one round, as `[training] optimizer` names it."""
    if training.optimizer == Optimizer.SGD:
        return torch.optim.SGD(params, lr=training.learning_rate)
    return torch.optim.AdamW(params, lr=training.learning_rate, weight_decay=0.0)


def set_dropout(model: torch.nn.Module, p: float) -> None:
    """Every dropout of `model` drops with probability `p`: `nn.Dropout` layers (LoRA's own included) and
    the `attention_dropout` rate that Llama-style attention reads at each call."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd):
            module.p = p
        attention: Any = module  # a plain float attribute, which torch's Module typing does not know
        if isinstance(getattr(attention, "attention_dropout", None), float):
            attention.attention_dropout = p


class Phase(StrEnum):
    """What a round trains; recorded with the round in the site's ledger."""

    PROBE = "probe"  # the classification head only (a DP linear probe: LoRA stays as the global adapter has it)
    LORA = "lora"  # every trainable tensor of the adapter: LoRA and, for classification, the head


def round_phase(server_round: int, training: TrainingConfig) -> Phase:
    """Rounds 1..`training.probe_rounds` of a run are linear-probe rounds (Ke et al. 2024: align the head
    under DP before LoRA moves the features); later rounds train LoRA and the head."""
    return Phase.PROBE if server_round <= training.probe_rounds else Phase.LORA


@contextlib.contextmanager
def training_phase(model: torch.nn.Module, phase: Phase) -> Iterator[None]:
    """Within: only what `phase` trains requires gradients (build a prefix cache and train inside)."""
    if phase is Phase.LORA:
        yield
        return
    frozen = [p for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]
    if not any(p.requires_grad for n, p in model.named_parameters() if "lora_" not in n):
        raise ConfigError("`training.probe_rounds` trains a classification head, and this model has none to train.")
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)


def train_round(
    model: torch.nn.Module,
    dataset: TensorDataset,
    *,
    task: TaskConfig,
    training: TrainingConfig,
    device: torch.device,
    global_state: dict[str, torch.Tensor] | None = None,
    proximal_mu: float = 0.0,
    privacy: PrivacyWrapper | None = None,
    progress: Callable[[int, float], None] | None = None,
    prefix: Any = None,
) -> TrainResult:
    """`training.epochs` local passes (capped at `training.max_steps`); returns the mean loss.

    Each optimiser step takes one logical batch (`training.batch_size`, Poisson-sampled under DP), run in
    passes of at most `training.physical_batch_size` records whose gradients add up to the logical batch's.
    `prefix` (a client.prefix_cache.PrefixCache built for `model` and `dataset`): train the layers above
    the cached activations instead of the whole model; the same parameters, the same gradients."""
    t0 = time.perf_counter()
    if training.dropout is not None:
        set_dropout(model, training.dropout)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, training)
    trained, data = (model, dataset) if prefix is None else (prefix.top, prefix.dataset)
    logical = round_plan_steps(len(dataset), training)[0]
    physical = min(training.physical_batch_size or logical, logical)
    # `training.seed` fixes the shuffling of non-private training only, on its own generator: torch's global
    # generator is never seeded here, and under DP the privacy wrapper replaces this loader's sampling with
    # fresh OS-seeded randomness (client/privacy.py).
    loader: Any = DataLoader(
        data, batch_size=logical, shuffle=True, generator=torch.Generator().manual_seed(training.seed)
    )
    private = None
    reduce_loss: Callable[[torch.Tensor], Any] = torch.mean
    trained.train()  # Opacus validates the module in training mode
    if privacy is not None:
        # Poisson sampling, per-sample clipping and noise; empty draws become noise-only steps
        # inside the private loader (counted by its accountant), so no batch here is empty.
        private = privacy(trained, optimizer, loader)
        if physical < logical:
            private.limit_physical_batch(physical)
        trained, optimizer, loader = private.model, private.optimizer, private.data_loader
        reduce_loss = private.reduce_loss
    prox = _proximal_targets(model, global_state) if proximal_mu > 0 and global_state is not None else None

    trained.train()
    model.train()
    steps, loss_sum, records = 0, 0.0, 0
    optimizer.zero_grad(set_to_none=True)
    for _ in range(training.epochs):
        for batch, share, last in _passes(loader, device, physical=None if private else physical):
            with autocast_context(device, training.precision):
                per_sample = per_sample_loss(trained, batch, task)
            # Without DP a logical batch's passes add up to its mean loss; under DP Opacus scales each
            # pass's per-record gradients itself and divides the noised sum by the expected batch.
            (reduce_loss(per_sample) * share).backward()
            loss_sum += float(per_sample.detach().sum())
            records += int(per_sample.shape[0])
            if not last:
                continue
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if private is not None and not private.step_completed():
                continue  # a pass of a logical batch: clipped and summed, not yet noised nor stepped
            if prox is not None:
                _proximal_step(prox, lr=training.learning_rate, mu=proximal_mu)
            steps += 1
            if progress is not None:
                progress(steps, loss_sum / max(records, 1))
            if training.max_steps and steps >= training.max_steps:
                break
        if training.max_steps and steps >= training.max_steps:
            break
    return TrainResult(
        loss=loss_sum / max(records, 1),
        steps=steps,
        num_examples=len(dataset),
        seconds=time.perf_counter() - t0,
        private=private,
    )


def _passes(
    loader: Any, device: torch.device, *, physical: int | None
) -> Iterator[tuple[tuple[torch.Tensor, ...], float, bool]]:
    """(pass, its share of the logical batch, whether it ends the logical batch) for each pass.

    `physical` None: the loader already yields passes (Opacus splits logical batches itself, and its
    optimizer knows where each ends), so each is yielded whole."""
    for batch in _batches(loader, device):
        if physical is None:
            yield batch, 1.0, True
            continue
        size = int(batch[0].shape[0])
        chunks = list(zip(*(t.split(physical) for t in batch), strict=True))
        for i, chunk in enumerate(chunks):
            yield chunk, int(chunk[0].shape[0]) / size, i == len(chunks) - 1


def _proximal_targets(
    model: torch.nn.Module, global_state: dict[str, torch.Tensor]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Pairs (trainable parameter, its global value), matched by PEFT's saved-key naming."""
    from peft import get_peft_model_state_dict

    inner = getattr(model, "_module", model)  # Opacus' GradSampleModule keeps the model in _module
    saved = get_peft_model_state_dict(inner, save_embedding_layers=False)
    by_data = {v.data_ptr(): k for k, v in saved.items()}
    pairs = []
    for p in inner.parameters():
        if p.requires_grad and p.data_ptr() in by_data:
            pairs.append((p, global_state[by_data[p.data_ptr()]].to(p.device, p.dtype)))
    return pairs


@torch.no_grad()
def _proximal_step(pairs: list[tuple[torch.Tensor, torch.Tensor]], *, lr: float, mu: float) -> None:
    for p, g in pairs:
        p.sub_(lr * mu * (p - g))


@torch.no_grad()
def per_record_outcomes(
    model: torch.nn.Module, dataset: TensorDataset, *, task: TaskConfig, device: torch.device, batch_size: int = 32
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(loss, prediction, gold label) per record; predictions and labels for classification only.
    Exact values about each record: they stay at the site (client.privacy.release_evaluation noises them)."""
    model.eval()
    losses: list[torch.Tensor] = []
    preds: list[torch.Tensor] = []
    golds: list[torch.Tensor] = []
    for batch in DataLoader(dataset, batch_size=batch_size):
        batch = tuple(t.to(device) for t in batch)
        input_ids, attention, labels = batch
        if task.type is TaskType.CLASSIFICATION:
            logits = model(input_ids, attention_mask=attention).logits.float()
            losses.append(F.cross_entropy(logits, labels, reduction="none").cpu())
            preds.append(logits.argmax(-1).cpu())
            golds.append(labels.cpu())
        else:
            losses.append(per_sample_loss(model, batch, task).float().cpu())
    loss = torch.cat(losses) if losses else torch.zeros(0)
    if task.type is not TaskType.CLASSIFICATION:
        return loss, None, None
    return loss, torch.cat(preds), torch.cat(golds)


def evaluate(
    model: torch.nn.Module, dataset: TensorDataset, *, task: TaskConfig, device: torch.device, batch_size: int = 32
) -> EvalResult:
    """Exact mean per-record loss; accuracy and macro-F1 for classification. For use at the site (and in
    benchmarks): what a site SENDS about its records goes through client.privacy.release_evaluation."""
    loss_t, pred_t, gold_t = per_record_outcomes(model, dataset, task=task, device=device, batch_size=batch_size)
    losses = loss_t.tolist()
    preds = pred_t.tolist() if pred_t is not None else []
    golds = gold_t.tolist() if gold_t is not None else []
    loss = sum(losses) / max(len(losses), 1)
    if task.type is not TaskType.CLASSIFICATION:
        return EvalResult(loss=loss, num_examples=len(dataset))
    accuracy = sum(p == g for p, g in zip(preds, golds, strict=True)) / max(len(golds), 1)
    return EvalResult(
        loss=loss,
        num_examples=len(dataset),
        accuracy=accuracy,
        macro_f1=macro_f1(preds, golds, num_labels=len(task.labels)),
    )


def macro_f1(preds: list[int], golds: list[int], *, num_labels: int) -> float:
    """Unweighted mean F1 over the labels that occur in gold or predictions."""
    scores = []
    for label in range(num_labels):
        tp = sum(p == label and g == label for p, g in zip(preds, golds, strict=True))
        fp = sum(p == label and g != label for p, g in zip(preds, golds, strict=True))
        fn = sum(p != label and g == label for p, g in zip(preds, golds, strict=True))
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores) if scores else 0.0


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 50.0))
