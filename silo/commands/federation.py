"""`silo federation run`, `status`, `list`, `logs` and `stop`: for the federation operator."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import click
import typer

from common.config import load_federation_config
from common.errors import ConfigError, FederationFailed
from common.pki import KeyLayout
from silo import console, run_control
from silo.flower_connection import FlowerConnection
from silo.run_progress import follow_run

DEFAULT_SUPERLINK = "127.0.0.1:9093"

_EXAMPLES = {
    "federation run": (
        "silo federation run --config federation.toml --run-dir runs/2026-11 --superlink 127.0.0.1:9093 "
        "--keys keys/coordinator",
        "silo federation run --config federation.toml --run-dir runs/2026-11 --keys keys/coordinator "
        "--stop-on-interrupt   # Ctrl-C stops the run too",
    ),
    "federation status": (
        "silo federation status --run-dir runs/2026-11 --keys keys/coordinator",
        "silo federation status --run-id 8812345 --keys keys/coordinator",
    ),
    "federation list": ("silo federation list --runs runs --keys keys/coordinator",),
    "federation logs": (
        "silo federation logs --run-id 8812345 --keys keys/coordinator",
        "silo federation logs --run-dir runs/2026-11 --keys keys/coordinator",
    ),
    "federation stop": ("silo federation stop --run-dir runs/2026-11 --keys keys/coordinator",),
}


_RUN_HELP = (
    "start (or resume) a run and follow it to the end\n\n"
    "Submit Silo's Flower app to a SuperLink with a federation TOML and a run directory, show each round as it "
    "completes, and exit non-zero unless the run really completed (`flwr run` itself exits 0 on failure). Running "
    "it again on the same --run-dir resumes after the last completed round."
)


def _examples(group: str) -> str:
    return console.examples(*(line for name, lines in _EXAMPLES.items() if name.startswith(group) for line in lines))


def register(app: typer.Typer) -> None:
    fed = typer.Typer(
        help="run, follow, list and stop runs at a SuperLink (run | status | list | logs | stop)\n\n"
        "For the federation operator, on the coordinator host (the Control API is on loopback).",
        epilog=_examples("federation "),
        no_args_is_help=True,
        rich_markup_mode="rich",
    )
    fed.command("run", help=console.help_text(_RUN_HELP), epilog=_examples("federation run"))(run_federation)
    for name, func in (
        ("status", show_status),
        ("list", list_runs),
        ("logs", show_logs),
        ("stop", stop_run),
    ):
        fed.command(name, epilog=_examples(f"federation {name}"))(func)
    app.add_typer(fed, name="federation")


# The options every command that talks to a SuperLink's Control API takes.
Superlink = Annotated[str, typer.Option("--superlink", metavar="HOST:PORT", help="SuperLink address host:port")]
Keys = Annotated[
    Path | None,
    typer.Option("--keys", metavar="DIR", help="the coordinator/ directory from `silo keys` (its ca.pem)"),
]
RootCertificates = Annotated[
    Path | None,
    typer.Option("--root-certificates", metavar="FILE", help="CA certificate for a TLS SuperLink (instead of --keys)"),
]
Insecure = Annotated[bool, typer.Option("--insecure", help="plain-text connection (testing only)")]
RunDir = Annotated[
    Path | None,
    typer.Option("--run-dir", metavar="DIR", help="the run's directory (its manifest names the Flower run)"),
]
RunId = Annotated[int | None, typer.Option("--run-id", metavar="ID", help="Flower's run id (as `flwr ls` shows it)")]


def _access(
    superlink: str, keys: Path | None, root_certificates: Path | None, insecure: bool
) -> run_control.SuperLinkAccess:
    return run_control.SuperLinkAccess.from_args(superlink, keys, root_certificates, insecure)


def _one_run(run_dir: Path | None, run_id: int | None) -> None:
    if run_dir is not None and run_id is not None:
        raise click.UsageError("give at most one of --run-dir, --run-id")


def show_status(
    run_dir: RunDir = None,
    run_id: RunId = None,
    superlink: Superlink = DEFAULT_SUPERLINK,
    keys: Keys = None,
    root_certificates: RootCertificates = None,
    insecure: Insecure = False,
) -> int:
    """One run's state at the SuperLink and in its manifest, with Silo's and Flower's run ids."""
    _one_run(run_dir, run_id)
    for line in run_control.run_status(_access(superlink, keys, root_certificates, insecure), run_dir, run_id):
        print(line)
    return 0


def list_runs(
    runs: Annotated[
        Path | None, typer.Option("--runs", metavar="DIR", help="the directory holding the run directories")
    ] = None,
    superlink: Superlink = DEFAULT_SUPERLINK,
    keys: Keys = None,
    root_certificates: RootCertificates = None,
    insecure: Insecure = False,
) -> int:
    """Every run the SuperLink knows, with the Silo run directory of each (--runs)."""
    lines = run_control.list_runs(_access(superlink, keys, root_certificates, insecure), runs)
    print("\n".join(lines) if lines else f"the SuperLink at {superlink} knows no runs")
    return 0


def show_logs(
    run_dir: RunDir = None,
    run_id: RunId = None,
    superlink: Superlink = DEFAULT_SUPERLINK,
    keys: Keys = None,
    root_certificates: RootCertificates = None,
    insecure: Insecure = False,
) -> int:
    """The ServerApp's log of one run, as the SuperLink kept it."""
    _one_run(run_dir, run_id)
    sys.stdout.write(run_control.run_logs(_access(superlink, keys, root_certificates, insecure), run_dir, run_id))
    return 0


def stop_run(
    run_dir: RunDir = None,
    run_id: RunId = None,
    superlink: Superlink = DEFAULT_SUPERLINK,
    keys: Keys = None,
    root_certificates: RootCertificates = None,
    insecure: Insecure = False,
) -> int:
    """Stop one run at the SuperLink: its sites receive no further messages of it."""
    _one_run(run_dir, run_id)
    fid, _ = run_control.flower_run_id(run_dir, run_id)
    print(run_control.stop_run(_access(superlink, keys, root_certificates, insecure), fid))
    return 0


def _on_interrupt(access: run_control.SuperLinkAccess, run_id: int, *, run_dir: Path, stop_on_interrupt: bool) -> int:
    """Ctrl-C while following a run: the run itself goes on at the SuperLink (and sites go on spending ε)
    unless it is stopped there. Stop it (--stop-on-interrupt, or yes on a terminal) or say how to."""
    stop = stop_on_interrupt
    if not stop and sys.stdin.isatty():
        try:
            answer = input(
                f"\nStop Flower run {run_id} at the SuperLink? Sites go on training and spending ε otherwise. [y/N] "
            )
        except (EOFError, KeyboardInterrupt):
            answer = ""
        stop = answer.strip().lower() in ("y", "yes")
    if stop:
        print(f"silo: {run_control.stop_run(access, run_id)}", file=sys.stderr)
    else:
        where = f"--run-dir {run_dir}"
        print(
            f"silo: Flower run {run_id} goes on at the SuperLink (nothing was stopped). Follow it: `silo federation "
            f"status {where}` and `silo federation logs {where}`; stop it: `silo federation stop {where}`",
            file=sys.stderr,
        )
    return 130


def run_federation(
    config: Annotated[
        Path, typer.Option("--config", metavar="FILE", help="federation TOML (rounds, strategy, min sites, ...)")
    ],
    run_dir: Annotated[
        Path, typer.Option("--run-dir", metavar="DIR", help="coordinator's run directory (created or resumed)")
    ],
    superlink: Superlink = DEFAULT_SUPERLINK,
    keys: Keys = None,
    root_certificates: RootCertificates = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="plain-text connection (testing only; warns)")] = False,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout", metavar="SECONDS", help="seconds before giving up (default: 1 day)", show_default=False
        ),
    ] = 24 * 3600,
    stop_on_interrupt: Annotated[
        bool,
        typer.Option(
            "--stop-on-interrupt",
            help="on Ctrl-C, stop the run at the SuperLink without asking (otherwise asked on a terminal; elsewhere "
            "the run is left going and the commands that stop it are printed)",
        ),
    ] = False,
) -> int:
    cfg = load_federation_config(config)  # fail on a bad config before anything is submitted
    if keys is not None and root_certificates is None:
        root_certificates = KeyLayout(keys).ca_cert if (keys / "coordinator").is_dir() else keys / "ca.pem"
    if not insecure and root_certificates is None:
        raise ConfigError(
            "give --keys (or --root-certificates) for a TLS SuperLink, or --insecure for a plain-text test setup"
        )
    if insecure:
        print("silo: WARNING: --insecure: updates travel unencrypted and unauthenticated", file=sys.stderr)
    home = Path(run_dir).resolve().parent / f".{Path(run_dir).name}.flwr"
    conn = FlowerConnection(home, superlink, insecure=insecure, root_certificates=root_certificates)
    try:
        run_id = conn.submit({"silo-config": str(Path(config).resolve()), "run-dir": str(Path(run_dir).resolve())})
    except FederationFailed as err:
        if "403 Forbidden" not in str(err):
            raise
        raise FederationFailed(
            f"{superlink} refused the Control API (403): that is the Fleet proxy sites use; give the SuperLink's "
            "loopback address on the coordinator host (127.0.0.1:9093), through an SSH tunnel from elsewhere"
        ) from None
    print(f"submitted Flower run {run_id} ({cfg.federation.rounds} rounds, {cfg.federation.strategy})", file=sys.stderr)
    try:
        manifest = follow_run(conn, run_id, run_dir, timeout=timeout, log=sys.stderr)
    except KeyboardInterrupt:
        access = run_control.SuperLinkAccess(superlink, root_certificates, insecure)
        return _on_interrupt(access, run_id, run_dir=run_dir, stop_on_interrupt=stop_on_interrupt)
    print(
        f"run {manifest['run_id']} completed: {manifest['completed_rounds']} rounds; final adapter in {run_dir}/final"
    )
    return 0
