"""Every benchmark of the project, one after another, summed up in one table; writes bench/RESULTS.md.

    .venv/bin/python bench/run_all.py [--full] [--only NAME ...] [--skip NAME ...] [--no-write]

Benchmarks (each also runs on its own; see bench/README.md):
  federation   bench/federation_cost.py    bytes per site per round, federation overhead (real processes)
  dp           bench/dp_overhead.py        DP-SGD vs plain step time and memory, per Opacus grad-sample mode
  scrub        bench/scrub_eval.py         scrub leak rate, precision; throughput vs stock Presidio
  scale        bench/aggregation_scale.py  aggregation + verification time, 10-100 sites, rank 8-64 (7B shape)
  security     bench/security_overhead.py  round overhead of signing/verification and SecAgg+ vs plain FedAvg, 3-30 sites
  utility      bench/utility_banking77.py  Banking77 accuracy / macro-F1: central, federated, federated DP
  medquad      bench/perplexity_medquad.py MedQuAD held-out perplexity, federated non-private vs DP

Default: each with its small (--quick) settings, ~15 minutes in all on a 2-core CPU; --full: their
default settings (utility and medquad use all their data: much longer). They run one at a time so that
no benchmark's timing shares the machine with another's. A benchmark that fails is reported as failed
in the table, with the end of its log, and the others still run. Full logs land in the work directory.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import REPO, format_table, git_commit, machine  # noqa: E402

BENCH = REPO / "bench"
RESULTS = BENCH / "RESULTS.md"

Row = tuple[str, str, str]  # (metric, value, note)


@dataclass
class Bench:
    name: str
    script: str
    quick: list[str]
    full: list[str]
    summarise: Callable[[str, Path], list[Row]]  # (stdout, work dir) -> rows
    outcome: dict[str, Any] = field(default_factory=dict)


def _json(work: Path, name: str) -> dict[str, Any]:
    return json.loads((work / f"{name}.json").read_text())


def summarise_federation(out: str, work: Path) -> list[Row]:
    """One row per federation setup: its steady-state overhead share (rounds after the first) and bytes."""
    data = json.loads((work / "federation" / "federation_cost.json").read_text())
    out_rows: list[Row] = []
    for res in data["results"]:
        rows = res["rows"]
        steady = rows[1:] or rows
        wall = sum(r["wall"] for r in steady) / len(steady)
        train = sum(r["train"] for r in steady) / len(steady)
        fp32 = rows[0]["fp32"] or rows[0]["up"]
        name = res["setup"]["name"]
        out_rows.append(
            (
                f"federation overhead, {name} (round wall - slowest site's training)",
                f"{100 * (wall - train) / wall:.0f}% of a {wall:.1f} s round",
                f"rounds 2+, {res['params'] / 1e6:.2f}M-param model, real processes, DP on",
            )
        )
        out_rows.append(
            (
                f"bytes up per site per round, {name}",
                f"{rows[0]['up']:,}",
                f"{rows[0]['up'] / fp32:.2f}x the fp32 adapter",
            )
        )
    return out_rows


def summarise_dp(out: str, work: Path) -> list[Row]:
    rows = _json(work, "dp")["results"]
    plain = {r["seq_len"]: r for r in rows if r["mode"] == "plain"}
    out_rows = []
    for r in sorted(rows, key=lambda r: (r["seq_len"], r["mode"])):
        if r["mode"] == "plain":
            continue
        mem = r.get("train_mib", float("nan")) / plain[r["seq_len"]].get("train_mib", float("nan"))
        out_rows.append(
            (
                f"DP/plain step time, {r['mode']}, seq {r['seq_len']}",
                f"{r['time_ratio']:.2f}x",
                f"train memory {mem:.2f}x",
            )
        )
    return out_rows


def summarise_scrub(out: str, work: Path) -> list[Row]:
    rows: list[Row] = []
    title = ""
    precision = ""
    for line in out.splitlines():
        if line.startswith("== "):
            title = line[3:].split(" (")[0].split(":")[0]  # "== <set> (<detail>): <n> records"
        elif line.startswith("precision"):
            precision = line.split()[1]  # standard's column
        elif line.startswith("DIRECT"):
            parts = line.split()  # DIRECT tokens leak-standard leak-strict leak-stock
            direct = (title, parts[2], f"strict {parts[3]}, stock Presidio {parts[4]}")
        elif line.startswith("throughput") and title:
            m = re.search(r"([\d.]+) records/s vs stock Presidio\s+([\d.]+) records/s: ratio ([\d.]+)x", line)
            speed = f"; {m.group(1)} vs stock {m.group(2)} records/s ({m.group(3)}x)" if m else ""
            rows.append(
                (
                    f"scrub direct-identifier leak (tokens), {direct[0]}",
                    direct[1],
                    f"{direct[2]}; precision {precision}{speed}",
                )
            )
    return rows


def summarise_scale(out: str, work: Path) -> list[Row]:
    data = _json(work, "scale")
    rows: list[Row] = []
    aggs = [
        k[:-2]
        for k in data["rows"][0]
        if k.endswith("_s") and k not in ("verify_total_s",) and not k.endswith("per_update_s")
    ]
    for r in data["rows"]:
        times = ", ".join(f"{a} {r[f'{a}_s']:.2f}" for a in aggs)
        rows.append(
            (
                f"aggregate {r['sites']} sites, rank {r['rank']} ({r['total_gb']:.1f} GB)",
                f"{times} s",
                f"verify all {r['verify_total_s']:.2f} s; {r['mode']}",
            )
        )
    rows += [
        ("growth", line.split(": ", 1)[1], line.split(": ", 1)[0].removeprefix("growth, "))
        for line in out.splitlines()
        if line.startswith("growth,")
    ]
    return rows


def summarise_utility(out: str, work: Path) -> list[Row]:
    data = _json(work, "utility")
    s = data["settings"]
    note = f"{'+'.join(map(str, data['site_records']))} records/site, test {data['test_n']}, {s['rounds']} rounds"
    rows: list[Row] = [
        (
            f"Banking77 {r['title']}",
            f"acc {100 * r['accuracy']:.1f}%, macro-F1 {100 * r['macro_f1']:.1f}%",
            note if r["epsilon_spent"] is None else f"eps spent {r['epsilon_spent']:.2f}; {note}",
        )
        for r in data["rows"]
    ]
    for line in data.get("goals", []):  # "goal (what): MET (figure)", one per issue-18 goal measured
        what, _, verdict = line.partition("): ")
        rows.append((what + ")", verdict, note))
    return rows


def summarise_medquad(out: str, work: Path) -> list[Row]:
    data = _json(work, "medquad")
    note = f"{sum(data['site_records'].values())} records over 3 sites, test {data['test_n']}, small Llama from config"
    rows: list[Row] = [("MedQuAD perplexity, initial adapter", f"{data['rows'][0]['initial_perplexity']:.1f}", note)]
    rows += [
        (
            f"MedQuAD perplexity, {r['title']}",
            f"{r['perplexity']:.1f}",
            note if r["epsilon_spent"] is None else f"eps spent {r['epsilon_spent']:.2f}",
        )
        for r in data["rows"]
    ]
    return rows


def summarise_security(out: str, work: Path) -> list[Row]:
    return [
        (
            f"security overhead, {r['sites']} sites, {r['params']:,}-param adapter",
            f"sign/verify {r['signed'] / r['plain']:.1f}x, SecAgg {r['secagg'] / r['plain']:.1f}x plain FedAvg",
            f"coordinator {r['plain'] * 1e3:.0f}/{r['signed'] * 1e3:.0f}/{r['secagg'] * 1e3:.0f} ms; "
            f"SecAgg per site {r['site_secagg'] * 1e3:.0f} ms",
        )
        for r in _json(work, "security")["rows"]
    ]


def benches(work: Path) -> list[Bench]:
    def quick_or_full(name: str, script: str, summarise: Callable[[str, Path], list[Row]]) -> Bench:
        """A bench whose quick run is its `--quick` and whose figures are in `work/<name>.json`."""
        out = ["--json", str(work / f"{name}.json")]
        return Bench(name, script, ["--quick", *out], out, summarise)

    return [
        Bench(
            "federation",
            "federation_cost.py",
            ["--quick", "--rounds", "3", "--out", str(work / "federation")],
            ["--rounds", "3", "--out", str(work / "federation")],
            summarise_federation,
        ),
        Bench(
            "dp",
            "dp_overhead.py",
            ["--seq-lens", "32", "--rounds", "6", "--json", str(work / "dp.json")],
            ["--json", str(work / "dp.json")],
            summarise_dp,
        ),
        Bench("scrub", "scrub_eval.py", ["--n", "150", "--limit", "1000"], [], summarise_scrub),
        quick_or_full("scale", "aggregation_scale.py", summarise_scale),
        quick_or_full("security", "security_overhead.py", summarise_security),
        quick_or_full("utility", "utility_banking77.py", summarise_utility),
        quick_or_full("medquad", "perplexity_medquad.py", summarise_medquad),
    ]


def run_bench(b: Bench, *, full: bool, work: Path, resume: bool = False) -> None:
    script = BENCH / b.script
    if not script.exists():
        b.outcome = {"status": "absent", "seconds": 0.0, "stdout": "", "rows": []}
        return
    log = work / f"{b.name}.log"
    if resume and log.exists():
        stdout = log.read_text().split("\n--- stderr ---\n")[0]
        b.outcome = {"status": "ok (from an earlier run in this work dir)", "seconds": 0.0, "stdout": stdout}
        try:
            b.outcome["rows"] = b.summarise(stdout, work)
            print(f"[run_all] {b.name}: reused {log}", file=sys.stderr, flush=True)
            return
        except (OSError, KeyError, ValueError, IndexError, ZeroDivisionError):
            pass  # incomplete: run it again
    argv = [sys.executable, str(script), *(b.full if full else b.quick)]
    print(f"[run_all] {b.name}: {' '.join(argv[1:])}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    (work / f"{b.name}.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    b.outcome = {
        "status": "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})",
        "seconds": seconds,
        "stdout": proc.stdout,
        "stderr_tail": proc.stderr[-3000:],
        "rows": [],
    }
    if proc.returncode == 0:
        try:
            b.outcome["rows"] = b.summarise(proc.stdout, work)
        except (OSError, KeyError, ValueError, IndexError, ZeroDivisionError) as err:
            b.outcome["status"] = f"ran, summary failed ({type(err).__name__}: {err})"
    print(f"[run_all] {b.name}: {b.outcome['status']} in {seconds:.0f} s", file=sys.stderr, flush=True)


def summary_rows(bs: list[Bench]) -> list[list[str]]:
    rows = []
    for b in bs:
        if not b.outcome.get("rows"):
            rows.append([b.name, "-", b.outcome.get("status", "skipped"), f"bench/{b.script}"])
        for metric, value, note in b.outcome.get("rows", []):
            rows.append([b.name, metric, value, note])
    return rows


def write_results(bs: list[Bench], *, header: str, full: bool, seconds: float) -> None:
    parts = [
        "# Benchmark results",
        "",
        "Written by `.venv/bin/python bench/run_all.py" + (" --full" if full else "") + "`; do not edit by hand. "
        "How each figure is measured: bench/README.md and each script's docstring.",
        "",
        header.replace("\n", "  \n"),
        "",
        format_table(["bench", "metric", "value", "note"], summary_rows(bs), markdown=True),
        "",
        f"This invocation: {seconds / 60:.1f} min. Data: Banking77 (PolyAI, CC BY 4.0; Casanueva et al. 2020) and MedQuAD "
        "(CC BY 4.0; Ben Abacha & Demner-Fushman 2019), read from ../shared/data.",
        "",
    ]
    for b in bs:
        if not b.outcome or b.outcome["status"] == "absent":
            continue
        parts += [
            f"## {b.name}: bench/{b.script} ({b.outcome['status']}, {b.outcome['seconds']:.0f} s)",
            "",
            "```",
            b.outcome["stdout"].strip() or "(no output)",
            "```",
            "",
        ]
        if not b.outcome["status"].startswith("ok"):
            parts += ["stderr (end):", "", "```", b.outcome.get("stderr_tail", "").strip(), "```", ""]
    RESULTS.write_text("\n".join(parts))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="each benchmark's default (larger) settings")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks")
    ap.add_argument("--skip", nargs="+", metavar="NAME", default=[], help="leave these out")
    ap.add_argument("--work", type=Path, help="logs and JSON here (default: a temp dir)")
    ap.add_argument("--resume", action="store_true", help="reuse benchmarks whose log and JSON are in --work")
    ap.add_argument("--no-write", action="store_true", help=f"do not write {RESULTS.relative_to(REPO)}")
    args = ap.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="silo-bench-all-"))
    work.mkdir(parents=True, exist_ok=True)
    bs = [b for b in benches(work) if (not args.only or b.name in args.only) and b.name not in args.skip]
    commit = git_commit()  # before the runs: RESULTS.md must not report the commit it is about to dirty
    t0 = time.perf_counter()
    for b in bs:
        run_bench(b, full=args.full, work=work, resume=args.resume)
    seconds = time.perf_counter() - t0
    header = (
        f"machine: {machine()}\ncommit: {commit}\ndate: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}\n"
        f"settings: {'--full' if args.full else 'quick (default)'}; logs in {work}\n"
        # Other work on the machine slows every timing: say how loaded it was.
        f"load average (1/5/15 min) at the end: {' / '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    if any("earlier run" in b.outcome.get("status", "") for b in bs):
        header += "\nsome benchmarks were reused from earlier runs (--resume): their own output states their commit"
    print("\n" + header)
    print(format_table(["bench", "metric", "value", "note"], summary_rows(bs)))
    if not args.no_write:
        write_results(bs, header=header, full=args.full, seconds=seconds)
        print(f"\nwrote {RESULTS.relative_to(REPO)}")
    return 0 if all(b.outcome.get("status", "ok").startswith(("ok", "absent")) for b in bs) else 1


if __name__ == "__main__":
    sys.exit(main())
