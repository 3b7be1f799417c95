"""What the federation itself costs, side by side in one run: the warm site runtime against the old
per-message path, on the same sites, model and records.

Each configuration is a real federation (SuperLink, SuperNodes and Silo's site runtimes as separate
processes on loopback, TLS, DP on) read back from its manifest:

- warm: the defaults. Each site's runtime keeps its model, tokenizer and scrubbed records between
  messages and computes each round's hold-out answer after its reply, in the wait for the next round
  (client/answer_later.py); the coordinator polls replies every 0.05 s; SuperNode waits capped at 0.2 s
  (0.05 s for 2 s after a reply); the adapter travels as fp16 deltas (common/transport.py).
- floor (only when named): the warm setup with 30 records a site, so each site trains about one step and a
  round is almost all fixed cost: what Flower's messaging and the sites' fixed work cost on this machine.
- disk, floor-disk (only when named): warm and floor with the SuperLink's state in its SQLite database
  file, as the local federation kept it before (now in memory, as `silo coordinator start` without
  `--database`): what the database costs a round's messaging, side by side.
- per-message: what a round cost before: a fresh site process per message (imports, model load,
  scrubbing every record, `[site] warm_runtime = false`, the hold-out answer on receipt), Flower's own
  3 s waits at the coordinator and the SuperNode, fp32 on the wire.

Per configuration: round wall time, the slowest site's training time, the overhead share (wall minus
that training, over wall), where the overhead went (the slowest site preparing: config, records,
model; its DP hold-out answer, as far as the round waited for it; the rest of its work: ledger,
encoding, sealing; messaging; the coordinator), and bytes up/down per site against the fp32 adapter. The first round of a warm site
loads and scrubs; later rounds show the steady state. Usage:

    .venv/bin/python bench/federation_cost.py            # 3 sites warm vs per-message, a larger model, 10 sites
    .venv/bin/python bench/federation_cost.py --quick    # 3 sites warm vs per-message only
    .venv/bin/python bench/federation_cost.py --only warm floor   # a round's cost beside its fixed part
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import mean

from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.config import WireEncoding, load_federation_config, load_site_config  # noqa: E402
from silo.basemodel import build_base_model  # noqa: E402
from silo.demo import (  # noqa: E402
    DEMO_HIDDEN_SIZE,
    TOKENIZER_CORPUS_SEED,
    DemoLayout,
    run_local_federation,
    write_federation,
    write_site,
)
from silo.keygen import create_keys  # noqa: E402
from silo.synthetic import make_bank_messages, make_clinical_notes  # noqa: E402

# Records per site of the `floor` setup: each site trains about one step, so a round is almost all fixed cost.
FLOOR_RECORDS = 30
FLOOR_NAME = f"floor ({FLOOR_RECORDS} rec/site)"

STAGES = (
    ("site_prepare_seconds", "prepare"),
    ("site_eval_seconds", "hold-out answer"),
    ("site_other_seconds", "ledger+seal"),
    ("messaging_seconds", "messaging"),
    ("coordinator_seconds", "coordinator"),
    ("checkpoint_seconds", "checkpoint"),
)


@dataclass(frozen=True)
class Setup:
    name: str
    sites: int
    hidden: int
    warm: bool
    records: int | None = None  # records per site; None: --records
    database: bool = False  # the SuperLink's state in a database file (SQLite) instead of memory


def machine() -> str:
    return f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def per_message_site(path: Path) -> None:
    """The site TOML at `path`, rewritten with `[site] warm_runtime = false`."""
    cfg = load_site_config(str(path))
    path.write_text(replace(cfg, site=replace(cfg.site, warm_runtime=False)).to_toml(defaults=True))


def per_message_federation(path: Path) -> None:
    """The federation TOML at `path`, rewritten with fp32 on the wire and Flower's 3 s reply polls."""
    cfg = load_federation_config(str(path))
    fed = replace(cfg.federation, wire_encoding=WireEncoding.FP32, reply_poll_s=3.0)
    path.write_text(replace(cfg, federation=fed).to_toml(defaults=True))


def build(out: Path, setup: Setup, *, records: int, rounds: int, log: object) -> tuple[DemoLayout, list[Path]]:
    layout = DemoLayout(out)
    corpus = [r.text for r in make_clinical_notes(300, seed=TOKENIZER_CORPUS_SEED)]
    corpus += [r.text for r in make_bank_messages(300, seed=TOKENIZER_CORPUS_SEED)]
    build_base_model(layout.base_model, corpus, hidden_size=setup.hidden)
    makers = (make_clinical_notes, make_bank_messages)
    site_ids = [f"site-{i:02d}" for i in range(setup.sites)]
    configs = []
    for i, site_id in enumerate(site_ids):
        recs = [{"text": r.text} for r in makers[i % 2](records, seed=100 + i)]
        cfg = write_site(layout, site_id, recs, base_model=str(layout.base_model), rounds=rounds)
        if not setup.warm:
            per_message_site(cfg)
        configs.append(cfg)
    create_keys(layout.keys, site_ids)
    write_federation(
        layout,
        base_model=str(layout.base_model),
        rounds=rounds,
        min_sites=setup.sites,
        registry=layout.registry,
        timeout_s=900,
    )
    if not setup.warm:
        per_message_federation(layout.federation_config)
    return layout, configs


def run(out: Path, setup: Setup, *, records: int, rounds: int) -> dict:
    layout, configs = build(out, setup, records=records, rounds=rounds, log=sys.stderr)
    old = os.environ.get("SILO_SUPERNODE_MAX_SLEEP_S")
    os.environ["SILO_SUPERNODE_MAX_SLEEP_S"] = "0.2" if setup.warm else "3"  # 3: Flower's own waits
    try:
        print(f"\n[bench] {setup.name}: {setup.sites} sites, hidden {setup.hidden}", file=sys.stderr)
        manifest = run_local_federation(
            layout, configs, timeout=3600, log=sys.stderr, superlink_database=setup.database
        )
    finally:
        if old is None:
            os.environ.pop("SILO_SUPERNODE_MAX_SLEEP_S", None)
        else:
            os.environ["SILO_SUPERNODE_MAX_SLEEP_S"] = old
    params = sum(t.numel() for f in layout.base_model.glob("*.safetensors") for t in load_file(f).values())
    rows = []
    for r in manifest["rounds"]:
        if r["round"] == 0:
            continue
        # The round's time until the next round can start: its exchange and aggregation, then its checkpoint.
        wall = r["round_seconds"] + r.get("timings", {}).get("checkpoint_seconds", 0.0)
        train = r["slowest_site_train_seconds"]
        rows.append(
            {
                "round": r["round"],
                "wall": wall,
                "train": train,
                "overhead": (wall - train) / wall,
                "up": max(s["bytes_up"] for s in r["sites"]),
                "down": r["bytes_down_per_site"],
                "fp32": r.get("transport", {}).get("bytes_fp32_adapter"),
                **{k: r.get("timings", {}).get(k, 0.0) for k, _ in STAGES},
            }
        )
    final = next(r for r in manifest["rounds"] if r["round"] == rounds)["eval"]
    return {"setup": setup.__dict__, "params": params, "rows": rows, "final_eval_loss": final.get("eval_loss")}


def _steady(res: dict) -> list[dict]:
    """A setup's rounds after the first (which loads the model and scrubs the records), or the first alone."""
    return res["rows"][1:] or res["rows"]


def report(results: list[dict]) -> None:
    print(f"\nFederation cost — machine: {machine()}; real SuperLink/SuperNodes/site runtimes on loopback, TLS, DP on")
    width = max([22, *(len(r["setup"]["name"]) for r in results)])
    head = f"{'setup':<{width}} {'model':>9} {'rnd':>3} {'round s':>7} {'train s':>7} {'overhead':>8}"
    head += "".join(f" {label:>15}" for _, label in STAGES) + f" {'up/fp32':>7} {'down/fp32':>9}"
    print(head)
    for res in results:
        s = res["setup"]
        for row in res["rows"]:
            line = f"{s['name']:<{width}} {res['params'] / 1e6:>8.2f}M {row['round']:>3} {row['wall']:>7.1f} "
            line += f"{row['train']:>7.1f} {row['overhead']:>8.1%}"
            line += "".join(f" {row[k]:>15.2f}" for k, _ in STAGES)
            fp32 = row["fp32"] or row["up"]
            line += f" {row['up'] / fp32:>7.2f} {row['down'] / fp32:>9.2f}"
            print(line)
    print("\nsteady state (rounds after the first), mean:")
    for res in results:
        steady = _steady(res)
        wall, train = mean(r["wall"] for r in steady), mean(r["train"] for r in steady)
        answer = mean(r["site_eval_seconds"] for r in steady)
        print(
            f"  {res['setup']['name']:<{width}} round {wall:6.1f}s  slowest training {train:6.1f}s  overhead "
            f"{(wall - train) / wall:6.1%} (hold-out answer {answer / wall:5.1%}, the rest {(wall - train - answer) / wall:5.1%})"
            f"  final held-out loss (DP release) {res['final_eval_loss']:.3f}"
        )
    by_name = {r["setup"]["name"]: r for r in results}
    if "warm, 3 sites" in by_name and "per-message, 3 sites" in by_name:
        w, p = by_name["warm, 3 sites"]["rows"], by_name["per-message, 3 sites"]["rows"]
        ws, ps = _steady(by_name["warm, 3 sites"]), _steady(by_name["per-message, 3 sites"])
        print(
            f"\nwarm / per-message round time (steady): {mean(r['wall'] for r in ws) / mean(r['wall'] for r in ps):.2f}; "
            f"bytes up: {w[0]['up'] / p[0]['up']:.2f} of fp32"
        )
    for memory in ("warm, 3 sites", FLOOR_NAME):
        disk = f"{memory}, state on disk"
        if memory in by_name and disk in by_name:
            m, d = _steady(by_name[memory]), _steady(by_name[disk])
            print(
                f"\n{memory}: SuperLink state in memory / in a database file, steady: messaging "
                f"{mean(r['messaging_seconds'] for r in m):.2f}s / {mean(r['messaging_seconds'] for r in d):.2f}s, round "
                f"{mean(r['wall'] for r in m):.1f}s / {mean(r['wall'] for r in d):.1f}s"
            )
    floor = by_name.get(FLOOR_NAME)
    if floor is not None and "warm, 3 sites" in by_name:
        fs, ws = _steady(floor), _steady(by_name["warm, 3 sites"])
        fixed = mean(r["wall"] - r["train"] for r in fs)
        print(
            f"\nfixed cost of a round (floor: wall minus training, steady) {fixed:.2f}s; against the warm round's "
            f"{mean(r['wall'] for r in ws):.1f}s that is {fixed / mean(r['wall'] for r in ws):.1%}; overhead <= 10% "
            f"needs a round's training >= {9 * fixed:.1f}s at this fixed cost"
        )
    print(
        "overhead = round wall time minus the slowest site's training time; the stages are the slowest site's "
        "(prepare: config, records, model, tokenizer; hold-out answer: its DP evaluation; ledger+seal: the rest "
        "of its work), messaging (the exchange minus that site's work: Flower, TLS, polls), the coordinator "
        "(ledger heads, aggregation) and its checkpoint of the round (adapter and manifest written and fsynced). "
        "The hold-out answer is the slowest site's DP evaluation of the adapter it received (a forward pass over "
        "its hold-out split), as far as the round waited for it: computed on receipt on the per-message path; "
        "computed after the site's reply by a warm runtime, so that only what is left of it when the next "
        "message comes counts. The rest is what the federation itself costs."
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--records", type=int, default=240)
    ap.add_argument("--quick", action="store_true", help="3 sites, warm vs per-message only")
    ap.add_argument("--large-hidden", type=int, default=512, help="hidden size of the larger model (trend)")
    ap.add_argument("--many-sites", type=int, default=10)
    ap.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temp dir)")
    ap.add_argument(
        "--only",
        nargs="+",
        choices=("warm", "per-message", "large", "many", "floor", "disk", "floor-disk"),
        help="run only these setups (floor: the demo federation with 30 records a site, so a round is almost all "
        "fixed cost; disk, floor-disk: warm and floor with the SuperLink's state in a database file, as before "
        "it was kept in memory; these three run only when named)",
    )
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="silo-bench-fed-"))
    named = [
        ("warm", Setup("warm, 3 sites", 3, DEMO_HIDDEN_SIZE, True)),
        ("per-message", Setup("per-message, 3 sites", 3, DEMO_HIDDEN_SIZE, False)),
        ("large", Setup(f"warm, 3 sites, h{args.large_hidden}", 3, args.large_hidden, True)),
        ("many", Setup(f"warm, {args.many_sites} sites", args.many_sites, DEMO_HIDDEN_SIZE, True)),
        # What a round costs with almost no training: Flower's messaging and the sites' fixed work.
        ("floor", Setup(FLOOR_NAME, 3, DEMO_HIDDEN_SIZE, True, FLOOR_RECORDS)),
        # The same two with the SuperLink's state in its SQLite database, as the demo kept it before 45ffb84.
        ("disk", Setup("warm, 3 sites, state on disk", 3, DEMO_HIDDEN_SIZE, True, database=True)),
        (
            "floor-disk",
            Setup(f"{FLOOR_NAME}, state on disk", 3, DEMO_HIDDEN_SIZE, True, FLOOR_RECORDS, database=True),
        ),
    ]
    opt_in = ("floor", "disk", "floor-disk")
    wanted = args.only or (("warm", "per-message") if args.quick else [n for n, _ in named if n not in opt_in])
    setups = [setup for name, setup in named if name in wanted]
    results = []
    for i, setup in enumerate(setups):
        shutil.rmtree(out / f"run-{i}", ignore_errors=True)  # a run directory left from before would be resumed
        results.append(run(out / f"run-{i}", setup, records=setup.records or args.records, rounds=args.rounds))
        (out / "federation_cost.json").write_text(json.dumps({"machine": machine(), "results": results}, indent=2))
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
