"""Reading a site's records: every problem is one DataError naming the file and line; a stable split."""

import csv
import json
import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.ingest import MAX_JSON_DEPTH, list_record_files, load_site_records, read_records, split_records
from common.config import DataConfig, TaskConfig, TaskType
from common.errors import ConfigError, DataError

DATA = DataConfig()
CAUSAL_LM = TaskConfig(type=TaskType.CAUSAL_LM)
CLASSIFICATION = TaskConfig(type=TaskType.CLASSIFICATION, labels=("routine", "urgent"))


def _jsonl(*records: dict) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def _records(n: int) -> list[dict]:
    return [{"text": f"note {i}", "label": "routine"} for i in range(n)]


def _key(records: list[dict]) -> list[str]:
    return sorted(json.dumps(r, sort_keys=True) for r in records)


def test_load_site_records_reads_jsonl_and_csv(tmp_path):
    (tmp_path / "a.csv").write_text('text,label\n"fever, cough",urgent\nfollow-up,routine\n')
    (tmp_path / "b.jsonl").write_text(_jsonl({"text": "chest pain", "label": "urgent"}))
    (tmp_path / "notes.txt").write_text("ignored: not a record file\n")

    records = load_site_records(tmp_path, DATA, CLASSIFICATION)

    assert records == [
        {"text": "fever, cough", "label": "urgent"},
        {"text": "follow-up", "label": "routine"},
        {"text": "chest pain", "label": "urgent"},
    ]


def test_load_site_records_accepts_prompt_response_records(tmp_path):
    (tmp_path / "qa.jsonl").write_text(_jsonl({"prompt": "Q?", "response": "A."}, {"text": "plain"}))

    assert len(load_site_records(tmp_path, DATA, CAUSAL_LM)) == 2


def test_read_records_names_the_line_of_malformed_jsonl(tmp_path):
    path = tmp_path / "notes.jsonl"
    # Line 2 is blank (skipped but counted); line 3 is the broken one.
    path.write_text('{"text": "ok"}\n\n{"text": "unterminated\n{"text": "never read"}\n')

    with pytest.raises(DataError) as err:
        read_records(tmp_path)

    assert f"{path}:3: invalid JSON" in str(err.value)


def test_read_records_refuses_a_jsonl_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "notes.jsonl"
    path.write_text('{"text": "ok"}\n["a", "list"]\n')

    with pytest.raises(DataError, match="expected a JSON object, got list") as err:
        read_records(path)
    assert f"{path}:2:" in str(err.value)


@pytest.mark.parametrize("bad_row", ["too,many,fields", "one-field-only"], ids=["extra", "missing"])
def test_read_records_names_the_line_of_a_csv_row_with_the_wrong_field_count(tmp_path, bad_row):
    path = tmp_path / "notes.csv"
    # Header on line 1, a good row on 2, a blank line on 3, the bad row on line 4.
    path.write_text(f"text,label\nfine,routine\n\n{bad_row}\n")

    with pytest.raises(DataError, match="different number of fields") as err:
        read_records(tmp_path)

    assert f"{path}:4:" in str(err.value)


@pytest.mark.parametrize(
    ("record", "task", "message"),
    [
        ({"label": "routine"}, CLASSIFICATION, "field 'text' must be non-empty text, got nothing"),
        ({"text": "   ", "label": "routine"}, CLASSIFICATION, "field 'text' must be non-empty text, got blank text"),
        ({"text": 42}, CAUSAL_LM, "field 'text' must be non-empty text, got a JSON number"),
        ({"text": ["a"]}, CAUSAL_LM, "field 'text' must be non-empty text, got a JSON array"),
        (
            {"text": "note", "label": "emergency"},
            CLASSIFICATION,
            "field 'label' must be one of `task.labels` (2 labels), got a label not in the list",
        ),
        ({"text": "note"}, CLASSIFICATION, "field 'label' must be one of `task.labels` (2 labels), got nothing"),
        (
            {"text": "note", "label": True},
            CLASSIFICATION,
            "field 'label' must be one of `task.labels` (2 labels), got a JSON boolean",
        ),
        ({"prompt": "Q?"}, CAUSAL_LM, "field 'response' must be non-empty text, got nothing"),
    ],
    ids=[
        "missing-text",
        "blank-text",
        "number-text",
        "list-text",
        "unknown-label",
        "missing-label",
        "bool-label",
        "prompt-only",
    ],
)
def test_load_site_records_names_file_and_line_of_a_bad_record(tmp_path, record, task, message):
    path = tmp_path / "notes.jsonl"
    path.write_text(_jsonl({"text": "fine", "label": "routine"}) + "\n" + _jsonl(record))

    with pytest.raises(DataError) as err:
        load_site_records(tmp_path, DATA, task)

    assert f"{path}:3: {message}" in str(err.value)


def test_load_site_records_uses_the_configured_field_names(tmp_path):
    (tmp_path / "notes.jsonl").write_text(_jsonl({"body": "note", "class": "urgent"}))
    data = DataConfig(text_field="body", label_field="class")

    assert load_site_records(tmp_path, data, CLASSIFICATION) == [{"body": "note", "class": "urgent"}]
    with pytest.raises(DataError, match="field 'text'"):
        load_site_records(tmp_path, DATA, CLASSIFICATION)


def test_list_record_files_reports_a_missing_data_dir(tmp_path):
    missing = tmp_path / "no-such-dir"

    with pytest.raises(DataError, match="data directory not found") as err:
        list_record_files(missing)
    assert str(missing) in str(err.value)


def test_list_record_files_reports_a_dir_without_record_files(tmp_path):
    (tmp_path / "notes.txt").write_text("text\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "nested.jsonl").write_text(_jsonl({"text": "not looked at"}))

    with pytest.raises(DataError, match="no .jsonl or .csv files") as err:
        list_record_files(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_list_record_files_refuses_an_unsupported_file(tmp_path):
    path = tmp_path / "notes.parquet"
    path.write_bytes(b"PAR1")

    with pytest.raises(DataError, match="unsupported file type '.parquet'"):
        list_record_files(path)


def test_read_records_reports_a_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "notes.jsonl"
    path.write_bytes(b'{"text": "caf\xe9"}\n')

    with pytest.raises(DataError, match="not UTF-8") as err:
        read_records(tmp_path)
    assert str(path) in str(err.value)


def test_load_site_records_refuses_files_with_no_records(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    (tmp_path / "header-only.csv").write_text("text,label\n")

    with pytest.raises(DataError, match="no records"):
        load_site_records(tmp_path, DATA, CAUSAL_LM)


def test_split_records_is_deterministic_and_independent_of_order():
    records = _records(200)
    shuffled = list(records)
    random.Random(0).shuffle(shuffled)

    first = split_records(records, holdout_fraction=0.2, seed=7)
    again = split_records(records, holdout_fraction=0.2, seed=7)
    reordered = split_records(shuffled, holdout_fraction=0.2, seed=7)

    assert first == again
    assert _key(reordered.holdout) == _key(first.holdout)
    assert _key(reordered.train) == _key(first.train)
    assert _key(first.train + first.holdout) == _key(records)
    assert 20 <= len(first.holdout) <= 60  # ~20% of 200; fixed for this seed, so not flaky


def test_split_records_depends_on_the_seed():
    records = _records(200)

    assert _key(split_records(records, holdout_fraction=0.2, seed=1).holdout) != _key(
        split_records(records, holdout_fraction=0.2, seed=2).holdout
    )


@pytest.mark.parametrize("n", [0, 1])
def test_split_records_refuses_too_few_records(n):
    with pytest.raises(DataError, match="too few"):
        split_records(_records(n), holdout_fraction=0.2, seed=0)


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(min_value=2, max_value=40),
    holdout_fraction=st.floats(min_value=0.01, max_value=0.99),
    seed=st.integers(min_value=0, max_value=2**31),
)
def test_split_records_is_never_empty_on_either_side(n, holdout_fraction, seed):
    records = _records(n)

    split = split_records(records, holdout_fraction=holdout_fraction, seed=seed)

    assert split.train and split.holdout
    assert _key(split.train + split.holdout) == _key(records)
    shuffled = list(reversed(records))
    assert _key(split_records(shuffled, holdout_fraction=holdout_fraction, seed=seed).holdout) == _key(split.holdout)


# ---- hostile records: errors name file, line and field, never a value ---------------------------------------

# No letter or digit that the messages themselves use in a run of four ("JSON", "UTF-8", "1,000,000").
_SECRET_ALPHABET = "ABCDEGHKMPQRWXYZ23456789"
SMALL = DataConfig(max_record_chars=20_000)


def _write(path, content: str | bytes) -> None:
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)


def _malformed(kind: str, secret: str) -> tuple[str, str | bytes, TaskConfig, str]:
    """(file name, content, task, what the error says): a file whose line 3 is malformed as named, with `secret`
    planted in it."""
    good_jsonl = _jsonl({"text": "fine", "label": "routine"}) * 2
    good_csv = "text,label\nfine,routine\n"
    digits = "".join(c for c in secret if c.isdigit()) or "7"
    many_digits = (digits * 5_000)[:5_000]  # past Python's 4,300-digit limit on reading an integer
    deep = "[" * 5_000 + f'"{secret}"' + "]" * 5_000  # past the recursion limit, within `max_record_chars`
    cases: dict[str, tuple[str, str | bytes, TaskConfig, str]] = {
        "number-text": (
            "r.jsonl",
            good_jsonl + f'{{"text": {digits}, "note": "{secret}"}}\n',
            CAUSAL_LM,
            "field 'text'",
        ),
        "list-text": ("r.jsonl", good_jsonl + _jsonl({"text": [secret]}), CAUSAL_LM, "field 'text'"),
        "object-text": ("r.jsonl", good_jsonl + _jsonl({"text": {secret: secret}}), CAUSAL_LM, "field 'text'"),
        "missing-text": ("r.jsonl", good_jsonl + _jsonl({"body": secret}), CAUSAL_LM, "field 'text'"),
        "missing-response": ("r.jsonl", good_jsonl + _jsonl({"prompt": secret}), CAUSAL_LM, "field 'response'"),
        "bad-label": (
            "r.jsonl",
            good_jsonl + _jsonl({"text": secret, "label": secret}),
            CLASSIFICATION,
            "field 'label'",
        ),
        "list-label": (
            "r.jsonl",
            good_jsonl + _jsonl({"text": secret, "label": [secret]}),
            CLASSIFICATION,
            "field 'label'",
        ),
        "csv-bad-label": ("r.csv", good_csv + f"{secret},{secret}\n", CLASSIFICATION, "field 'label'"),
        "csv-ragged": (
            "r.csv",
            good_csv + f"{secret},routine,{secret}\n",
            CLASSIFICATION,
            "different number of fields",
        ),
        "not-utf8": (
            "r.jsonl",
            good_jsonl.encode() + f'{{"text": "{secret}'.encode() + b'\xe9\xff"}\n',
            CAUSAL_LM,
            "not UTF-8",
        ),
        "csv-not-utf8": (
            "r.csv",
            good_csv.encode() + secret.encode() + b"\xc3\x28,routine\n",
            CLASSIFICATION,
            "not UTF-8",
        ),
        "huge-field": ("r.csv", good_csv + f'"{secret * 3_000}",routine\n', CLASSIFICATION, "max_record_chars"),
        "huge-line": ("r.jsonl", good_jsonl + _jsonl({"text": secret * 3_000}), CAUSAL_LM, "max_record_chars"),
        "huge-number": ("r.jsonl", good_jsonl + f'{{"text": {many_digits}}}\n', CAUSAL_LM, "a number too long"),
        "nested": ("r.jsonl", good_jsonl + '{"text": ' + deep + "}\n", CAUSAL_LM, "nested too deeply"),
        "invalid-json": ("r.jsonl", good_jsonl + f'{{"text": @{secret}}}\n', CAUSAL_LM, "invalid JSON"),
        "unterminated": ("r.jsonl", good_jsonl + f'{{"text": "{secret}\n', CAUSAL_LM, "invalid JSON"),
        "not-an-object": ("r.jsonl", good_jsonl + json.dumps([secret]) + "\n", CAUSAL_LM, "expected a JSON object"),
    }
    return cases[kind]


@pytest.mark.parametrize(
    "kind",
    [
        "number-text",
        "list-text",
        "object-text",
        "missing-text",
        "missing-response",
        "bad-label",
        "list-label",
        "csv-bad-label",
        "csv-ragged",
        "not-utf8",
        "csv-not-utf8",
        "huge-field",
        "huge-line",
        "huge-number",
        "nested",
        "invalid-json",
        "unterminated",
        "not-an-object",
    ],
)
@settings(max_examples=5, deadline=None)
@given(secret=st.text(alphabet=_SECRET_ALPHABET, min_size=8, max_size=16))
def test_malformed_record_errors_never_contain_record_text(tmp_path_factory, kind, secret):
    directory = tmp_path_factory.mktemp(kind)
    name, content, task, problem = _malformed(kind, secret)
    path = directory / name
    _write(path, content)

    with pytest.raises(DataError) as err:
        load_site_records(directory, SMALL, task)

    message = str(err.value)
    assert message.startswith(f"{path}:3: ")
    said = message.removeprefix(f"{path}:3: ")
    assert problem in said
    leaked = [secret[i : i + 4] for i in range(len(secret) - 3) if secret[i : i + 4] in said]
    assert not leaked, f"{kind}: {said!r} repeats {leaked}"
    assert "\n" not in message
    # Nothing else travels with it: no chained exception (a JSONDecodeError carries the whole line as `.doc`).
    shown_context = None if err.value.__suppress_context__ else err.value.__context__
    assert err.value.__cause__ is None
    assert shown_context is None


def test_read_records_accepts_csv_fields_past_the_csv_module_default(tmp_path):
    # The csv module refuses fields over 131,072 characters by default; the site's own limit decides.
    long_text = "word " * 60_000
    (tmp_path / "long.csv").write_text(f'text,label\n"{long_text}",routine\n')

    [record] = load_site_records(tmp_path, DATA, CLASSIFICATION)

    assert record["text"] == long_text
    assert csv.field_size_limit() == 131_072  # the module-wide limit is left as it was


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_read_records_refuses_a_record_over_max_record_chars(tmp_path, suffix):
    path = tmp_path / f"notes{suffix}"
    if suffix == ".jsonl":
        path.write_text(_jsonl({"text": "fine"}, {"text": "x" * 20_000}))
    else:
        path.write_text("text,other\nfine,fine\n" + "x" * 15_000 + "," + "y" * 15_000 + "\n")

    with pytest.raises(DataError, match=r"record longer than `data.max_record_chars` \(20,000 characters\)") as err:
        load_site_records(tmp_path, SMALL, CAUSAL_LM)
    assert str(err.value).startswith(f"{path}:")


def test_read_records_never_reads_more_than_a_record_of_a_huge_line(tmp_path):
    # 40 MB on one line, limit 20,000: refused after reading ~80 KB, not after loading 40 MB.
    path = tmp_path / "huge.jsonl"
    with path.open("w") as f:
        f.write('{"text": "' + "x" * 40_000_000 + '"}\n')
    start = time.process_time()
    with pytest.raises(DataError, match=f"{path}:1: record longer than"):
        load_site_records(tmp_path, SMALL, CAUSAL_LM)
    assert time.process_time() - start < 1.0


def test_read_records_ignores_a_utf8_byte_order_mark(tmp_path):
    (tmp_path / "bom.csv").write_bytes("\ufefftext,label\nfine,routine\n".encode())
    (tmp_path / "bom.jsonl").write_bytes("\ufeff".encode() + _jsonl({"text": "ok", "label": "urgent"}).encode())

    assert load_site_records(tmp_path, DATA, CLASSIFICATION) == [
        {"text": "fine", "label": "routine"},
        {"text": "ok", "label": "urgent"},
    ]


@pytest.mark.parametrize("value", [0, -5, "1000", 1.5, True])
def test_data_config_rejects_a_bad_max_record_chars(value):
    with pytest.raises(ConfigError, match=r"`data.max_record_chars` must be > 0, got"):
        DataConfig(max_record_chars=value)


def test_load_site_records_refuses_nesting_past_the_limit(tmp_path):
    # Depth 990 parses at the reader's call depth but would blow the recursion limit later, when the split
    # hashes the record from deeper in the stack: refused here, as any record nesting past MAX_JSON_DEPTH.
    def record(depth: int) -> str:
        return '{"text": "ok", "meta": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}\n"

    (tmp_path / "ok.jsonl").write_text(record(MAX_JSON_DEPTH) * 2)
    assert len(load_site_records(tmp_path, DATA, CAUSAL_LM)) == 2

    for depth in (MAX_JSON_DEPTH + 1, 990):
        path = tmp_path / "ok.jsonl"
        path.write_text(record(2) + record(depth))
        with pytest.raises(DataError, match=f"{path}:2: invalid record \\(JSON nested too deeply, limit 32\\)"):
            load_site_records(tmp_path, DATA, CAUSAL_LM)
