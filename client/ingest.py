"""Read a site's records from its data directory: JSONL and CSV files, one record per line/row.

A record is a dict with, per task: `text` (causal LM), or `prompt` + `response` (causal LM with the
loss on the response), or `text` + `label` (classification). Field names come from `[data]`.
A missing or malformed file is one `DataError` naming the file and line; nothing is half-read.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.config import DataConfig, TaskConfig, TaskType
from common.errors import DataError

RECORD_SUFFIXES = (".jsonl", ".csv")


def list_record_files(path: Path) -> list[Path]:
    """`path` itself when it is a file, else the JSONL/CSV files directly in it, sorted."""
    if path.is_file():
        if path.suffix not in RECORD_SUFFIXES:
            raise DataError(f"{path}: unsupported file type {path.suffix!r} (expected .jsonl or .csv)")
        return [path]
    if not path.is_dir():
        raise DataError(f"{path}: data directory not found")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in RECORD_SUFFIXES)
    if not files:
        raise DataError(f"{path}: no .jsonl or .csv files in the data directory")
    return files


def read_record_file(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """Every record of one file with its 1-based line number."""
    try:
        if path.suffix == ".jsonl":
            return _read_jsonl(path)
        return _read_csv(path)
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None


def _read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    records = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{lineno}: invalid JSON ({err.msg} at column {err.colno})") from None
            if not isinstance(rec, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
            records.append((lineno, rec))
    return records


def _read_csv(path: Path) -> list[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames:
            raise DataError(f"{path}:1: empty CSV file (no header row)")
        records = []
        for row in reader:
            if None in row or any(v is None for v in row.values()):
                raise DataError(f"{path}:{reader.line_num}: row has a different number of fields than the header")
            records.append((reader.line_num, dict(row)))
        return records


def read_records(path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for f in list_record_files(path):
        out.extend(rec for _, rec in read_record_file(f))
    return out


def check_record(rec: dict[str, Any], data: DataConfig, task: TaskConfig, where: str) -> None:
    """Raise `DataError` at `where` (file:line) when `rec` lacks what `task` needs."""

    def text(name: str) -> None:
        value = rec.get(name)
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{where}: field {name!r} must be non-empty text, got {value!r:.60}")

    if task.type is TaskType.CLASSIFICATION:
        text(data.text_field)
        label = rec.get(data.label_field)
        if str(label) not in task.labels:
            raise DataError(f"{where}: label {label!r} is not one of `task.labels` ({len(task.labels)} labels)")
    elif data.prompt_field in rec or data.response_field in rec:
        text(data.prompt_field)
        text(data.response_field)
    else:
        text(data.text_field)


def load_site_records(path: Path, data: DataConfig, task: TaskConfig) -> list[dict[str, Any]]:
    """All records under `path`, each checked against the task; errors name file and line."""
    out: list[dict[str, Any]] = []
    for f in list_record_files(path):
        for lineno, rec in read_record_file(f):
            check_record(rec, data, task, where=f"{f}:{lineno}")
            out.append(rec)
    if not out:
        raise DataError(f"{path}: no records")
    return out


@dataclass(frozen=True)
class Split:
    train: list[dict[str, Any]]
    holdout: list[dict[str, Any]]


def split_records(records: list[dict[str, Any]], *, holdout_fraction: float, seed: int) -> Split:
    """Deterministic split by a keyed hash of each record's content, so it survives reordering
    and restarts: a record is in the hold-out set in every round or in none."""
    if len(records) < 2:
        raise DataError(f"{len(records)} record(s) are too few to split into training and hold-out sets (need >= 2)")
    scores = [
        int.from_bytes(hashlib.sha256(f"{seed}:{json.dumps(rec, sort_keys=True)}".encode()).digest()[:8], "big") / 2**64
        for rec in records
    ]
    held = [score < holdout_fraction for score in scores]
    # A small site can hash every record onto one side (10 records at 20%: 0.8**10, about 1 in 9).
    # Move the record nearest the cut across: both sides non-empty, still a function of content only.
    if not any(held):
        held[scores.index(min(scores))] = True
    elif all(held):
        held[scores.index(max(scores))] = False
    return Split(
        train=[rec for rec, h in zip(records, held, strict=True) if not h],
        holdout=[rec for rec, h in zip(records, held, strict=True) if h],
    )
