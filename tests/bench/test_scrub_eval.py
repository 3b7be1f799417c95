"""bench/scrub_eval.py end to end on generated records: every set's table, its goal line and its throughput
against stock Presidio, and the outside sets skipped with a note when their directory is absent."""

from __future__ import annotations

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


def test_throughput_times_every_record_on_both_sides_in_chunks() -> None:
    seen: list[str] = []
    stock_seen: list[str] = []
    texts = [f"record {i}" for i in range(scrub_eval.THROUGHPUT_CHUNK * 2 + 7)]
    line = scrub_eval.throughput(texts, seen.extend, lambda x: stock_seen.append(x) or x)
    assert seen == stock_seen == texts * scrub_eval.ROUNDS
    assert re.search(r"ratio \d+\.\d\dx$", line)
