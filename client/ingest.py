"""Read a site's records from its data directory: JSONL and CSV files, one record per line/row.

A record is a dict with, per task: `text` (causal LM), or `prompt` + `response` (causal LM with the
loss on the response), or `text` + `label` (classification). Field names come from `[data]`.
A missing or malformed file is one `DataError` naming the file and line; nothing is half-read.

Records are hostile input, and these errors may cross the wire (a site's error reply, the coordinator's
manifest): a message names the file, the line and the field, NEVER a value from a record, not even a
truncated one. A record longer than `data.max_record_chars` (a JSONL line, a CSV row's fields), JSON nested
past Python's recursion limit or bytes that are not UTF-8 are each one such error, read with bounded memory.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from common.config import DataConfig, TaskConfig, TaskType
from common.errors import DataError

RECORD_SUFFIXES = (".jsonl", ".csv")
# Records are flat objects: values nested deeper than this are hostile, and one that parses near Python's
# recursion limit would fail later (hashing the record for the split) with a traceback instead of here.
MAX_JSON_DEPTH = 32


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


def read_record_file(path: Path, *, max_record_chars: int | None = None) -> list[tuple[int, dict[str, Any]]]:
    """Every record of one file with its 1-based line number; `max_record_chars` defaults to `[data]`'s."""
    limit = DataConfig.max_record_chars if max_record_chars is None else max_record_chars
    try:
        with path.open("rb") as fh:
            lines = _lines(path, fh, limit)
            return _read_jsonl(path, lines) if path.suffix == ".jsonl" else _read_csv(path, lines, limit)
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror})") from None


def _too_long(path: Path, lineno: int, limit: int) -> DataError:
    return DataError(f"{path}:{lineno}: record longer than `data.max_record_chars` ({limit:,} characters)")


def _lines(path: Path, fh: IO[bytes], limit: int) -> Iterator[str]:
    """The file's lines decoded, each at most `limit` characters; never reads more than one line's worth."""
    max_bytes = 4 * limit + 2  # UTF-8 takes at most 4 bytes a character, and a line ends in at most 2
    lineno = 0
    while raw := fh.readline(max_bytes + 1):
        lineno += 1
        if len(raw) > max_bytes:
            raise _too_long(path, lineno, limit)
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(
                f"{path}:{lineno}: not UTF-8 text ({err.reason} at byte {err.start + 1} of the line)"
            ) from None
        if lineno == 1:
            line = line.removeprefix("\ufeff")  # a byte-order mark is not part of the first record
        if len(line.rstrip("\r\n")) > limit:
            raise _too_long(path, lineno, limit)
        yield line


def _read_jsonl(path: Path, lines: Iterator[str]) -> list[tuple[int, dict[str, Any]]]:
    records = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            shallow = _shallow(rec)
        except json.JSONDecodeError as err:  # its message is one of the decoder's fixed phrases, never the text
            raise DataError(f"{path}:{lineno}: invalid JSON ({err.msg} at column {err.colno})") from None
        except RecursionError:
            shallow = False
        except ValueError:  # an integer past Python's digit limit
            raise DataError(f"{path}:{lineno}: invalid JSON (a number too long to read)") from None
        if not shallow:
            raise DataError(f"{path}:{lineno}: invalid record (JSON nested too deeply, limit {MAX_JSON_DEPTH})")
        if not isinstance(rec, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
        records.append((lineno, rec))
    return records


def _shallow(value: Any) -> bool:
    """Whether `value` nests at most MAX_JSON_DEPTH containers deep (iterative: no recursion to exhaust)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth >= MAX_JSON_DEPTH:
                    return False
                stack.append((child, depth + 1))
    return True


@contextmanager
def _csv_reading(path: Path, reader: Any, limit: int) -> Iterator[None]:
    """Fields up to `limit` characters (the csv module's limit is global: restored after); a csv error becomes
    a `DataError` at the reader's line."""
    previous = csv.field_size_limit(limit)
    try:
        yield
    except csv.Error as err:
        too_long = "field limit" in str(err)
        problem = (
            f"a field longer than `data.max_record_chars` ({limit:,} characters)" if too_long else "malformed CSV row"
        )
        raise DataError(f"{path}:{reader.line_num}: {problem}") from None
    finally:
        csv.field_size_limit(previous)


def csv_header(path: Path, *, max_record_chars: int | None = None) -> list[str]:
    """The header row of a CSV record file, read as `read_record_file` reads it."""
    limit = DataConfig.max_record_chars if max_record_chars is None else max_record_chars
    with path.open("rb") as fh:
        reader = csv.reader(_lines(path, fh, limit))
        with _csv_reading(path, reader, limit):
            return next(reader, [])


def _read_csv(path: Path, lines: Iterator[str], limit: int) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(lines)
    with _csv_reading(path, reader, limit):
        if not reader.fieldnames:
            raise DataError(f"{path}:1: empty CSV file (no header row)")
        records = []
        for row in reader:
            if None in row or any(v is None for v in row.values()):
                raise DataError(f"{path}:{reader.line_num}: row has a different number of fields than the header")
            if sum(len(v) for v in row.values()) > limit:
                raise _too_long(path, reader.line_num, limit)
            records.append((reader.line_num, dict(row)))
        return records


def read_records(path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for f in list_record_files(path):
        out.extend(rec for _, rec in read_record_file(f))
    return out


def _kind(value: Any) -> str:
    """What a value is, never what it says."""
    if value is None:
        return "nothing"
    return "blank text" if isinstance(value, str) else f"a JSON {_JSON_KINDS.get(type(value), 'value')}"


_JSON_KINDS = {bool: "boolean", int: "number", float: "number", list: "array", dict: "object"}


def check_record(rec: dict[str, Any], data: DataConfig, task: TaskConfig, where: str) -> None:
    """Raise `DataError` at `where` (file:line) when `rec` lacks what `task` needs, naming the field only."""

    def text(name: str) -> None:
        value = rec.get(name)
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{where}: field {name!r} must be non-empty text, got {_kind(value)}")

    if task.type is TaskType.CLASSIFICATION:
        text(data.text_field)
        label = rec.get(data.label_field)
        if not isinstance(label, str | int) or isinstance(label, bool) or str(label) not in task.labels:
            got = "a label not in the list" if isinstance(label, str) and label.strip() else _kind(label)
            raise DataError(
                f"{where}: field {data.label_field!r} must be one of `task.labels` ({len(task.labels)} labels), got {got}"
            )
    elif data.prompt_field in rec or data.response_field in rec:
        text(data.prompt_field)
        text(data.response_field)
    else:
        text(data.text_field)


def load_site_records(path: Path, data: DataConfig, task: TaskConfig) -> list[dict[str, Any]]:
    """All records under `path`, each checked against the task; errors name file and line."""
    out: list[dict[str, Any]] = []
    for f in list_record_files(path):
        for lineno, rec in read_record_file(f, max_record_chars=data.max_record_chars):
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
