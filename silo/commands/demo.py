"""`silo demo`: the whole pipeline on synthetic data, offline, on this machine."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import click
import typer

from silo import console

EXAMPLES = (
    "silo demo --out silo-demo",
    "silo demo --out demo-2 --rounds 5 --sites 2 --strategy fedprox",
)
STRATEGIES = ("fedavg", "fedprox", "fedadam")


def register(app: typer.Typer) -> None:
    app.command("demo", epilog=console.examples(*EXAMPLES))(run)


def run(
    out: Annotated[Path, typer.Option("--out", help="output directory")] = Path("silo-demo"),
    rounds: Annotated[int, typer.Option("--rounds", help="federated rounds")] = 3,
    sites: Annotated[int, typer.Option("--sites", help="number of sites, 1-3")] = 3,
    records: Annotated[int, typer.Option("--records", help="synthetic records per site")] = 240,
    strategy: Annotated[
        str, typer.Option("--strategy", click_type=click.Choice(STRATEGIES), help="aggregation strategy")
    ] = "fedavg",
    base_model: Annotated[
        str | None,
        typer.Option(
            "--base-model",
            metavar="PATH_OR_ID",
            help="use this base model (local directory or cached hub id) instead of building one",
        ),
    ] = None,
    encrypt_at_rest: Annotated[
        bool,
        typer.Option(
            "--encrypt-at-rest",
            help="encrypt the coordinator's checkpoints (key in OUT/keys/coordinator/at_rest.key)",
        ),
    ] = False,
    insecure: Annotated[
        bool,
        typer.Option("--insecure", help="no TLS, no SuperNode authentication, no key registry (testing only; warns)"),
    ] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="seconds before the run is declared failed")] = 900.0,
) -> int:
    """Run a 3-site federation on synthetic records, offline (~2-3 min on 2 cores).

    Generate three sites' synthetic records (clinical notes and bank messages with planted names, dates, phone and
    account numbers), build a small base model offline, make the federation's keys (OUT/keys, as `silo keys`
    does), start a real Flower SuperLink (TLS, SuperNode authentication) and one SuperNode per site on loopback,
    run the rounds with signed updates checked against the key registry, and leave the run directory (manifest,
    per-round adapters, final adapter) under OUT/run.
    """
    t0 = time.monotonic()
    if insecure:
        print(
            "silo: WARNING: --insecure: plain-text sockets, any SuperNode may join, updates checked only "
            "against keys pinned on first use",
            file=sys.stderr,
        )
    # Imported here: silo.demo brings Presidio, transformers and torch (~5 s), which every other `silo`
    # command (and `silo --help`) would otherwise wait for.
    from silo.demo import prepare_demo, run_local_federation

    layout = prepare_demo(
        out,
        base_model=base_model,
        sites=sites,
        records=records,
        rounds=rounds,
        strategy=strategy,
        insecure=insecure,
        encrypt_at_rest=encrypt_at_rest,
    )
    site_configs = sorted((layout.out / "sites").glob("*/site.toml"))
    manifest = run_local_federation(
        layout,
        site_configs,
        timeout=timeout,
        log=sys.stderr,
        insecure=insecure,
        encrypt_at_rest=encrypt_at_rest,
    )
    done = manifest["rounds"]
    first, last = done[0]["eval"]["eval_loss"], done[-1]["eval"]["eval_loss"]
    print(
        f"run {manifest['run_id']} completed: {manifest['completed_rounds']} rounds in {time.monotonic() - t0:.0f}s; "
        f"held-out loss {first:.3f} -> {last:.3f}"
    )
    if encrypt_at_rest:
        print(
            f"final adapter: {layout.run_dir / 'final'}  (encrypted; `silo at-rest decrypt --key-file "
            f"{layout.at_rest_key} --in {layout.run_dir / 'final'} --out DIR` for a PEFT directory)"
        )
    else:
        print(f"final adapter: {layout.run_dir / 'final'}  (PeftModel.from_pretrained(base, that_dir))")
    print(f"manifest:      {layout.run_dir / 'manifest.json'}")
    return 0
