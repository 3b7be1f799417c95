"""`silo`: one command for site operators, federation operators and auditors, built on Typer (as Flower's
own `flwr` is) with Rich for help, errors, tables and progress.

Each subcommand lives in its own module under `silo/commands/` and exposes `register(app: typer.Typer)`,
which adds its command (or its group of commands) to `app`. Every command's `--help` ends with an example.
A `SiloError` becomes one line on stderr and its documented exit code, never a traceback; a usage error
exits 2; Ctrl-C exits 130.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import sys
from typing import Annotated

import click
import typer

import silo.commands
from common.errors import EXIT_CODES, INTERRUPTED, SiloError
from common.version import CODE_VERSION
from silo import console

HELP = (
    "Privacy-preserving federated LoRA fine-tuning: scrub PII at each site, train under a site-enforced DP "
    "budget, aggregate adapters over Flower, verify everything afterwards."
)


def _exit_code_help() -> str:
    return "\n\n".join(
        ["exit codes:", *(f"{code:>3}  {console.help_text(text)}" for code, text in sorted(EXIT_CODES.items()))]
    )


def _version(value: bool) -> None:
    if value:
        console.say(f"silo {CODE_VERSION}")
        raise typer.Exit(0)


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="silo",
        help=HELP,
        epilog=_exit_code_help(),
        no_args_is_help=True,
        add_completion=False,
        rich_markup_mode="rich",
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120},
    )

    @app.callback()
    def _root(
        version: Annotated[
            bool, typer.Option("--version", callback=_version, is_eager=True, help="print silo's version and exit")
        ] = False,
    ) -> None:
        """Privacy-preserving federated LoRA fine-tuning."""

    for info in sorted(pkgutil.iter_modules(silo.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"silo.commands.{info.name}")
        module.register(app)
    return app


def _reflow_help(command: click.Command) -> None:
    """Help text as the terminal's width allows: Rich keeps a docstring's line breaks, so a description
    wrapped at 110 columns in the source came out ragged at 80. Lines within a paragraph are joined;
    indented lines (a layout, a table) keep their own."""
    if command.help:
        paragraphs = [re.sub(r"\n(?![ \t])", " ", p) for p in command.help.split("\n\n")]
        command.help = "\n\n".join(paragraphs)
    for child in getattr(command, "commands", {}).values():
        _reflow_help(child)


def _command_name(argv: list[str]) -> str:
    return next((a for a in argv if not a.startswith("-")), "")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command_name(argv)
    try:
        # Click's own invocation, not Typer's `app()`: that turns Ctrl-C into a silent exit 130, and the
        # operator must read what was interrupted.
        group = typer.main.get_command(build_app())
        _reflow_help(group)
        with group.make_context("silo", argv) as ctx:
            result = group.invoke(ctx)
    except SiloError as err:
        console.error(command, str(err))
        return err.exit_code
    except (KeyboardInterrupt, click.exceptions.Abort):
        console.say(f"silo {command}: interrupted", err=True)
        return INTERRUPTED
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.ClickException as err:
        err.show()
        return err.exit_code
    return int(result or 0) if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
