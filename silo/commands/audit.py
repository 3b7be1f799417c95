"""`silo audit`: the auditor's view of a run: report, verify, and an empirical privacy audit (canaries)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import click
import typer

from server.audit_ledgers import LedgerFile
from silo import console

_ABOUT = (
    "An auditor needs only the coordinator's run directory, each site's exported ledger "
    "(`silo ledger export`, a directory or its ledger.jsonl) and each site's public key, obtained from "
    "the site itself. Nothing secret and no records are read; nothing is written except under --out."
)

REPORT_EXAMPLES = (
    "silo audit report runs/2026-11 --ledger audit/hospital-a --ledger audit/bank-c --out audit/report "
    "--public-key keys/sites/hospital-a/site_signing.pub --public-key keys/sites/bank-c/site_signing.pub",
)
VERIFY_EXAMPLES = (
    "silo audit verify runs/2026-11 --ledger audit/hospital-a --public-key keys/sites/hospital-a/site_signing.pub "
    "--ledger audit/bank-c --public-key keys/sites/bank-c/site_signing.pub",
)
CANARIES_EXAMPLES = ("silo audit canaries --out audit/canaries            # DP on, then the same run with DP off",)

_RUN_HELP = "the coordinator's run directory"
_LEDGER_HELP = "a site's exported ledger (directory or JSONL); repeat per site"


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        help=console.help_text(
            "report on, verify, or empirically audit a run's privacy\n\n"
            "The auditor's view of a federation run.\n\n" + _ABOUT
        ),
        epilog=console.examples(*REPORT_EXAMPLES, *VERIFY_EXAMPLES, *CANARIES_EXAMPLES),
        no_args_is_help=True,
        rich_markup_mode="rich",
    )
    group.command("report", epilog=console.examples(*REPORT_EXAMPLES))(run_report)
    group.command("verify", epilog=console.examples(*VERIFY_EXAMPLES))(run_verify)
    group.command("canaries", epilog=console.examples(*CANARIES_EXAMPLES))(run_canaries)
    app.add_typer(group, name="audit")


def _ledger_paths(values: list[str]) -> list[str | Path]:
    from server.audit_ledgers import ledger_file_path

    return [ledger_file_path(v) for v in values]


def run_report(
    run: Annotated[str, typer.Argument(metavar="RUN", help=_RUN_HELP, show_default=False)],
    ledger: Annotated[list[str] | None, typer.Option("--ledger", metavar="FILE", help=_LEDGER_HELP)] = None,
    public_key: Annotated[
        list[str] | None,
        typer.Option(
            "--public-key",
            metavar="FILE",
            help="a site's Ed25519 public key (PEM), from the site; repeat per site. With them the report is "
            "verified first (as `silo audit verify`) and its first line says the outcome; without, it says "
            "NOT VERIFIED",
        ),
    ] = None,
    out: Annotated[
        str | None, typer.Option("--out", metavar="DIR", help="output directory (default RUN/audit)")
    ] = None,
) -> int:
    """write report.html (self-contained), report.json and summary.md

    Build the audit report of RUN: ε per site against its budget, DP settings, sites per round, scrub counts, rejected updates, method (accountant, conversion, δ, sampling, SecAgg, central DP), code version, config hash and each round's adapter hash.
    """
    from common.ledger.verify import read_ledger
    from server.audit import write_report

    public_keys = public_key or []
    paths_in = _ledger_paths(ledger or [])
    ledgers = [LedgerFile(Path(p), read_ledger(p)) for p in paths_in]
    verdict = None
    if public_keys:
        from server.audit_verify import verify_run
        from server.report_verdict import verdict_of

        result = verify_run(run, paths_in, public_keys)
        verdict = verdict_of(result, public_keys=[Path(k) for k in public_keys], ledgers=[Path(p) for p in paths_in])
    out_dir = Path(out) if out else Path(run) / "audit"
    paths = write_report(run, out_dir, ledgers, verdict)
    for kind, path in paths.items():
        print(f"wrote {path} ({kind})")
    print(json.loads(paths["json"].read_text())["verification"]["line"])
    if not ledgers:
        print(
            "note: no --ledger given: ε is as the sites declared it in the manifest; run `silo audit verify` "
            "with the sites' exported ledgers to check it",
            file=sys.stderr,
        )
    return 0


def run_verify(
    run: Annotated[str, typer.Argument(metavar="RUN", help=_RUN_HELP, show_default=False)],
    ledger: Annotated[list[str] | None, typer.Option("--ledger", metavar="FILE", help=_LEDGER_HELP)] = None,
    public_key: Annotated[
        list[str] | None,
        typer.Option(
            "--public-key", metavar="FILE", help="a site's Ed25519 public key (PEM), from the site; repeat per site"
        ),
    ] = None,
    partial: Annotated[
        bool,
        typer.Option("--partial", help="accept what could not be checked (exit 0 listing it) instead of exit 10"),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print every check as JSON")] = False,
) -> int:
    """recompute every ε independently; check chains, signatures, adapter and update hashes

    Exit 0 only when every check ran and passed: every site that took part needs its exported ledger and its public key. Exit 9 naming the first discrepancy (a void ε claim, from noise that was not fresh, is one); exit 10 naming what was not checked, unless --partial.
    """
    from server.audit_verify import verify_run

    result = verify_run(run, _ledger_paths(ledger or []), public_key or [])
    if as_json:
        print(json.dumps({"run": run, **result.as_dict()}, indent=2))
    else:
        for check in result.checks:
            print(f"{'OK  ' if check.ok else 'FAIL'} {check.name}: {check.detail}")
        for item in result.unchecked:
            print(f"NOT CHECKED {item}")
    result.raise_for_failure(partial=partial)
    if not as_json:
        passed = f"verified {run}: {len(result.checks)} checks passed"
        gaps = f"; PARTIAL: {len(result.unchecked)} item(s) not checked (listed above)" if result.unchecked else ""
        print(passed + gaps)
    return 0


def run_canaries(
    out: Annotated[str, typer.Option("--out", metavar="DIR", help="work and output directory")],
    base_model: Annotated[
        str | None,
        typer.Option("--base-model", metavar="DIR", help="base model directory (default: build a small one)"),
    ] = None,
    canaries: Annotated[
        int | None, typer.Option("--canaries", metavar="N", help="canaries planted (and as many held out)")
    ] = None,
    repeats: Annotated[
        int | None,
        typer.Option("--repeats", metavar="K", help="copies of each canary in the DP-off run (DP-on plants each once)"),
    ] = None,
    rounds: Annotated[int | None, typer.Option("--rounds", metavar="N", help="training rounds per run")] = None,
    only: Annotated[
        str | None, typer.Option("--only", click_type=click.Choice(["dp", "no-dp"]), help="run one side only")
    ] = None,
) -> int:
    """plant canaries at a site, train for real with and without DP, measure exposure

    Empirical privacy audit (Carlini et al. 2019 exposure; Steinke et al. 2023 one-run ε lower bound) of the site's real DP training path, reported next to the claimed ε.
    """
    from silo.canaries import CanaryAuditConfig, format_audit, run_canary_audit

    defaults = CanaryAuditConfig()
    config = CanaryAuditConfig(
        canaries=canaries or defaults.canaries,
        repeats_without_dp=repeats or defaults.repeats_without_dp,
        rounds=rounds or defaults.rounds,
    )
    sides = {"dp": (True,), "no-dp": (False,), None: (True, False)}[only]
    result = run_canary_audit(
        Path(out), config=config, base_model=base_model, dp_sides=sides, log=lambda line: print(line, file=sys.stderr)
    )
    print(format_audit(result))
    return 0
