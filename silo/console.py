"""What every `silo` command prints, through Rich: errors, tables, progress, and `--help` examples.

Output is plain text wherever it is not a terminal (a log file, a pipe, a test), and lines are never
wrapped there: an operator's `grep` and an auditor's diff see one line per line. Text from files and
operators (paths, site ids, TOML section names such as `[privacy]`) is printed verbatim, never read as
Rich markup.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

# file=None: Rich writes to whatever sys.stdout / sys.stderr is when it prints (pytest's capsys included).
stdout = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)

NON_TERMINAL_WIDTH = 10_000  # a table printed to a file keeps each row on one line


def say(text: str, *, err: bool = False) -> None:
    """One line of plain text (never markup) to stdout, or to stderr with `err`."""
    (stderr if err else stdout).print(text, markup=False)


def error(command: str, message: str) -> None:
    """`silo <command>: error: <message>` on stderr, red on a terminal."""
    stderr.print(f"silo {command}: error: {message}", style="bold red", markup=False)


def examples(*lines: str, title: str = "examples:") -> str:
    """A command's `--help` epilog: one example command per line, shown as written."""
    return "\n\n".join([title, *(escape(line) for line in lines)])


def help_text(text: str) -> str:
    """Help text shown verbatim: `[privacy]` stays `[privacy]` instead of being read as Rich markup."""
    return escape(text)


def print_table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]], *, err: bool = False) -> None:
    """A table with right-aligned columns; on a file or pipe each row stays on one line."""
    console = stderr if err else stdout
    table = Table(title=title, title_justify="left", show_edge=False, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(*(escape(str(cell)) for cell in row))
    if not console.is_terminal:  # print(width=) is capped at the console's own width, 80 off a terminal
        console = Console(file=sys.stderr if err else sys.stdout, width=NON_TERMINAL_WIDTH, highlight=False)
    console.print(table)


class Counter:
    """Progress of a count with no known end (records scrubbed): a live line with its rate on a
    terminal; on a file or pipe, a plain line every `every_s` seconds so a log shows the work going on."""

    def __init__(self, label: str, *, unit: str = "records", every_s: float = 5.0, prefix: str = "silo") -> None:
        self.label, self.unit, self.prefix, self.every_s = label, unit, prefix, every_s
        self.n = 0
        self.start = self.last = time.monotonic()
        self._progress: Progress | None = None
        if stderr.is_terminal:
            self._progress = Progress(
                TextColumn(f"{escape(prefix)}: {escape(label)}"),
                TextColumn("{task.completed:,} " + unit),
                TextColumn("({task.fields[rate]:,.0f}/s)"),
                TimeElapsedColumn(),
                console=stderr,
                transient=False,
            )
            self._task = self._progress.add_task(label, total=None, rate=0.0)
            self._progress.start()

    def __call__(self, n: int) -> None:
        self.n = n
        now = time.monotonic()
        if self._progress is not None:
            self._progress.update(self._task, completed=n, rate=n / max(now - self.start, 1e-9))
        elif now - self.last >= self.every_s:
            self.last = now
            self._line(now)

    def _line(self, now: float) -> None:
        rate = self.n / max(now - self.start, 1e-9)
        say(f"{self.prefix}: {self.label}: {self.n:,} {self.unit} ({rate:,.0f}/s)", err=True)

    def close(self) -> None:
        """Stop a live line without a last count (an error or Ctrl-C is what the operator should read)."""
        if self._progress is not None:
            self._progress.stop()

    def done(self) -> None:
        now = time.monotonic()
        if self._progress is not None:
            self._progress.update(self._task, completed=self.n, rate=self.n / max(now - self.start, 1e-9))
            self._progress.stop()
        else:
            self._line(now)
