"""`silo`: one command for site operators, federation operators and auditors.

Each subcommand lives in its own module under `silo/commands/` and exposes
`register(subparsers) -> None`, which adds its parser and sets `func(args) -> int`.
A `SiloError` becomes one line on stderr and its documented exit code; never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import silo.commands
from common.errors import EXIT_CODES, SiloError
from common.version import CODE_VERSION


def _exit_code_help() -> str:
    lines = ["exit codes:"] + [f"  {code:>3}  {text}" for code, text in sorted(EXIT_CODES.items())]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="silo",
        description="Privacy-preserving federated LoRA fine-tuning: scrub PII at each site, train under "
        "a site-enforced DP budget, aggregate adapters over Flower, verify everything afterwards.",
        epilog=_exit_code_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"silo {CODE_VERSION}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(silo.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"silo.commands.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except SiloError as err:
        print(f"silo {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"silo {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
