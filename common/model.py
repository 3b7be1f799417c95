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

from common.config import HeadInit, LoraSettings, Pooling, TaskConfig, TaskType
from common.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks the first CUDA GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"`training.device` is {name!r} but no CUDA GPU is visible on this machine.")
    return torch.device(name)


def quiet_transformers() -> None:
    """Load reports and progress bars from transformers are noise in a site's log; errors still surface.
    Set when a model is loaded, not at import (importing common/ changes no process state);
    TRANSFORMERS_VERBOSITY, when set, wins."""
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as hf_logging

    # PEFT still asks a model `is_gradient_checkpointing`, which transformers deprecates on every call.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    disable_progress_bars()
    hf_logging.disable_progress_bar()
    if "TRANSFORMERS_VERBOSITY" not in os.environ:
        hf_logging.set_verbosity_error()


def load_tokenizer(source: str) -> Any:
    from transformers import AutoTokenizer

    quiet_transformers()
    try:
        tok = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot load a tokenizer from `model.base` = {source!r}: {err}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


# Mean pooling feeds the head unit-length embeddings times this, and a label-name row has norm
# LABEL_NAME_ROW_NORM: round-0 logits are 10 x cosine(record, label name), a softmax that can be confident
# without saturating. (Tuned on a validation split of Banking77's train records, never on its test split.)
MEAN_POOLING_SCALE = 5.0
LABEL_NAME_ROW_NORM = 2.0


class MeanPooledClassifier(torch.nn.Module):
    """A sentence encoder read the way sentence encoders are trained: the mean of its token states over the
    real tokens (padding excluded), L2-normalised, then a linear `classifier` (the head PEFT trains in full).

    Called like a transformers sequence classifier: `model(input_ids=..., attention_mask=...).logits`."""

    def __init__(self, encoder: Any, num_labels: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.config = encoder.config  # PEFT and the training loop read it as they would a transformers model's
        self.classifier = torch.nn.Linear(int(encoder.config.hidden_size), num_labels)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Unit-length sentence embeddings, one row per record."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return pool_mean(states, attention_mask)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: Any
    ) -> Any:  # the extra keywords PEFT passes (labels, return_dict, ...) are not used
        from transformers.modeling_outputs import SequenceClassifierOutput

        return SequenceClassifierOutput(
            logits=self.classifier(MEAN_POOLING_SCALE * self.embed(input_ids, attention_mask))
        )


def pool_mean(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The unit-length mean of each record's token states over its real tokens (padding excluded)."""
    mask = attention_mask.unsqueeze(-1).to(states.dtype)
    mean = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    return torch.nn.functional.normalize(mean, dim=-1)


def pool_mean_scaled(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """What MeanPooledClassifier's head reads: `pool_mean` times MEAN_POOLING_SCALE."""
    return MEAN_POOLING_SCALE * pool_mean(states, attention_mask)


def load_base_model(source: str, task: TaskConfig, *, device: torch.device | None = None) -> torch.nn.Module:
    """The frozen base model for `task`, on `device` (before LoRA: see Opacus issue 820)."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

    quiet_transformers()

    try:
        if task.type is TaskType.CLASSIFICATION and task.pooling is Pooling.MEAN:
            model: Any = MeanPooledClassifier(AutoModel.from_pretrained(source), len(task.labels))
        elif task.type is TaskType.CLASSIFICATION:
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
    if task.type is TaskType.CLASSIFICATION and task.head_init is not HeadInit.RANDOM:
        _init_head(model, source, task)
    return model.to(device or torch.device("cpu"))


def _classification_head(model: torch.nn.Module) -> torch.nn.Linear:
    """The linear layer that maps to the labels (BERT: classifier, Llama: score, ours: classifier)."""
    for name in ("classifier", "score"):
        head = getattr(model, name, None)
        if isinstance(head, torch.nn.Linear):
            return head
    raise ConfigError(f"`task.head_init` needs a linear classification head; {type(model).__name__} has none known.")


def label_name_text(label: str) -> str:
    """What a label's name reads as: `card_arrival` -> `card arrival`."""
    return " ".join(label.replace("_", " ").replace("-", " ").split())


@torch.no_grad()
def _init_head(model: torch.nn.Module, source: str, task: TaskConfig) -> None:
    """`zeros`: all logits 0 at round 0. `label_names`: row i is label i's name encoded as a record is (its
    unit-length embedding, scaled): the round-0 model is a zero-shot classifier, so training (and DP noise)
    starts from the public prior in the label names, not from chance. Deterministic: every party builds the
    same head, and the coordinator's round-0 adapter carries it."""
    head = _classification_head(model)
    head.weight.zero_()
    if head.bias is not None:
        head.bias.zero_()
    if task.head_init is HeadInit.ZEROS:
        return
    if not isinstance(model, MeanPooledClassifier):
        raise ConfigError('`task.head_init = "label_names"` needs `task.pooling = "mean"` (a sentence embedding).')
    tokenizer = load_tokenizer(source)
    enc = tokenizer([label_name_text(x) for x in task.labels], padding=True, return_tensors="pt")
    was_training = model.training
    model.eval()
    rows = model.embed(enc["input_ids"], enc["attention_mask"])
    model.train(was_training)
    head.weight.copy_(rows * LABEL_NAME_ROW_NORM)


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
    """Wrap `model` with a fresh LoRA adapter; `seed` fixes the adapter's initial A matrices.

    The seed is applied inside a forked RNG state: torch's global generator is left as it was, so no
    later draw (dropout, anything a library takes from it) becomes predictable from the config.
    `lora.ffa`: the A matrices are frozen (FFA-LoRA): they keep the value the global adapter gives them,
    the same at every site, and only B (and a classification head) train."""
    quiet_transformers()  # `model` may come from elsewhere than load_base_model
    try:
        # fork_rng's default forks the CPU and every CUDA generator; manual_seed seeds them all, so all
        # must be restored afterwards (`devices=[]` would leave a GPU site's CUDA generator seeded).
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            peft_model = get_peft_model(model, lora_config(lora, task))
    except ValueError as err:
        raise ConfigError(
            f"cannot attach LoRA ({err}); check `lora.target_modules` = {list(lora.target_modules)!r}."
        ) from None
    if lora.ffa:
        for name, param in peft_model.named_parameters():
            if any(part in FFA_FROZEN for part in name.split(".")):
                param.requires_grad_(False)
    return peft_model


# PEFT's names for the down-projections that FFA-LoRA freezes (linear and embedding LoRA layers).
FFA_FROZEN = frozenset({"lora_A", "lora_embedding_A"})


def load_lora_model(
    source: str, lora: LoraSettings, task: TaskConfig, *, device: torch.device | None = None, seed: int = 0
) -> PeftModel:
    return attach_lora(load_base_model(source, task, device=device), lora, task, seed=seed)
