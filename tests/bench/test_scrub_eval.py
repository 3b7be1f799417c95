"""bench/scrub_eval.py end to end on generated records: every set's table, its goal line and its throughput
against stock Presidio, and the outside sets skipped with a note when their directory is absent."""

from __future__ import annotations

import gzip
import json
import logging
import re

from bench import scrub_eval


def test_the_report_has_each_generated_set_and_skips_absent_outside_sets(tmp_path, capsys) -> None:
    try:
        assert scrub_eval.main(["--n", "12", "--data", str(tmp_path)]) == 0
    finally:
        logging.disable(logging.NOTSET)  # main() silences warnings process-wide; the tests after this need them
    out = capsys.readouterr().out
    assert "== generator (seed 2026): 12 records" in out
    assert "== held-out family (bench/scrub_heldout.py, seed 2026): 12 records" in out
    assert out.count("standard: direct-identifier leak") == 2
    rates = re.findall(r"throughput, standard, 1 process: +(\d+) records/s vs stock Presidio +(\d+) records/s", out)
    assert len(rates) == 2 and all(int(ours) > 0 and int(stock) > 0 for ours, stock in rates)
    for name in ("asq-phi", "contextual-anonymizer"):
        assert f"(skipped {name}: {tmp_path / name}" in out
    assert f"(skipped text with no identifiers: no medquad/ or banking77/ in {tmp_path})" in out


def test_identifier_free_sets_are_read_from_their_files_and_their_masked_share_counted(tmp_path) -> None:
    (tmp_path / "banking77").mkdir()
    rows = ["text,category", "Where is my card?,card_arrival", '"I paid, but it failed",failed']
    (tmp_path / "banking77" / "train.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (tmp_path / "medquad").mkdir()
    with gzip.open(tmp_path / "medquad" / "medquad_answered.jsonl.gz", "wt", encoding="utf-8") as f:
        for answer in ("Acromegaly is rare.", "Ask Dr. Okafor."):
            f.write(json.dumps({"question": "?", "answer": answer}) + "\n")
    clean = scrub_eval.load_clean(tmp_path, None)
    assert clean == {
        "MedQuAD answers": ["Acromegaly is rare.", "Ask Dr. Okafor."],
        "Banking77 messages": ["Where is my card?", "I paid, but it failed"],
    }
    assert scrub_eval.load_clean(tmp_path, 1)["Banking77 messages"] == ["Where is my card?"]
    # "Okafor" (one token of six) in one text of two
    assert scrub_eval.masked_share(clean["MedQuAD answers"], lambda t: [(9, 15)] if "Okafor" in t else []) == (
        1 / 6,
        0.5,
    )


def test_throughput_times_every_record_on_both_sides_in_chunks() -> None:
    seen: list[str] = []
    stock_seen: list[str] = []
    texts = [f"record {i}" for i in range(scrub_eval.THROUGHPUT_CHUNK * 2 + 7)]
    line = scrub_eval.throughput(texts, seen.extend, lambda x: stock_seen.append(x) or x)
    assert seen == stock_seen == texts * scrub_eval.ROUNDS
    assert re.search(r"ratio \d+\.\d\dx$", line)
