"""`silo federation run` and `silo coordinator start`: for the federation operator."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import click
import typer

from common import encryption
from common.config import load_federation_config
from common.errors import ConfigError, FederationFailed
from common.pki import KeyLayout
from silo import console, proxy, run_control
from silo.launch import (
    FlowerConnection,
    check_port_free,
    flower_env,
    follow_run,
    is_loopback,
    register_sites,
    superlink_argv,
    superlink_env,
    wait_healthy,
)

# How often the foreground coordinator checks that the SuperLink and the proxy are still up.
WATCH_INTERVAL_S = 0.5
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
    "coordinator start": (
        "silo coordinator start --host 127.0.0.1 --port 9093 --fleet-host 0.0.0.0 --fleet-port 9092 "
        "--keys keys/coordinator --database state/superlink/superlink.db",
        "silo coordinator start --insecure   # testing only: no TLS, no Fleet proxy",
    ),
    "coordinator proxy-config": (
        "silo coordinator proxy-config --keys /keys/coordinator --state-dir /var/lib/nginx-silo --out nginx.conf",
    ),
}


_RUN_HELP = (
    "start (or resume) a run and follow it to the end\n\n"
    "Submit Silo's Flower app to a SuperLink with a federation TOML and a run directory, show each round as it "
    "completes, and exit non-zero unless the run really completed (`flwr run` itself exits 0 on failure). Running "
    "it again on the same --run-dir resumes after the last completed round."
)
_START_HELP = (
    "run the SuperLink (loopback) and the Fleet proxy (nginx) in the foreground\n\n"
    "Start a Flower SuperLink on loopback serving TLS with the certificate from `silo keys`, admitting only "
    "SuperNodes whose key is registered; register every site key in KEYS/supernodes/ (already registered ones are "
    "kept); start nginx on --fleet-host:--fleet-port with the same certificate, forwarding the Fleet API calls "
    "SuperNodes make and refusing everything else (the Control API behind `flwr run`, `flwr ls`, `flwr stop`, "
    "`flwr supernode register` authenticates nobody, so it stays on 127.0.0.1: operators elsewhere use an SSH "
    "tunnel). Both stay in the foreground and stop together. With SILO_AT_REST_KEY_FILE or SILO_AT_REST_KEY set "
    "(or --at-rest-key-file), the coordinator's checkpoints are encrypted at rest."
)
_PROXY_CONFIG_HELP = (
    "print the nginx.conf of the Fleet proxy, for a proxy started by something else\n\n"
    "Write the nginx configuration `silo coordinator start` generates (TLS with the SuperLink's certificate; Fleet "
    "API calls forwarded to 127.0.0.1:--port; everything else 403), for the paths the key files will have where "
    "nginx runs (a container's mounts). Logs go to stderr/stdout."
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

    coord = typer.Typer(
        help="start the coordinator's SuperLink and its Fleet proxy\n\n"
        "Run a Flower SuperLink with Silo's settings (no runtime dependency installation) on loopback, and nginx "
        "in front of it forwarding only the Fleet API that SuperNodes use.",
        epilog=_examples("coordinator "),
        no_args_is_help=True,
        rich_markup_mode="rich",
    )
    coord.command("start", help=console.help_text(_START_HELP), epilog=_examples("coordinator start"))(
        start_coordinator
    )
    coord.command(
        "proxy-config", help=console.help_text(_PROXY_CONFIG_HELP), epilog=_examples("coordinator proxy-config")
    )(print_proxy_config)
    app.add_typer(coord, name="coordinator")


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
    """one run's state at the SuperLink and in its manifest, with Silo's and Flower's run ids

    One run's state at the SuperLink and in its manifest, with Silo's and Flower's run ids.
    """
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
    """every run the SuperLink knows, with the Silo run directory of each (--runs)

    Every run the SuperLink knows, with the Silo run directory of each (--runs).
    """
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
    """the ServerApp's log of one run, as the SuperLink kept it

    The ServerApp's log of one run, as the SuperLink kept it.
    """
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
    """stop one run at the SuperLink: its sites receive no further messages of it

    Stop one run at the SuperLink: its sites receive no further messages of it.
    """
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


def start_coordinator(
    host: Annotated[
        str, typer.Option("--host", metavar="HOST", help="SuperLink interface, loopback only")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", metavar="PORT", help="SuperLink port: operator's flwr / silo federation")
    ] = 9093,
    fleet_host: Annotated[
        str, typer.Option("--fleet-host", metavar="HOST", help="interface the Fleet proxy listens on for sites")
    ] = proxy.DEFAULT_FLEET_HOST,
    fleet_port: Annotated[
        int,
        typer.Option(
            "--fleet-port", metavar="PORT", help="port sites connect to: `silo site start --superlink HOST:PORT`"
        ),
    ] = proxy.DEFAULT_FLEET_PORT,
    keys: Annotated[
        Path | None,
        typer.Option(
            "--keys",
            "--ssl-dir",
            metavar="DIR",
            help="the coordinator/ directory from `silo keys` (ca.pem, superlink.pem, superlink.key, supernodes/)",
        ),
    ] = None,
    database: Annotated[
        Path | None,
        typer.Option(
            "--database",
            metavar="FILE",
            help="SuperLink state file, kept across restarts (registered SuperNodes, runs); created 0600 in a 0700 "
            "directory, not encrypted at rest",
        ),
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            "--state-dir",
            metavar="DIR",
            help="where the proxy's generated nginx.conf, pid and logs go (default: the --database directory, "
            "else ./coordinator-state)",
        ),
    ] = None,
    nginx: Annotated[
        Path | None,
        typer.Option("--nginx", metavar="FILE", help="the nginx binary (default: nginx on PATH or in /usr/sbin)"),
    ] = None,
    no_fleet_proxy: Annotated[
        bool,
        typer.Option(
            "--no-fleet-proxy",
            help="do not start nginx: another process is the Fleet proxy (the compose / Kubernetes sidecar, with "
            "the config from `silo coordinator proxy-config`)",
        ),
    ] = False,
    expose_control_plane: Annotated[
        bool,
        typer.Option(
            "--expose-control-plane",
            help="allow a non-loopback --host: anyone who reaches it with the CA certificate can start runs at "
            "every site and register SuperNodes (warns; never in production)",
        ),
    ] = False,
    at_rest_key_file: Annotated[
        Path | None,
        typer.Option(
            "--at-rest-key-file", metavar="FILE", help="encrypt checkpoints with this key (`silo at-rest keygen`)"
        ),
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="no TLS, no authentication (testing only; warns)")
    ] = False,
) -> int:
    layout = None
    if insecure:
        print(
            "silo: WARNING: --insecure: the SuperLink accepts plain-text connections from any SuperNode, "
            "and no Fleet proxy runs (it needs the keys)",
            file=sys.stderr,
        )
    elif keys is None:
        raise ConfigError("give --keys DIR/coordinator (from `silo keys`), or --insecure for testing")
    else:
        layout = KeyLayout.for_coordinator(keys)
    if at_rest_key_file is not None:
        encryption.load_key_file(at_rest_key_file)  # a bad key fails here, before anything starts
    if not is_loopback(host):
        if not expose_control_plane:
            superlink_argv(host=host, port=port, keys=None)  # raises the one-line refusal
        print(
            f"silo: WARNING: --expose-control-plane: the SuperLink listens on {host}:{port}, where Flower's "
            "Control API authenticates nobody: anyone who reaches it can start runs at every site and register "
            "SuperNodes. Firewall it to the operators' machines.",
            file=sys.stderr,
        )
    argv = superlink_argv(
        host=host,
        port=port,
        keys=layout,
        database=database,
        expose_control_plane=expose_control_plane,
    )
    check_port_free(host, port, flag="--port")
    state = Path(state_dir or (database.parent if database else Path("coordinator-state")))
    proxy.make_private_dir(state)  # parents too: a fresh directory needs nothing made by hand
    superlink_log = (state / "logs" / "superlink.log").resolve()
    superlink_log.parent.mkdir(exist_ok=True)
    proxy_settings = None
    if layout is not None and not no_fleet_proxy:
        check_port_free(fleet_host, fleet_port, flag="--fleet-port")
        proxy_settings = proxy.ProxySettings.for_keys(
            layout,
            state_dir=(state / "proxy").resolve(),
            listen_host=fleet_host,
            listen_port=fleet_port,
            superlink_port=port,
            log_dir=(state / "proxy" / "logs").resolve(),
        )
        nginx_bin = proxy.find_nginx(nginx)
        conf = proxy.write_config(proxy_settings)
        proxy.check_config(nginx_bin, conf)  # a config nginx rejects fails before the SuperLink starts
    env = superlink_env(flower_env(Path(os.environ.get("FLWR_HOME", Path.home() / ".flwr"))))
    if at_rest_key_file is not None:
        env[encryption.ENV_KEY_FILE] = str(at_rest_key_file.resolve())
    at_rest = encryption.key_from_env(env)
    print(f"silo: checkpoints {'encrypted at rest (key id ' + encryption.key_id(at_rest) + ')' if at_rest else 'NOT encrypted at rest'}",
          file=sys.stderr)  # fmt: skip
    # Each in a process group of its own, signalled as a group: nginx's worker outlives a killed master.
    # The SuperLink's own lines (two `list-runs` lines every 2 s while a run is followed) go to its log.
    with superlink_log.open("ab") as out:
        procs = [subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)]
    stopping: list[int] = []

    def stop(signum: int, _frame: object) -> None:
        # Forward the operator's stop to the SuperLink and the proxy; the watch loop then waits for both.
        stopping.append(signum)
        for proc in procs:
            _signal_group(proc, signum)  # nginx and the SuperLink both stop on SIGTERM and SIGINT

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104
    address = f"{local}:{port}"
    try:
        ca = layout.ca_cert if layout else None
        wait_healthy(address, ca_cert=ca, alive=lambda: procs[0].poll() is None, log=superlink_log)
        if layout is not None:
            with tempfile.TemporaryDirectory(prefix="silo-flwr-") as home:
                conn = FlowerConnection(Path(home), address, insecure=False, root_certificates=ca)
                for site, outcome in register_sites(conn, layout).items():
                    print(f"silo: site {site}: SuperNode key {outcome}", file=sys.stderr)
        if proxy_settings is not None and layout is not None:
            conf = proxy_settings.state_dir / "nginx.conf"
            nginx_proc = subprocess.Popen(proxy.nginx_argv(nginx_bin, conf), start_new_session=True)
            procs.append(nginx_proc)
            proxy.wait_ready(
                proxy_settings.address, ca_cert=layout.ca_cert, alive=lambda: nginx_proc.poll() is None,
                log=proxy_settings.state_dir / "logs" / "error.log",
            )  # fmt: skip
            print(
                f"silo: Fleet proxy (nginx) on {fleet_host}:{fleet_port} forwards SuperNodes' Fleet API calls "
                f"only; the Control API stays on {address} (config {conf})",
                file=sys.stderr,
            )
        elif layout is not None:
            print(
                f"silo: no Fleet proxy started (--no-fleet-proxy): the SuperLink is on {address} only", file=sys.stderr
            )
        sites_at = f"{fleet_host}:{fleet_port}" if proxy_settings is not None else address
        print(
            f"silo: coordinator ready: sites connect to {sites_at}, `silo federation run --superlink {address}` "
            f"submits runs; SuperLink log {superlink_log}; Ctrl-C stops both",
            file=sys.stderr,
            flush=True,
        )
        return _watch(procs, stopping)
    except FederationFailed:
        if stopping:  # stopped by the operator while starting: not a failure
            return 0
        raise
    finally:
        _stop_all(procs)


def _signal_group(proc: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signum)


def _stop_all(procs: list[subprocess.Popen[bytes]]) -> list[int]:
    """SIGTERM each process group, wait for its leader, then SIGKILL whatever is left in the group."""
    for proc in procs:
        _signal_group(proc, signal.SIGTERM)
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=30))
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            codes.append(proc.wait(timeout=30))
        _signal_group(proc, signal.SIGKILL)  # an orphaned nginx worker still holding the port
    return codes


def _watch(procs: list[subprocess.Popen[bytes]], stopping: list[int]) -> int:
    """Until the operator stops the coordinator, or the SuperLink or the proxy dies (then the other is stopped)."""
    exited = [proc.poll() for proc in procs]
    while all(code is None for code in exited) and not stopping:
        time.sleep(WATCH_INTERVAL_S)
        exited = [proc.poll() for proc in procs]
    codes = _stop_all(procs)
    if stopping:
        print("silo: coordinator stopped: the SuperLink and the Fleet proxy have exited", file=sys.stderr)
        return 0
    names = ["the SuperLink", "the Fleet proxy (nginx)"]
    dead = next((i for i, code in enumerate(exited) if code is not None), 0)
    raise FederationFailed(f"{names[dead]} exited with code {codes[dead]}; the coordinator stopped")


def print_proxy_config(
    keys: Annotated[Path, typer.Option("--keys", metavar="DIR", help="coordinator/ as nginx will see it")],
    state_dir: Annotated[
        Path, typer.Option("--state-dir", metavar="DIR", help="a directory nginx may write (pid, temp)")
    ],
    port: Annotated[int, typer.Option("--port", metavar="PORT", help="the SuperLink's loopback port")] = 9093,
    fleet_host: Annotated[
        str, typer.Option("--fleet-host", metavar="HOST", help="interface the Fleet proxy listens on for sites")
    ] = proxy.DEFAULT_FLEET_HOST,
    fleet_port: Annotated[
        int, typer.Option("--fleet-port", metavar="PORT", help="port sites connect to")
    ] = proxy.DEFAULT_FLEET_PORT,
    out: Annotated[
        Path | None, typer.Option("--out", metavar="FILE", help="write here instead of standard output")
    ] = None,
) -> int:
    settings = proxy.ProxySettings.for_keys(
        KeyLayout.for_coordinator(keys),
        state_dir=state_dir,
        listen_host=fleet_host,
        listen_port=fleet_port,
        superlink_port=port,
    )
    text = proxy.nginx_config(settings)
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text)
        print(f"wrote {out}", file=sys.stderr)
    return 0
