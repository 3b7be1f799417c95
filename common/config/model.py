"""The model a federation fine-tunes, the LoRA adapter on it and the task: the `[model] [lora] [task]`
sections, the same in a site's TOML and the federation's."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from common.config.validate import above_zero, enum_value, flag, fraction, names, require


class TaskType(enum.StrEnum):
    CAUSAL_LM = "causal_lm"
    CLASSIFICATION = "classification"


class Pooling(enum.StrEnum):
    """How a classifier reads a record's token states (classification only)."""

    MODEL = "model"  # the model's own sequence-classification head (BERT: [CLS] + pooler; Llama: last token)
    MEAN = "mean"  # mean of the token states (padding excluded), L2-normalised: how sentence encoders are trained


class HeadInit(enum.StrEnum):
    """How the new classification head starts (classification only)."""

    RANDOM = "random"  # the model's own initialisation
    ZEROS = "zeros"  # every label equally likely at round 0
    LABEL_NAMES = "label_names"  # each label's row is its encoded name: a zero-shot classifier at round 0


@dataclass(frozen=True)
class ModelConfig:
    """Base model: a local directory (from `save_pretrained`) or a hub id already in the local cache."""

    base: str = ""
    # Tokens per record after truncation; 128 keeps the demo's notes whole on a 2-core CPU.
    max_length: int = 128

    def __post_init__(self) -> None:
        require(
            isinstance(self.base, str) and bool(self.base), f"`model.base` must be a path or hub id, got {self.base!r}."
        )
        above_zero("model.max_length", self.max_length, integer=True)


@dataclass(frozen=True)
class LoraSettings:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    # FFA-LoRA (Sun et al. 2024): the A matrices stay at their shared seeded start and only B trains: half
    # the LoRA parameters to noise under DP and to send; off by default (plain LoRA trains both).
    ffa: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_modules", names(self.target_modules, "lora.target_modules"))
        flag("lora.ffa", self.ffa)
        above_zero("lora.r", self.r, integer=True)
        above_zero("lora.alpha", self.alpha)
        fraction("lora.dropout", self.dropout)
        require(
            len(self.target_modules) > 0 and all(isinstance(m, str) and m for m in self.target_modules),
            f"`lora.target_modules` must be a non-empty list of module names, got {list(self.target_modules)!r}.",
        )


@dataclass(frozen=True)
class TaskConfig:
    type: TaskType = TaskType.CAUSAL_LM
    # Classification only: the label names, in index order.
    labels: tuple[str, ...] = ()
    # Classification only: how records are pooled and how the head starts (see Pooling, HeadInit).
    pooling: Pooling = Pooling.MODEL
    head_init: HeadInit = HeadInit.RANDOM

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", enum_value(TaskType, self.type, "task.type"))
        object.__setattr__(self, "labels", tuple(str(x) for x in names(self.labels, "task.labels")))
        object.__setattr__(self, "pooling", enum_value(Pooling, self.pooling, "task.pooling"))
        object.__setattr__(self, "head_init", enum_value(HeadInit, self.head_init, "task.head_init"))
        if self.type is not TaskType.CLASSIFICATION:
            require(
                self.pooling is Pooling.MODEL and self.head_init is HeadInit.RANDOM,
                "`task.pooling` and `task.head_init` apply to classification only; remove them for causal_lm.",
            )
        if self.type is TaskType.CLASSIFICATION:
            require(
                len(self.labels) >= 2,
                f"`task.labels` must list >= 2 labels for classification, got {list(self.labels)!r}.",
            )
            require(len(set(self.labels)) == len(self.labels), f"`task.labels` has duplicates: {list(self.labels)!r}.")
