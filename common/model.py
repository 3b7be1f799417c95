"""Load a base model from a local directory or hub id and attach a LoRA adapter with PEFT.

Both sides use this: a site to train, the coordinator to build the round-0 adapter and save each
round's adapter in PEFT format. Loading is offline-safe: a local directory is read as is, a hub id
must already be in the local cache (HF_HUB_OFFLINE is honoured by transformers).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft import TaskType as PeftTaskType

from common.config import LoraSettings, TaskConfig, TaskType
from common.errors import ConfigError

# Load reports and progress bars from transformers are noise in a site's log; errors still surface.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks the first CUDA GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"`training.device` is {name!r} but no CUDA GPU is visible on this machine.")
    return torch.device(name)


def load_tokenizer(source: str) -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot load a tokenizer from `model.base` = {source!r}: {err}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_base_model(source: str, task: TaskConfig, *, device: torch.device | None = None) -> torch.nn.Module:
    """The frozen base model for `task`, on `device` (before LoRA: see Opacus issue 820)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    try:
        if task.type is TaskType.CLASSIFICATION:
            model = AutoModelForSequenceClassification.from_pretrained(
                source,
                num_labels=len(task.labels),
                id2label=dict(enumerate(task.labels)),
                label2id={name: i for i, name in enumerate(task.labels)},
            )
        else:
            model = AutoModelForCausalLM.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot load the base model from `model.base` = {source!r}: {err}") from None
    if model.config.pad_token_id is None:
        model.config.pad_token_id = model.config.eos_token_id
    return model.to(device or torch.device("cpu"))


def lora_config(lora: LoraSettings, task: TaskConfig) -> LoraConfig:
    peft_task = PeftTaskType.SEQ_CLS if task.type is TaskType.CLASSIFICATION else PeftTaskType.CAUSAL_LM
    return LoraConfig(
        task_type=peft_task,
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
    )


def attach_lora(model: torch.nn.Module, lora: LoraSettings, task: TaskConfig, *, seed: int = 0) -> PeftModel:
    """Wrap `model` with a fresh LoRA adapter; `seed` fixes the adapter's initial A matrices."""
    torch.manual_seed(seed)
    try:
        return get_peft_model(model, lora_config(lora, task))
    except ValueError as err:
        raise ConfigError(
            f"cannot attach LoRA ({err}); check `lora.target_modules` = {list(lora.target_modules)!r}."
        ) from None


def load_lora_model(
    source: str, lora: LoraSettings, task: TaskConfig, *, device: torch.device | None = None, seed: int = 0
) -> PeftModel:
    return attach_lora(load_base_model(source, task, device=device), lora, task, seed=seed)
