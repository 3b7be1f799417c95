"""`silo coordinator start` and `silo coordinator proxy-config`: the coordinator's SuperLink and its Fleet
proxy, for the federation operator."""

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

import typer

from common import encryption
from common.errors import ConfigError, FederationFailed
from common.pki import KeyLayout
from silo import console, proxy
from silo.flower_connection import FlowerConnection, register_sites
from silo.flower_processes import check_port_free, flower_env, is_loopback, superlink_argv, superlink_env, wait_healthy

# How often the foreground coordinator checks that the SuperLink and the proxy are still up.
WATCH_INTERVAL_S = 0.5

START_EXAMPLES = (
    "silo coordinator start --host 127.0.0.1 --port 9093 --fleet-host 0.0.0.0 --fleet-port 9092 "
    "--keys keys/coordinator --database state/superlink/superlink.db",
    "silo coordinator start --insecure   # testing only: no TLS, no Fleet proxy",
)
PROXY_CONFIG_EXAMPLES = (
    "silo coordinator proxy-config --keys /keys/coordinator --state-dir /var/lib/nginx-silo --out nginx.conf",
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


def register(app: typer.Typer) -> None:
    coord = typer.Typer(
        help="start the coordinator's SuperLink and its Fleet proxy\n\n"
        "Run a Flower SuperLink with Silo's settings (no runtime dependency installation) on loopback, and nginx "
        "in front of it forwarding only the Fleet API that SuperNodes use.",
        epilog=console.examples(*START_EXAMPLES, *PROXY_CONFIG_EXAMPLES),
        no_args_is_help=True,
        rich_markup_mode="rich",
    )
    coord.command("start", help=console.help_text(_START_HELP), epilog=console.examples(*START_EXAMPLES))(
        start_coordinator
    )
    coord.command(
        "proxy-config", help=console.help_text(_PROXY_CONFIG_HELP), epilog=console.examples(*PROXY_CONFIG_EXAMPLES)
    )(print_proxy_config)
    app.add_typer(coord, name="coordinator")


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
            help="SuperLink state file, kept across restarts (registered SuperNodes, runs, messages in transit); "
            "created 0600 in a 0700 directory, not encrypted at rest. Without it the state is in memory: nothing "
            "written to disk and about 0.5 s less messaging a round (bench/federation_cost.py); after a restart the "
            "supernodes/*.pub keys are registered again and each site's node rejoins by itself",
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
    checkpoints = f"encrypted at rest (key id {encryption.key_id(at_rest)})" if at_rest else "NOT encrypted at rest"
    print(f"silo: checkpoints {checkpoints}", file=sys.stderr)
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
                proxy_settings.address,
                ca_cert=layout.ca_cert,
                alive=lambda: nginx_proc.poll() is None,
                log=proxy_settings.state_dir / "logs" / "error.log",
            )
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
