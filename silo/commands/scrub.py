"""`silo scrub`: scrub a site's records into a directory it can inspect before any training round."""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer

from common.config import DataConfig
from common.config.scrub import ScrubConfig, ScrubOperator
from common.declaration import sum_scrub_reports
from common.errors import ConfigError, DataError
from silo import console
from silo.interrupts import signals_ignored, terminate_as_interrupt

if TYPE_CHECKING:
    from client.scrub import Scrubber

# Off a terminal (a log file, a pipe), progress is one line this often (seconds): a log shows the work
# going on without the printing ever costing more than the scrubbing.
PROGRESS_LOG_INTERVAL_S = 5.0

_EXPLAINED = (
    "Each input file is written to DIR under the same name with the same fields; every field named by --field "
    "(default: text) is scrubbed and the others are copied. Records that cannot be scrubbed (missing or non-text "
    "field, or an identifier still visible on a second pass) are quarantined: they are left out of the output and "
    "counted in DIR/report.json, which never contains a raw value.\n\n"
    "Output appears all at once: it is written to a temporary directory and renamed into place; on an error, "
    "Ctrl-C or SIGTERM (exit 130) the temporary directory is removed and nothing is left behind. A record longer "
    "than [data] max_record_chars of --config (default 1,000,000 characters) is an error."
)
EXAMPLES = (
    "silo scrub --in site/notes.jsonl --out site/scrubbed",
    "silo scrub --in site/raw/ --out site/scrubbed --config site.toml",
    "silo scrub --in messages.csv --out out/ --field subject --field body --operator pseudonym --config site.toml",
)


def register(app: typer.Typer) -> None:
    help_text = (
        "Scrub PII from site records (JSONL/CSV) into a directory, with a report.\n\n"
        "Remove personal data (HIPAA Safe Harbor and bank identifiers) from a JSONL or CSV file, or a directory of "
        "them, so a site can inspect exactly what training will see.\n\n" + _EXPLAINED
    )
    app.command("scrub", help=console.help_text(help_text), epilog=console.examples(*EXAMPLES))(run)


def _load_config(config: str | None, fields: list[str] | None, operator: str | None) -> tuple[ScrubConfig, int]:
    """The `[scrub]` configuration and `[data] max_record_chars` (default when no --config)."""
    section: dict[str, Any] = {}
    max_record_chars = DataConfig.max_record_chars
    if config:
        path = Path(config)
        try:
            with path.open("rb") as f:
                doc = tomllib.load(f)
            section = dict(doc.get("scrub", {}))
            data = doc.get("data", {})
            if isinstance(data, dict) and "max_record_chars" in data:
                max_record_chars = DataConfig(max_record_chars=data["max_record_chars"]).max_record_chars
        except OSError as err:
            raise ConfigError(f"cannot read --config {path}: {err.strerror}.") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path} is not valid TOML: {err}.") from None
        key = section.get("pseudonym_key_file")
        if isinstance(key, str) and key and not Path(key).is_absolute():
            section["pseudonym_key_file"] = str(path.parent / key)  # relative to the TOML's own directory
    if fields:
        section["fields"] = tuple(fields)
    if operator:
        section["operator"] = operator
    return ScrubConfig.from_mapping(section), max_record_chars


def _scrub_file(path: Path, dest: Path, scrubber: Scrubber, max_record_chars: int) -> dict[str, Any]:
    from client.ingest import csv_header, read_record_file
    from client.scrub import scrub_records

    records = [record for _, record in read_record_file(path, max_record_chars=max_record_chars)]
    header = csv_header(path, max_record_chars=max_record_chars) if path.suffix == ".csv" else []
    progress = console.Counter(path.name, unit="records", every_s=PROGRESS_LOG_INTERVAL_S, prefix="silo scrub")
    try:
        result = scrub_records(records, scrubber, progress=progress)
    except BaseException:
        if console.stderr.is_terminal:
            progress.done()  # ends the live line, so the error or "interrupted" starts on a line of its own
        raise
    progress.done()
    with dest.open("w", encoding="utf-8", newline="") as f:
        if header:
            writer = csv.DictWriter(f, fieldnames=header)
            writer.writeheader()
            writer.writerows(dict(r) for r in result.records)
        else:
            for record in result.records:
                f.write(json.dumps(dict(record), ensure_ascii=False) + "\n")
    return result.report


def _total(reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    tallies = ("quarantine_reasons", "entities", "second_pass_entities")
    total = sum_scrub_reports(reports.values(), numbers=("records_in", "records_out", "quarantined"), tallies=tallies)
    return total | {key: dict(sorted(total[key].items())) for key in tallies}


def run(
    inp: Annotated[Path, typer.Option("--in", metavar="PATH", help="a .jsonl or .csv file, or a directory of them")],
    out: Annotated[Path, typer.Option("--out", metavar="DIR", help="output directory (must not exist, or be empty)")],
    field: Annotated[
        list[str] | None,
        typer.Option("--field", metavar="NAME", help="field to scrub (repeatable; default: from config, else 'text')"),
    ] = None,
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            metavar="SITE_TOML",
            help=console.help_text("site TOML whose [scrub] section configures scrubbing"),
        ),
    ] = None,
    operator: Annotated[
        str | None,
        typer.Option(
            "--operator",
            click_type=click.Choice([op.value for op in ScrubOperator]),
            help="replace with <TYPE> (default), keyed pseudonym <TYPE_hhhhhhhh>, or redact",
        ),
    ] = None,
) -> int:
    # Imported here: Presidio takes a second to import, and `silo --help` should not wait for it.
    from client.ingest import list_record_files
    from client.scrub import build_scrubber

    scrub_config, max_record_chars = _load_config(config, field, operator)
    files = list_record_files(inp)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"--out {out} exists and is not an empty directory; choose a new one.")
    scrubber = build_scrubber(scrub_config)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging: Path | None = None
    with terminate_as_interrupt():
        try:
            staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
            reports = {p.name: _scrub_file(p, staging / p.name, scrubber, max_record_chars) for p in files}
            total = _total(reports)
            report = {"config": scrub_config.summary(), "total": total, "files": reports}
            (staging / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
            if out.exists():
                out.rmdir()  # empty, checked above
            os.replace(staging, out)
        except BaseException:
            with signals_ignored():
                if staging is not None:
                    shutil.rmtree(staging, ignore_errors=True)
            raise
    console.say(
        f"silo scrub: {total['records_out']:,} of {total['records_in']:,} records written to {out}; "
        f"{total['quarantined']:,} quarantined; report: {out / 'report.json'}",
        err=True,
    )
    return 0
