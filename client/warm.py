"""What a site's node keeps in memory from one message to the next: the warm site (issue 15).

A site's executor (client/runtime/) is one process for the node's life, so what is loaded once here
serves every round: the tokenizer and the base model with its LoRA adapter attached, the site's
records scrubbed and encoded, and its signing key. Each is keyed by what it was made from and made
again when that changes:

- records: a `DataVersion`, the sha256 of every record file's name and bytes, the `[data]`, `[task]`
  and `[scrub]` configuration, the model's tokenizer and `max_length`, and the code version. The
  files are hashed on every message (reading is cheap; scrubbing is not), so a file edited between
  rounds is scrubbed again before anything trains on it. Held in memory only, never written.
- model: its source, LoRA settings, task and device. Every round loads the global adapter into it
  (all trainable tensors, `load_adapter_state` refuses a partial one) and any DP wrapping is removed
  after the round (`release_private`), so round N+1 starts from exactly the state a fresh load
  would give. When a round fails, the model is dropped and loaded again for the next one.
- signing key: its path and the file's modification time.

The privacy path is unchanged: the ledger is opened, locked, reserved and recorded on every message
(client/site.py); DP randomness is drawn afresh in every `make_private`. Nothing here is sent.
`[site] warm_runtime = false` drops everything after each message: the old per-message path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from client.ingest import list_record_files
from common.config import SiteConfig
from common.version import CODE_VERSION

log = logging.getLogger("silo.site")
T = TypeVar("T")
FILE_CHUNK = 1 << 20


def _config_text(section: Any) -> str:
    value = asdict(section) if is_dataclass(section) and not isinstance(section, type) else section
    return json.dumps(value, sort_keys=True, default=str)


def data_version(cfg: SiteConfig) -> str:
    """sha256 naming the scrubbed, encoded records `cfg` makes: files, their bytes, the settings that
    read, scrub and encode them, and the code. Raises DataError as ingest does for a missing directory."""
    h = hashlib.sha256()
    for path in list_record_files(cfg.data_dir):
        h.update(path.name.encode() + b"\0")
        with path.open("rb") as fh:
            while chunk := fh.read(FILE_CHUNK):
                h.update(chunk)
        h.update(b"\0")
    for section in (cfg.data, cfg.task, cfg.scrub):
        h.update(_config_text(section).encode() + b"\0")
    h.update(f"{cfg.model_source()}\0{cfg.model.max_length}\0{CODE_VERSION}".encode())
    return h.hexdigest()


def model_key(cfg: SiteConfig, device: torch.device) -> str:
    parts = [cfg.model_source(), _config_text(cfg.model), _config_text(cfg.lora), _config_text(cfg.task), str(device)]
    parts.append(str(cfg.training.dropout))  # set on the model's modules by training
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


@dataclass
class Slot:
    key: str | None = None
    value: Any = None


@dataclass
class WarmSite:
    """The node's cache; `timings` says what the last message spent where (seconds, by stage)."""

    enabled: bool = True
    slots: dict[str, Slot] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)

    def get(self, name: str, key: str, make: Callable[[], T]) -> T:
        """The value of `name` made for `key`: the cached one when the key is the same, else made now."""
        slot = self.slots.setdefault(name, Slot())
        if self.enabled and slot.key == key and slot.value is not None:
            self.hits[name] = self.hits.get(name, 0) + 1
            return slot.value  # type: ignore[no-any-return]
        slot.key, slot.value = None, None  # the old value goes before the new one is made
        t0 = time.perf_counter()
        value = make()
        seconds = time.perf_counter() - t0
        self.timings[f"load_{name}"] = self.timings.get(f"load_{name}", 0.0) + seconds
        log.info(
            "[silo] loaded %s in %.1fs%s", name, seconds, "" if self.enabled else " (warm_runtime = false: not kept)"
        )
        slot.key, slot.value = key, value
        return value

    def drop(self, *names: str) -> None:
        for name in names or tuple(self.slots):
            self.slots.pop(name, None)

    def end_message(self) -> None:
        """After each message: the per-message path keeps nothing."""
        if not self.enabled:
            self.drop()

    def start_message(self, cfg: SiteConfig) -> None:
        self.enabled = cfg.site.warm_runtime
        self.timings = {}


def key_version(path: Path) -> str:
    stat = path.stat()
    return f"{path}\0{stat.st_mtime_ns}\0{stat.st_size}"


def release_private(private: Any, model: torch.nn.Module) -> None:
    """Undo `make_private` on a model that stays in memory: Opacus' hooks and per-sample gradient
    attributes removed, gradients cleared. The next round wraps the bare model afresh."""
    if private is not None:
        wrapped = private.model
        close = getattr(wrapped, "to_standard_module", None)
        if callable(close):
            close()
    for p in model.parameters():
        p.grad = None


# The node's one warm site (one process per node; messages are handled one at a time).
WARM = WarmSite()
