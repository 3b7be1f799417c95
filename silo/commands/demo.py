"""`silo demo`: the whole pipeline on synthetic data, offline, on this machine."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from silo.demo import prepare_demo, run_local_federation


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run a 3-site federation on synthetic records, offline (~2-3 min on 2 cores)",
        description="Generate three sites' synthetic records (clinical notes and bank messages with planted "
        "names, dates, phone and account numbers), build a small base model offline, make the federation's keys "
        "(OUT/keys, as `silo keys` does), start a real Flower SuperLink (TLS, SuperNode authentication) and one "
        "SuperNode per site on loopback, run the rounds with signed updates checked against the key registry, "
        "and leave the run directory (manifest, per-round adapters, final adapter) under OUT/run.",
        epilog="examples:\n  silo demo --out silo-demo\n  silo demo --out demo-2 --rounds 5 --sites 2 --strategy fedprox",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=Path("silo-demo"), help="output directory (default: ./silo-demo)")
    p.add_argument("--rounds", type=int, default=3, help="federated rounds (default: 3)")
    p.add_argument("--sites", type=int, default=3, help="number of sites, 1-3 (default: 3)")
    p.add_argument("--records", type=int, default=240, help="synthetic records per site (default: 240)")
    p.add_argument(
        "--strategy",
        choices=["fedavg", "fedprox", "fedadam"],
        default="fedavg",
        help="aggregation strategy (default: fedavg)",
    )
    p.add_argument(
        "--base-model",
        metavar="PATH_OR_ID",
        default=None,
        help="use this base model (local directory or cached hub id) instead of building one",
    )
    p.add_argument(
        "--encrypt-at-rest",
        action="store_true",
        help="encrypt the coordinator's checkpoints (key in OUT/keys/coordinator/at_rest.key)",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="no TLS, no SuperNode authentication, no key registry (testing only; warns)",
    )
    p.add_argument(
        "--timeout", type=float, default=900.0, help="seconds before the run is declared failed (default: 900)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    if args.insecure:
        print("silo: WARNING: --insecure: plain-text sockets, any SuperNode may join, updates checked only "
              "against keys pinned on first use", file=sys.stderr)  # fmt: skip
    layout = prepare_demo(
        args.out,
        base_model=args.base_model,
        sites=args.sites,
        records=args.records,
        rounds=args.rounds,
        strategy=args.strategy,
        insecure=args.insecure,
        encrypt_at_rest=args.encrypt_at_rest,
    )
    sites = sorted((layout.out / "sites").glob("*/site.toml"))
    manifest = run_local_federation(
        layout,
        sites,
        timeout=args.timeout,
        log=sys.stderr,
        insecure=args.insecure,
        encrypt_at_rest=args.encrypt_at_rest,
    )
    rounds = manifest["rounds"]
    first, last = rounds[0]["eval"]["eval_loss"], rounds[-1]["eval"]["eval_loss"]
    print(
        f"run {manifest['run_id']} completed: {manifest['completed_rounds']} rounds in {time.monotonic() - t0:.0f}s; "
        f"held-out loss {first:.3f} -> {last:.3f}"
    )
    if args.encrypt_at_rest:
        print(f"final adapter: {layout.run_dir / 'final'}  (encrypted; `silo at-rest decrypt --key-file "
              f"{layout.at_rest_key} --in {layout.run_dir / 'final'} --out DIR` for a PEFT directory)")  # fmt: skip
    else:
        print(f"final adapter: {layout.run_dir / 'final'}  (PeftModel.from_pretrained(base, that_dir))")
    print(f"manifest:      {layout.run_dir / 'manifest.json'}")
    return 0
