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
from common.errors import EXIT_CODES, INTERRUPTED, SiloError
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
    for name, command in _subparsers(parser):
        _share_examples(f"silo {name}", command)
    return parser


def _subparsers(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return [(name, child) for a in actions for name, child in a.choices.items()]


def _share_examples(prog: str, group: argparse.ArgumentParser) -> None:
    """Give each action of a command group (`silo audit verify`) the lines of the group's `examples:`
    that run it, so every command's --help shows an example; an action with its own keeps its own."""
    lines = (group.epilog or "").partition("examples:\n")[2].splitlines()
    for name, action in _subparsers(group):
        if "examples:" in (action.epilog or ""):
            continue
        mine, keep = [], False
        for line in lines:
            keep = line.strip().startswith(f"{prog} {name} ") or (keep and line.startswith("      "))
            if keep:
                mine.append(line)
        if mine:
            action.epilog = "examples:\n" + "\n".join(mine)
            action.formatter_class = argparse.RawDescriptionHelpFormatter


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
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
