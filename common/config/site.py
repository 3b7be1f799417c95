"""A site's TOML: `[site] [data] [task] [model] [lora] [training] [privacy] [scrub]`, loaded into
`SiteConfig`. Relative paths resolve against the TOML's own directory, so a config directory can move."""

from __future__ import annotations

import enum
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.accounting import NoiseModel
from common.config.model import LoraSettings, ModelConfig, TaskConfig
from common.config.privacy import PrivacyConfig
from common.config.scrub import ScrubConfig
from common.config.toml import check_sections, read_toml, sections_toml, with_path
from common.config.validate import above_zero, build, enum_value, flag, is_number, probability, require, zero_or_more


class Precision(enum.StrEnum):
    AUTO = "auto"  # bf16 autocast on a GPU that supports it, fp32 otherwise
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


class Optimizer(enum.StrEnum):
    """`[training] optimizer`: how a site turns a round's (noised) gradients into steps."""

    ADAMW = "adamw"  # AdamW without weight decay, a fresh state each round: many small local steps
    # Plain SGD, no momentum: each step moves the adapter by -learning_rate x the (noised) mean gradient. With
    # `batch_size` >= the site's records and `epochs = 1` a round is one DP-FedSGD step over every record
    # (q = 1), where Adam's first step, lr x sign(noisy gradient), would move every value by the same amount.
    SGD = "sgd"


@dataclass(frozen=True)
class DataConfig:
    dir: str = "data"
    text_field: str = "text"
    prompt_field: str = "prompt"
    response_field: str = "response"
    label_field: str = "label"
    # Share of records held out for evaluating the global adapter; never trained on.
    holdout_fraction: float = 0.2
    seed: int = 0
    # The longest record accepted (a JSONL line, a CSV row's fields), in characters: bounds the memory and
    # time one hostile record can take; a longer one is a data error naming its file and line.
    max_record_chars: int = 1_000_000

    def __post_init__(self) -> None:
        require(isinstance(self.dir, str) and bool(self.dir), f"`data.dir` must be a directory path, got {self.dir!r}.")
        above_zero("data.max_record_chars", self.max_record_chars, integer=True)
        probability("data.holdout_fraction", self.holdout_fraction)


@dataclass(frozen=True)
class TrainingConfig:
    # Local passes over the site's training split per round.
    epochs: int = 1
    # The logical batch: records per optimiser step, and what DP-SGD's sample rate (batch / records) and so
    # epsilon are computed from. Noise per averaged gradient falls as it grows (sigma * clip / batch).
    batch_size: int = 16
    # Records per forward/backward pass (memory only; 0 = the whole logical batch): a logical batch is
    # split into passes of at most this many and takes one step (Opacus' BatchMemoryManager under DP).
    physical_batch_size: int = 0
    # Rounds of each run that train only the classification head (a DP linear probe, Ke et al. 2024)
    # before LoRA trains too; each probe round's spend is in the ledger with `phase = "probe"`.
    probe_rounds: int = 0
    # Compute the frozen layers' activations once and train the layers above from them, whenever every
    # trainable parameter sits above a layer (checked at each round; client/prefix_cache.py).
    prefix_cache: bool = True
    learning_rate: float = 1e-3
    optimizer: Optimizer = Optimizer.ADAMW
    # Stop a round after this many optimiser steps (0 = no cap); bounds a round's time on big sites.
    max_steps: int = 0
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    precision: Precision = Precision.AUTO
    # Torch intra-op threads per site process; 1 lets several sites share a small machine.
    threads: int = 1
    seed: int = 0
    # Dropout probability of every dropout layer of the base model during local training; unset keeps the
    # checkpoint's own; 0 turns it off (suggested for DP by Li et al. 2022, yet 0.5-1.8 points worse on the
    # Banking77 bench: measure on your own hold-out).
    dropout: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "precision", enum_value(Precision, self.precision, "training.precision"))
        object.__setattr__(self, "optimizer", enum_value(Optimizer, self.optimizer, "training.optimizer"))
        above_zero("training.epochs", self.epochs, integer=True)
        above_zero("training.batch_size", self.batch_size, integer=True)
        zero_or_more("training.physical_batch_size", self.physical_batch_size, integer=True)
        zero_or_more("training.probe_rounds", self.probe_rounds, integer=True)
        flag("training.prefix_cache", self.prefix_cache)
        above_zero("training.learning_rate", self.learning_rate)
        zero_or_more("training.max_steps", self.max_steps, integer=True)
        above_zero("training.threads", self.threads, integer=True)
        require(
            self.dropout is None or (is_number(self.dropout) and 0 <= self.dropout < 1),
            f"`training.dropout` must be in [0, 1), got {self.dropout!r}.",
        )
        dev = self.device
        require(
            isinstance(dev, str) and (dev in ("auto", "cpu", "cuda", "mps") or dev.startswith("cuda:")),
            f"`training.device` must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {dev!r}.",
        )


APP_PIN_INSTALLED = "installed"
APP_PIN_SHA256 = "sha256:"


@dataclass(frozen=True)
class SiteSection:
    id: str = ""
    # Where the site keeps its ledger, keys and scrubbed cache (relative to the TOML's directory).
    state_dir: str = "state"
    # The only app this site runs: "installed" (a bundle declaring the Silo installed here) or
    # "sha256:<hex>" (exactly that bundle); any other run is refused before it executes anything.
    app: str = APP_PIN_INSTALLED
    # Keep the base model, the scrubbed and encoded records and the signing key in memory for the node's
    # life (re-done when the data files, the scrub configuration or the model change). False: load and
    # scrub everything again for every message (the old per-message path, for comparison).
    warm_runtime: bool = True

    def __post_init__(self) -> None:
        flag("site.warm_runtime", self.warm_runtime)
        ok = isinstance(self.id, str) and bool(self.id) and all(c.isalnum() or c in "-_." for c in self.id)
        require(ok, f"`site.id` must be a non-empty name of letters, digits, '-', '_' or '.', got {self.id!r}.")
        pinned = isinstance(self.app, str) and self.app.startswith(APP_PIN_SHA256)
        digest = self.app.removeprefix(APP_PIN_SHA256) if pinned else ""
        ok = self.app == APP_PIN_INSTALLED or (len(digest) == 64 and all(c in "0123456789abcdef" for c in digest))
        require(ok, f"`site.app` must be 'installed' or 'sha256:' and 64 lowercase hex digits, got {self.app!r}.")


@dataclass(frozen=True)
class SiteConfig:
    site: SiteSection
    data: DataConfig
    task: TaskConfig
    model: ModelConfig
    lora: LoraSettings
    training: TrainingConfig
    # Directory of the TOML file; relative paths resolve against it.
    root: Path = field(default=Path("."), compare=False)
    privacy: Any = None  # PrivacyConfig (privacy.py); required in a site TOML
    scrub: Any = None  # ScrubConfig (scrub.py); the defaults when the TOML has no [scrub]

    def __post_init__(self) -> None:
        if self.privacy is not None and self.privacy.noise is NoiseModel.DISTRIBUTED:
            warn_unused_by_distributed(self.training)

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.root / p)

    @property
    def data_dir(self) -> Path:
        return self.resolve(self.data.dir)

    @property
    def state_dir(self) -> Path:
        return self.resolve(self.site.state_dir)

    def model_source(self) -> str:
        """A local path when one exists relative to the TOML, else the string as given (a hub id)."""
        local = self.resolve(self.model.base)
        return str(local) if local.exists() else self.model.base

    def to_toml(self, *, defaults: bool = False) -> str:
        """This config as a site TOML (fields at their defaults left out unless `defaults`);
        `load_site_config` reads it back as an equal config."""
        return sections_toml(
            [
                ("site", self.site),
                ("data", self.data),
                ("task", self.task),
                ("model", self.model),
                ("lora", self.lora),
                ("training", self.training),
                ("privacy", self.privacy),
                ("scrub", self.scrub),
            ],
            defaults=defaults,
        )


SITE_SECTIONS = ("site", "data", "task", "model", "lora", "training", "privacy", "scrub")


def warn_unused_by_distributed(training: TrainingConfig) -> None:
    """A distributed-noise round is one DP-FedSGD step (client/distributed_dp.py): say which `[training]`
    settings it does not use, so that a site does not believe it has, say, a probe phase."""
    defaults = TrainingConfig()
    unused = [
        f"{name} = {getattr(training, name)!r}"
        for name in ("epochs", "max_steps", "physical_batch_size", "probe_rounds", "dropout")
        if getattr(training, name) != getattr(defaults, name)
    ]
    if unused:
        warnings.warn(
            '[privacy] noise = "distributed" trains one DP-FedSGD step per round; these [training] settings '
            f"are not used: {', '.join(unused)}.",
            stacklevel=3,
        )


def load_site_config(path: str | Path) -> SiteConfig:
    raw, root = read_toml(path)
    check_sections(raw, SITE_SECTIONS, path)

    def make() -> SiteConfig:
        return SiteConfig(
            site=build(SiteSection, "site", raw.get("site")),
            data=build(DataConfig, "data", raw.get("data")),
            task=build(TaskConfig, "task", raw.get("task")),
            model=build(ModelConfig, "model", raw.get("model")),
            lora=build(LoraSettings, "lora", raw.get("lora")),
            training=build(TrainingConfig, "training", raw.get("training")),
            root=root,
            privacy=PrivacyConfig.from_mapping(raw.get("privacy") or {}),
            scrub=ScrubConfig.from_mapping(raw.get("scrub") or {}),
        )

    return with_path(path, make)
