"""`silo` command-line entry point (placeholder until the subcommands land)."""

import sys

from common.version import CODE_VERSION


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--version":
        print(f"silo {CODE_VERSION}")
        return 0
    return 0
