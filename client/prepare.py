"""Turn a site's (scrubbed) records into token tensors for its task.

Causal LM: `text` records train on every token; `prompt`/`response` records train on the response
tokens only (prompt positions get label -100). Classification: `text` → label index.
Sequences are truncated to `model.max_length` and right-padded to the longest one kept.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import TensorDataset

from client.scrub import ScrubbedRecords
from common.config import DataConfig, TaskConfig, TaskType
from common.errors import ScrubFailed

IGNORE_INDEX = -100  # positions that carry no loss (prompt and padding)


def encode_records(
    records: ScrubbedRecords, tokenizer: Any, *, data: DataConfig, task: TaskConfig, max_length: int
) -> TensorDataset:
    """(input_ids, attention_mask, labels) for every record; labels are token ids or class ids.

    Only scrubbed records are accepted: this is the gate between a site's raw data and training."""
    if not isinstance(records, ScrubbedRecords):
        raise ScrubFailed(
            f"training accepts only scrubbed records, got {type(records).__name__}; "
            "pass them through client.scrub.scrub_records first"
        )
    if task.type is TaskType.CLASSIFICATION:
        return _encode_classification(records, tokenizer, data=data, task=task, max_length=max_length)
    seqs: list[list[int]] = []
    masks: list[list[int]] = []
    for rec in records:
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        eos = [tokenizer.eos_token_id]
        if data.prompt_field in rec and data.response_field in rec:
            prompt = bos + tokenizer.encode(str(rec[data.prompt_field]) + "\n", add_special_tokens=False)
            response = tokenizer.encode(str(rec[data.response_field]), add_special_tokens=False) + eos
            ids = (prompt + response)[:max_length]
            labels = ([IGNORE_INDEX] * len(prompt) + response)[:max_length]
        else:
            ids = (bos + tokenizer.encode(str(rec[data.text_field]), add_special_tokens=False) + eos)[:max_length]
            labels = list(ids)
        seqs.append(ids)
        masks.append(labels)
    width = max(len(s) for s in seqs)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], dtype=torch.long)
    attention = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], dtype=torch.long)
    labels_t = torch.tensor([m + [IGNORE_INDEX] * (width - len(m)) for m in masks], dtype=torch.long)
    return TensorDataset(input_ids, attention, labels_t)


def _encode_classification(
    records: ScrubbedRecords, tokenizer: Any, *, data: DataConfig, task: TaskConfig, max_length: int
) -> TensorDataset:
    index = {name: i for i, name in enumerate(task.labels)}
    enc = tokenizer(
        [str(r[data.text_field]) for r in records],
        truncation=True,
        max_length=max_length,
        padding="longest",
        return_tensors="pt",
    )
    labels = torch.tensor([index[str(r[data.label_field])] for r in records], dtype=torch.long)
    return TensorDataset(enc["input_ids"], enc["attention_mask"], labels)
