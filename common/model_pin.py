"""The base model's fingerprint: one sha256 over its weights, its config and its tokenizer.

A LoRA adapter only means something on top of the exact base model it was trained on. The
coordinator records this fingerprint in the run manifest and sends it in the signed run request;
each site computes it over its own `[model] base` and refuses the run in the round-0 handshake,
before anything is trained or spent, when the two differ.

What is hashed, for a local model directory (or a hub id's snapshot in the local cache):
- every `*.safetensors` file, tensor by tensor: name, dtype, shape and bytes, in name order. The
  same weights saved twice (another shard layout, other header metadata) give the same fingerprint;
- every `*.bin` / `*.pt` / `*.pth` weights file, byte for byte (their pickles carry no stable order);
- `config.json` as canonical JSON without the keys that name the saving software or path
  (`transformers_version`, `_name_or_path`), which do not change the model;
- the tokenizer's vocabulary files (`tokenizer.json`, `tokenizer.model`, `vocab.*`, `merges.txt`),
  byte for byte: the same weights under another tokenizer read different text.

Pure: reads files, nothing else. Hashing runs at disk speed (~1 GB/s), so a site caches the result
per (path, size, mtime) for its process's life.
"""

from __future__ import annotations

import hashlib
import json
import struct
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

from common.errors import ConfigError

FINGERPRINT_VERSION = 1
"""Bumped when what is hashed changes: fingerprints of different versions never compare equal."""
# config.json keys that record who saved the model, not what it is.
VOLATILE_CONFIG_KEYS = frozenset({"transformers_version", "_name_or_path"})
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "merges.txt")
PICKLED_WEIGHTS = ("*.bin", "*.pt", "*.pth")
# Bytes read at a time from a weights file.
CHUNK = 1 << 20
# A safetensors file opens with its JSON header's length, a little-endian u64.
HEADER_LENGTH_BYTES = 8


def model_directory(source: str | Path) -> Path:
    """The directory holding `source`'s files: itself, or a cached hub id's snapshot (no download)."""
    path = Path(source)
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(source), local_files_only=True))
    except Exception as err:  # noqa: BLE001 - any failure means the same thing here: not on this machine
        raise ConfigError(
            f"base model {source!r} is neither a directory nor a hub id in the local cache ({type(err).__name__})"
        ) from None


def model_fingerprint(source: str | Path) -> str:
    """sha256 (hex) of the base model at `source` (see the module docstring)."""
    directory = model_directory(source).resolve()
    stamp = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(directory.iterdir()) if p.is_file())
    return _fingerprint(directory, stamp)


@lru_cache(maxsize=8)
def _fingerprint(directory: Path, _stamp: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256(f"silo-base-model-v{FINGERPRINT_VERSION}\n".encode())
    weights = sorted(directory.glob("*.safetensors"))
    pickled = sorted(p for pattern in PICKLED_WEIGHTS for p in directory.glob(pattern))
    if not weights and not pickled:
        raise ConfigError(f"base model {directory} has no weights file (*.safetensors, *.bin, *.pt)")
    _hash_tensors(weights, digest)
    for path in pickled:
        digest.update(f"file {path.name}\n".encode())
        with path.open("rb") as fh:
            _hash_bytes(fh, path.stat().st_size, digest)
    config = directory / "config.json"
    if config.is_file():
        raw = json.loads(config.read_text(encoding="utf-8"))
        kept = {k: v for k, v in raw.items() if k not in VOLATILE_CONFIG_KEYS}
        digest.update(b"config\n" + json.dumps(kept, sort_keys=True, separators=(",", ":")).encode())
    for name in TOKENIZER_FILES:
        if (directory / name).is_file():
            digest.update(f"tokenizer {name}\n".encode() + (directory / name).read_bytes())
    return digest.hexdigest()


def _safetensors_index(paths: list[Path]) -> dict[str, tuple[Path, int, dict[str, Any]]]:
    """Every tensor of every file by name: (file, where its data starts, its header entry)."""
    index: dict[str, tuple[Path, int, dict[str, Any]]] = {}
    for path in paths:
        with path.open("rb") as fh:
            try:
                (length,) = struct.unpack("<Q", fh.read(HEADER_LENGTH_BYTES))
                header = json.loads(fh.read(length))
                for name, info in header.items():
                    if name != "__metadata__":
                        index[name] = (path, HEADER_LENGTH_BYTES + length, info)
            except (struct.error, ValueError, AttributeError) as err:
                raise ConfigError(f"base model weights {path} are not a readable safetensors file ({err})") from None
    return index


def _hash_tensors(paths: list[Path], digest: Any) -> None:
    """Each tensor's name, dtype, shape and raw bytes in name order across all files, read straight from
    the files' layout (any dtype, bf16 included; nothing is converted)."""
    for name, (path, start, info) in sorted(_safetensors_index(paths).items()):
        try:
            begin, end = info["data_offsets"]
            digest.update(f"tensor {name} {info['dtype']} {list(info['shape'])}\n".encode())
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"base model weights {path}: tensor {name!r} has a malformed header ({err})") from None
        with path.open("rb") as fh:
            fh.seek(start + begin)
            _hash_bytes(fh, end - begin, digest)


def _hash_bytes(fh: BinaryIO, size: int, digest: Any) -> None:
    left = size
    while left > 0:
        chunk = fh.read(min(CHUNK, left))
        if not chunk:
            raise ConfigError(f"{fh.name}: the file ends {left} bytes early")
        digest.update(chunk)
        left -= len(chunk)
