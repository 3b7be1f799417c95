"""DP-SGD for the site's LoRA training loop, with Opacus.

`make_private` wraps (model, optimizer, data_loader) with an `opacus.PrivacyEngine`: per-sample
gradients of the trainable (LoRA) parameters, per-sample clipping to `max_grad_norm`, Gaussian noise
`noise_multiplier * max_grad_norm`, Poisson sampling, and the engine's accountant counting every step.

Empty Poisson batches. With Poisson sampling a step's batch can be empty, and a Llama forward pass
crashes on zero rows. The mechanism the accountants analyse still releases `sum of clipped gradients
(none) + noise` at that step; skipping the step instead would reveal that no record was sampled, which
the analysis does not cover. So on an empty draw the wrapped loader performs that noise-only step itself
(the DP optimizer clips an empty set, adds noise, steps, and its accountant counts it) and yields only
non-empty batches to the training loop. The loop never sees an empty batch; `steps_taken` counts both.

Loss. Use a per-sample loss (one value per record, e.g. `client.train.per_sample_loss`) and reduce it
with `PrivateTraining.reduce_loss`: a mean for hooks/functorch, Opacus' two-pass criterion for ghost
clipping. A token mean over the whole batch would make one record's gradient depend on the others.

Randomness. DP-SGD's guarantee assumes noise that is fresh and unknown to the adversary. Poisson
sampling and Gaussian noise come from two dedicated `torch.Generator`s (one on the CPU for the sampler,
one on the parameters' device for the noise), each seeded with 64 bits from the operating system's
CSPRNG (`secrets`) at every `make_private` call, i.e. every round: never from the training seed, never
from torch's global generator (which model loading seeds), never reproducible from the configuration.
Opacus' `secure_mode` would draw from `torchcsprng` instead; no build of it exists for this torch
(its last release, 0.2.1 of 2021, has wheels for torch 1.8 and Python <= 3.9 only), so the threat
model records the OS-seeded Mersenne Twister as what Silo uses. Tests that need reproducible noise
pass their own `generator`; the privacy record then says so (`NoiseSource.CALLER`), and an auditor
treats such rounds' ε as void. No setting in a site's configuration can choose the seed.

Move the model to its device BEFORE `get_peft_model` (Opacus issue 820: otherwise LoRA updates can be
silently corrupted); `make_private` refuses a model whose parameters span devices.
"""

from __future__ import annotations

import math
import secrets
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import torch
from torch.utils.data import DataLoader

from common.accounting import DPEvent
from common.config.privacy import GradSampleMode, PrivacyConfig
from common.errors import ConfigError


class NoiseSource(StrEnum):
    """Where a round's DP randomness came from; recorded with every ledger entry.

    Only `OS_SEEDED` backs an ε claim: `CALLER` (a generator a test passed in) is reproducible by
    whoever chose it, and `NONE` is a round without DP (ε = inf)."""

    OS_SEEDED = "os-seeded"
    CALLER = "caller-generator"
    NONE = "none"


SEED_BITS = 64
"""Entropy per generator per round: torch generators take a 64-bit seed."""


def fresh_generator(device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator on `device`, seeded from the OS CSPRNG: unpredictable, and new every call."""
    generator = torch.Generator(device=device)
    generator.manual_seed(secrets.randbits(SEED_BITS))
    return generator


class _PerSampleLoss(torch.nn.Module):
    """Identity "criterion" over per-sample losses, so that ghost clipping can wrap it.

    Opacus' ghost criterion calls it with `reduction = "none"` to get one loss per record.
    """

    def __init__(self) -> None:
        super().__init__()
        self.reduction = "mean"

    def forward(self, per_sample: torch.Tensor) -> torch.Tensor:
        if self.reduction == "none":
            return per_sample
        return per_sample.sum() if self.reduction == "sum" else per_sample.mean()


@dataclass
class PrivateTraining:
    """The wrapped training objects; iterate `data_loader`, step `optimizer`, read `steps_taken`."""

    model: torch.nn.Module
    optimizer: Any  # opacus.optimizers.DPOptimizer
    data_loader: _EmptyStepLoader
    privacy_engine: Any  # opacus.PrivacyEngine
    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    grad_sample_mode: GradSampleMode
    noise_source: NoiseSource
    _criterion: Any = None  # ghost mode only: opacus DPLossFastGradientClipping

    @property
    def steps_taken(self) -> int:
        """DP steps the accountant has counted (empty Poisson draws included)."""
        return sum(steps for _, _, steps in self.privacy_engine.accountant.history)

    def history(self) -> list[DPEvent]:
        """This session's accountant history, `(noise_multiplier, sample_rate, steps)` per run of steps."""
        return [DPEvent(float(s), float(q), int(n)) for s, q, n in self.privacy_engine.accountant.history]

    def reduce_loss(self, per_sample: torch.Tensor) -> Any:
        """Batch loss to call `.backward()` on, from one loss per record (shape [B])."""
        if self._criterion is not None:
            return self._criterion(per_sample)
        return per_sample.mean()

    def step_empty(self) -> None:
        """The noise-only DP step of an empty Poisson draw (the wrapped loader calls this itself)."""
        _step_empty(self.optimizer, self.grad_sample_mode)

    def limit_physical_batch(self, max_physical_batch_size: int) -> None:
        """Split each logical (Poisson) batch into passes of at most `max_physical_batch_size` records
        (Opacus' BatchMemoryManager): the optimizer clips and sums every pass and steps, adds noise and
        counts one step only after a logical batch's last pass. The sample rate, so ε, is unchanged:
        it is the logical batch's. Check `step_completed()` after each `optimizer.step()`."""
        if max_physical_batch_size < 1:
            raise ConfigError(f"`physical_batch_size` must be >= 1, got {max_physical_batch_size}.")
        if self.grad_sample_mode is GradSampleMode.GHOST:
            raise ConfigError(
                '`physical_batch_size` splits batches with grad_sample_mode "hooks" or "functorch" only '
                "(ghost clipping accumulates each pass's gradients in place)."
            )
        from opacus.utils.batch_memory_manager import wrap_data_loader

        split = wrap_data_loader(
            data_loader=self.data_loader.loader, max_batch_size=max_physical_batch_size, optimizer=self.optimizer
        )
        self.data_loader = _EmptyStepLoader(split, optimizer=self.optimizer, mode=self.grad_sample_mode)

    def step_completed(self) -> bool:
        """False right after an `optimizer.step()` that only accumulated a pass of a logical batch."""
        return not bool(getattr(self.optimizer, "_is_last_step_skipped", False))


def _step_empty(optimizer: Any, mode: GradSampleMode) -> None:
    """Clip an empty set of per-sample gradients, add noise, step; the accountant counts the step."""
    optimizer.zero_grad(set_to_none=True)  # the previous step's clipped sums must not leak in
    for p in optimizer.params:
        if mode is GradSampleMode.GHOST:
            p.grad = torch.zeros_like(p)  # ghost clipping accumulates `p.grad` directly
        else:
            p.grad_sample = torch.zeros((0, *p.shape), device=p.device, dtype=p.dtype)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


class _EmptyStepLoader:
    """Opacus' Poisson loader, minus empty batches: each one becomes a noise-only step instead."""

    def __init__(self, loader: DataLoader, *, optimizer: Any, mode: GradSampleMode) -> None:
        self.loader = loader
        self.dataset = loader.dataset
        self._optimizer, self._mode = optimizer, mode

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        for batch in self.loader:
            if batch_size_of(batch) == 0:
                _step_empty(self._optimizer, self._mode)
                continue
            yield batch


def _with_sampling_generator(loader: DataLoader, generator: torch.Generator, *, poisson: bool) -> DataLoader:
    """`loader`, drawing its batches from `generator`. Opacus' Poisson sampler takes the wrapped loader's
    generator (PrivacyEngine passes its own only in secure_mode); a shuffling loader gets its sampler's
    generator switched; a sequential loader (fixed batches, tests only) draws nothing to switch."""
    if poisson:
        return DataLoader(
            loader.dataset, batch_size=loader.batch_size, collate_fn=loader.collate_fn, generator=generator
        )
    sampler = getattr(loader.batch_sampler, "sampler", None)
    if hasattr(sampler, "generator"):
        from opacus.data_loader import switch_generator

        return switch_generator(data_loader=loader, generator=generator)
    return loader


def planned_sample_rate(*, dataset_size: int, batch_size: int) -> float:
    """The sample rate `make_private` will hand its accountant for a `DataLoader(dataset, batch_size)`:
    Opacus uses 1 / len(loader) = 1 / ceil(dataset_size / batch_size). Plan the round with this."""
    if dataset_size < 1 or batch_size < 1:
        raise ConfigError(f"need dataset_size >= 1 and batch_size >= 1, got {dataset_size} and {batch_size}.")
    return 1 / math.ceil(dataset_size / batch_size)


def batch_size_of(batch: Any) -> int:
    """Rows in a collated batch (tensor, mapping or sequence of tensors); 0 for Opacus' empty batches."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else 0
    if isinstance(batch, Mapping):
        return batch_size_of(next(iter(batch.values()))) if batch else 0
    if isinstance(batch, Sequence) and not isinstance(batch, str | bytes):
        return batch_size_of(batch[0]) if len(batch) else 0
    raise TypeError(f"cannot tell the batch size of a {type(batch).__name__}")


def make_private(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data_loader: DataLoader,
    *,
    config: PrivacyConfig,
    noise_multiplier: float,
    max_grad_norm: float,
    generator: torch.Generator | None = None,
) -> PrivateTraining:
    """Wrap the site's training objects for DP-SGD (accountant, grad-sample mode and Poisson sampling
    from `config`; `noise_multiplier` from `config.resolve_noise_multiplier(...)`).

    Sampling and noise are drawn from fresh OS-seeded generators (see the module docstring). Only a
    test passes `generator`, a CPU generator that then drives both (noise on the CPU only)."""
    from opacus import PrivacyEngine

    if not config.enabled:
        raise ConfigError("[privacy] enabled = false: train without make_private (the ledger records epsilon = inf).")
    if not (noise_multiplier >= 0 and math.isfinite(noise_multiplier)):
        raise ConfigError(f"`noise_multiplier` must be a finite number >= 0, got {noise_multiplier}.")
    if noise_multiplier == 0:
        warnings.warn(
            "make_private with noise_multiplier = 0: clipping only, NO privacy (for correctness checks).",
            stacklevel=2,
        )
    if not (max_grad_norm > 0 and math.isfinite(max_grad_norm)):
        raise ConfigError(f"`max_grad_norm` must be a finite number > 0, got {max_grad_norm}.")
    devices = {p.device for p in model.parameters()}
    if len(devices) > 1:
        raise ConfigError(
            f"model parameters span devices {sorted(map(str, devices))}: move the base model to one device "
            "before get_peft_model (Opacus issue 820)."
        )
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError("model has no trainable parameters; attach LoRA before make_private.")

    (device,) = devices
    if generator is None:
        source, sampling_generator, noise_generator = NoiseSource.OS_SEEDED, fresh_generator(), fresh_generator(device)
    else:
        if device.type != generator.device.type:
            raise ConfigError(f"a caller's generator on {generator.device} cannot draw noise on {device}.")
        source, sampling_generator, noise_generator = NoiseSource.CALLER, generator, generator
    data_loader = _with_sampling_generator(data_loader, sampling_generator, poisson=config.poisson_sampling)

    with warnings.catch_warnings():
        # Opacus warns "Secure RNG turned off" because secure_mode needs torchcsprng, which has no build
        # for this torch; the noise comes from the fresh OS-seeded generators above instead (threat model).
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        engine = PrivacyEngine(accountant=config.accountant.value)
    mode = config.grad_sample_mode
    kwargs: dict[str, Any] = {
        "module": model,
        "optimizer": optimizer,
        "data_loader": data_loader,
        "noise_generator": noise_generator,
        "noise_multiplier": float(noise_multiplier),
        "max_grad_norm": float(max_grad_norm),
        "poisson_sampling": config.poisson_sampling,
        "grad_sample_mode": mode.value,
        "loss_reduction": "mean",
    }
    criterion = None
    if mode is GradSampleMode.GHOST:
        wrapped_model, dp_optimizer, criterion, dp_loader = engine.make_private(criterion=_PerSampleLoss(), **kwargs)
    else:
        wrapped_model, dp_optimizer, dp_loader = engine.make_private(**kwargs)

    return PrivateTraining(
        model=wrapped_model,
        optimizer=dp_optimizer,
        data_loader=_EmptyStepLoader(dp_loader, optimizer=dp_optimizer, mode=mode),
        privacy_engine=engine,
        noise_multiplier=float(noise_multiplier),
        max_grad_norm=float(max_grad_norm),
        sample_rate=1 / len(dp_loader),  # what Opacus hands its accountant at every step
        grad_sample_mode=mode,
        noise_source=source,
        _criterion=criterion,
    )


# ---- evaluation answers -------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalRelease:
    """What a site may say about its hold-out records: a DP release (or exact, for a site without DP)."""

    loss: float  # mean per-record loss, each clipped to [0, loss_clip]
    accuracy: float | None  # classification only
    num_examples: int  # hold-out records (a count the site declares anyway, as with its training split)
    loss_noise_std: float  # std of the noise on `loss`: σ·Δ·loss_clip / n (public: the answer's error bar)
    event: DPEvent  # the Gaussian mechanism to record in the ledger: (σ, q = 1, 1 step)
    noise_source: NoiseSource

    def metrics(self) -> dict[str, int | float | list[int] | list[float]]:
        """As a Flower MetricRecord takes them."""
        out: dict[str, int | float | list[int] | list[float]] = {
            "eval_loss": self.loss,
            "eval_loss_noise_std": self.loss_noise_std,
            "num-examples": float(self.num_examples),
        }
        if self.accuracy is not None:
            out["accuracy"] = self.accuracy
        return out


def release_evaluation(
    losses: torch.Tensor,
    correct: torch.Tensor | None,
    *,
    loss_clip: float,
    noise_multiplier: float,
    generator: torch.Generator | None = None,
) -> EvalRelease:
    """Mean loss (and accuracy) over the hold-out records, released with the Gaussian mechanism.

    Each record contributes the vector (min(loss, loss_clip) / loss_clip, correct): L2 norm at most
    Δ = 1 (loss only) or √2 (with accuracy). The sums get N(0, (σ·Δ)²) noise per coordinate, which is
    exactly the sampled Gaussian mechanism at q = 1 for one step, so its ε composes in the ledger with
    the site's DP-SGD rounds (`EvalRelease.event`). The means divide by the declared record count and
    are clamped to their ranges (post-processing). `noise_multiplier = 0`: exact answers, ε = inf.
    """
    if not (noise_multiplier >= 0 and math.isfinite(noise_multiplier)):
        raise ConfigError(f"`eval_noise_multiplier` must be a finite number >= 0, got {noise_multiplier}.")
    if not (loss_clip > 0 and math.isfinite(loss_clip)):
        raise ConfigError(f"`eval_loss_clip` must be a finite number > 0, got {loss_clip}.")
    n = int(losses.numel())
    if n < 1:
        raise ConfigError("no hold-out records to evaluate on.")
    columns = [losses.detach().double().clamp(0.0, loss_clip) / loss_clip]
    if correct is not None:
        columns.append(correct.detach().double())
    sums = torch.stack(columns, dim=1).sum(0)
    sensitivity = math.sqrt(len(columns))
    if noise_multiplier > 0:
        source = NoiseSource.OS_SEEDED if generator is None else NoiseSource.CALLER
        draw = fresh_generator() if generator is None else generator
        noise = torch.normal(0.0, noise_multiplier * sensitivity, size=sums.shape, generator=draw, dtype=torch.float64)
        sums = sums + noise
    else:
        source = NoiseSource.NONE
    loss = min(max(float(sums[0]) * loss_clip / n, 0.0), loss_clip)
    accuracy = min(max(float(sums[1]) / n, 0.0), 1.0) if correct is not None else None
    return EvalRelease(
        loss=loss,
        accuracy=accuracy,
        num_examples=n,
        loss_noise_std=noise_multiplier * sensitivity * loss_clip / n,
        event=DPEvent(float(noise_multiplier), 1.0, 1),
        noise_source=source,
    )
