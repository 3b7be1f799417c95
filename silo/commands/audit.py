"""`silo audit`: the auditor's view of a run: report, verify, and an empirical privacy audit (canaries)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common.errors import ConfigError
from server.audit_ledgers import LedgerFile

_EPILOG = """\
An auditor needs only the coordinator's run directory, each site's exported ledger
(`silo ledger export`, a directory or its ledger.jsonl) and each site's public key, obtained from
the site itself. Nothing secret and no records are read; nothing is written except under --out.

examples:
  silo audit report runs/2026-11 --ledger audit/hospital-a --ledger audit/bank-c --out audit/report \
      --public-key keys/sites/hospital-a/site_signing.pub --public-key keys/sites/bank-c/site_signing.pub
  silo audit verify runs/2026-11 --ledger audit/hospital-a --public-key keys/sites/hospital-a/site_signing.pub \
      --ledger audit/bank-c --public-key keys/sites/bank-c/site_signing.pub
  silo audit canaries --out audit/canaries            # DP on, then the same run with DP off
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="report on, verify, or empirically audit a run's privacy",
        description="The auditor's view of a federation run.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    report = actions.add_parser(
        "report",
        help="write report.html (self-contained), report.json and summary.md",
        description="Build the audit report of RUN: ε per site against its budget, DP settings, sites per "
        "round, scrub counts, rejected updates, method (accountant, conversion, δ, sampling, SecAgg, "
        "central DP), code version, config hash and each round's adapter hash.",
    )
    report.add_argument("run", metavar="RUN", help="the coordinator's run directory")
    report.add_argument(
        "--ledger",
        action="append",
        default=[],
        metavar="FILE",
        help="a site's exported ledger (directory or JSONL); repeat per site",
    )
    report.add_argument(
        "--public-key",
        action="append",
        default=[],
        metavar="FILE",
        help="a site's Ed25519 public key (PEM), from the site; repeat per site. With them the report is verified "
        "first (as `silo audit verify`) and its first line says the outcome; without, it says NOT VERIFIED",
    )
    report.add_argument("--out", default=None, metavar="DIR", help="output directory (default RUN/audit)")
    report.set_defaults(func=run_report)

    verify = actions.add_parser(
        "verify",
        help="recompute every ε independently; check chains, signatures, adapter and update hashes",
        description="Exit 0 only when every check ran and passed: every site that took part needs its "
        "exported ledger and its public key. Exit 9 naming the first discrepancy (a void ε claim, from "
        "noise that was not fresh, is one); exit 10 naming what was not checked, unless --partial.",
    )
    verify.add_argument("run", metavar="RUN", help="the coordinator's run directory")
    verify.add_argument(
        "--ledger",
        action="append",
        default=[],
        metavar="FILE",
        help="a site's exported ledger (directory or JSONL); repeat per site",
    )
    verify.add_argument(
        "--public-key",
        action="append",
        default=[],
        metavar="FILE",
        help="a site's Ed25519 public key (PEM), from the site; repeat per site",
    )
    verify.add_argument(
        "--partial",
        action="store_true",
        help="accept what could not be checked (exit 0 listing it) instead of exit 10",
    )
    verify.add_argument("--json", action="store_true", help="print every check as JSON")
    verify.set_defaults(func=run_verify)

    canaries = actions.add_parser(
        "canaries",
        help="plant canaries at a site, train for real with and without DP, measure exposure",
        description="Empirical privacy audit (Carlini et al. 2019 exposure; Steinke et al. 2023 one-run "
        "ε lower bound) of the site's real DP training path, reported next to the claimed ε.",
    )
    canaries.add_argument("--out", required=True, metavar="DIR", help="work and output directory")
    canaries.add_argument("--base-model", metavar="DIR", help="base model directory (default: build a small one)")
    canaries.add_argument(
        "--canaries", type=int, default=None, metavar="N", help="canaries planted (and as many held out)"
    )
    canaries.add_argument(
        "--repeats",
        type=int,
        default=None,
        metavar="K",
        help="copies of each canary in the DP-off run (DP-on plants each once)",
    )
    canaries.add_argument("--rounds", type=int, default=None, metavar="N", help="training rounds per run")
    canaries.add_argument("--only", choices=("dp", "no-dp"), default=None, help="run one side only")
    canaries.set_defaults(func=run_canaries)


def _ledger_paths(values: list[str]) -> list[str | Path]:
    from server.audit_ledgers import ledger_file_path

    paths: list[str | Path] = [ledger_file_path(v) for v in values]
    for p in paths:
        if not Path(p).is_file():
            raise ConfigError(f"ledger {p} does not exist (pass a `silo ledger export` directory or its ledger.jsonl)")
    return paths


def run_report(args: argparse.Namespace) -> int:
    from common.ledger.verify import read_ledger
    from server.audit import write_report

    paths_in = _ledger_paths(args.ledger)
    ledgers = [LedgerFile(Path(p), read_ledger(p)) for p in paths_in]
    verdict = None
    if args.public_key:
        from server.audit_verify import verify_run
        from server.report_verdict import verdict_of

        result = verify_run(args.run, paths_in, args.public_key)
        verdict = verdict_of(
            result, public_keys=[Path(k) for k in args.public_key], ledgers=[Path(p) for p in paths_in]
        )
    out = Path(args.out) if args.out else Path(args.run) / "audit"
    paths = write_report(args.run, out, ledgers, verdict)
    for kind, path in paths.items():
        print(f"wrote {path} ({kind})")
    print(json.loads(paths["json"].read_text())["verification"]["line"])
    if not ledgers:
        print("note: no --ledger given: ε is as the sites declared it in the manifest; run `silo audit verify` "
              "with the sites' exported ledgers to check it", file=sys.stderr)  # fmt: skip
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from server.audit_verify import verify_run

    result = verify_run(args.run, _ledger_paths(args.ledger), args.public_key)
    if args.json:
        print(json.dumps({"run": args.run, **result.as_dict()}, indent=2))
    else:
        for check in result.checks:
            print(f"{'OK  ' if check.ok else 'FAIL'} {check.name}: {check.detail}")
        for item in result.unchecked:
            print(f"NOT CHECKED {item}")
    result.raise_for_failure(partial=args.partial)
    if not args.json:
        passed = f"verified {args.run}: {len(result.checks)} checks passed"
        gaps = f"; PARTIAL: {len(result.unchecked)} item(s) not checked (listed above)" if result.unchecked else ""
        print(passed + gaps)
    return 0


def run_canaries(args: argparse.Namespace) -> int:
    from silo.canaries import CanaryAuditConfig, format_audit, run_canary_audit

    defaults = CanaryAuditConfig()
    config = CanaryAuditConfig(
        canaries=args.canaries or defaults.canaries,
        repeats_without_dp=args.repeats or defaults.repeats_without_dp,
        rounds=args.rounds or defaults.rounds,
    )
    sides = {"dp": (True,), "no-dp": (False,), None: (True, False)}[args.only]
    result = run_canary_audit(Path(args.out), config=config, base_model=args.base_model, dp_sides=sides,
                              log=lambda line: print(line, file=sys.stderr))  # fmt: skip
    print(format_audit(result))
    return 0
