"""`silo federation run` and `silo coordinator start`: for the federation operator."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import encryption
from common.config import load_federation_config
from common.errors import ConfigError, FederationFailed
from common.pki import KeyLayout
from silo import proxy, run_control
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

_FEDERATION_EPILOG = """\
examples:
  silo federation run --config federation.toml --run-dir runs/2026-11 --superlink 127.0.0.1:9093 --keys keys/coordinator
  silo federation status --run-dir runs/2026-11 --keys keys/coordinator
  silo federation list --runs runs --keys keys/coordinator
  silo federation logs --run-id 8812345 --keys keys/coordinator
  silo federation stop --run-dir runs/2026-11 --keys keys/coordinator
"""
_COORDINATOR_EPILOG = """\
examples:
  silo coordinator start --host 127.0.0.1 --port 9093 --fleet-host 0.0.0.0 --fleet-port 9092 \\
      --keys keys/coordinator --database state/superlink/superlink.db
  silo coordinator proxy-config --keys /keys/coordinator --state-dir /var/lib/nginx-silo --out nginx.conf
"""
# How often the foreground coordinator checks that the SuperLink and the proxy are still up.
WATCH_INTERVAL_S = 0.5


def register(sub: argparse._SubParsersAction) -> None:
    fed = sub.add_parser(
        "federation",
        help="run, follow, list and stop runs at a SuperLink (run | status | list | logs | stop)",
        description="For the federation operator, on the coordinator host (the Control API is on loopback).",
        epilog=_FEDERATION_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fsub = fed.add_subparsers(dest="action", metavar="ACTION", required=True)
    run = fsub.add_parser(
        "run",
        help="start (or resume) a run and follow it to the end",
        description="Submit Silo's Flower app to a SuperLink with a federation TOML and a run directory, show "
        "each round as it completes, and exit non-zero unless the run really completed (`flwr run` itself "
        "exits 0 on failure). Running it again on the same --run-dir resumes after the last completed round.",
    )
    run.add_argument("--config", type=Path, required=True, help="federation TOML (rounds, strategy, min sites, ...)")
    run.add_argument("--run-dir", type=Path, required=True, help="coordinator's run directory (created or resumed)")
    run.add_argument("--superlink", default="127.0.0.1:9093", help="SuperLink address host:port (default: %(default)s)")
    run.add_argument(
        "--keys", type=Path, metavar="DIR", help="the coordinator/ directory from `silo keys` (its ca.pem)"
    )
    run.add_argument("--root-certificates", type=Path, help="CA certificate for a TLS SuperLink (instead of --keys)")
    run.add_argument("--insecure", action="store_true", help="plain-text connection (testing only; warns)")
    run.add_argument("--timeout", type=float, default=24 * 3600, help="seconds before giving up (default: 1 day)")
    run.add_argument(
        "--stop-on-interrupt",
        action="store_true",
        help="on Ctrl-C, stop the run at the SuperLink without asking (otherwise asked on a terminal; elsewhere "
        "the run is left going and the commands that stop it are printed)",
    )
    run.set_defaults(func=run_federation)

    for name, help_text, func in (
        (
            "status",
            "one run's state at the SuperLink and in its manifest, with Silo's and Flower's run ids",
            show_status,
        ),
        ("list", "every run the SuperLink knows, with the Silo run directory of each (--runs)", list_runs),
        ("logs", "the ServerApp's log of one run, as the SuperLink kept it", show_logs),
        ("stop", "stop one run at the SuperLink: its sites receive no further messages of it", stop_run),
    ):
        cmd = fsub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        _superlink_args(cmd)
        if name == "list":
            cmd.add_argument("--runs", type=Path, metavar="DIR", help="the directory holding the run directories")
        else:
            which = cmd.add_mutually_exclusive_group()
            which.add_argument("--run-dir", type=Path, help="the run's directory (its manifest names the Flower run)")
            which.add_argument("--run-id", type=int, help="Flower's run id (as `flwr ls` shows it)")
        cmd.set_defaults(func=func)

    coord = sub.add_parser(
        "coordinator",
        help="start the coordinator's SuperLink and its Fleet proxy",
        description="Run a Flower SuperLink with Silo's settings (no runtime dependency installation) on "
        "loopback, and nginx in front of it forwarding only the Fleet API that SuperNodes use.",
        epilog=_COORDINATOR_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    csub = coord.add_subparsers(dest="action", metavar="ACTION", required=True)
    start = csub.add_parser(
        "start",
        help="run the SuperLink (loopback) and the Fleet proxy (nginx) in the foreground",
        description="Start a Flower SuperLink on loopback serving TLS with the certificate from `silo keys`, "
        "admitting only SuperNodes whose key is registered; register every site key in KEYS/supernodes/ (already "
        "registered ones are kept); start nginx on --fleet-host:--fleet-port with the same certificate, forwarding "
        "the Fleet API calls SuperNodes make and refusing everything else (the Control API behind `flwr run`, "
        "`flwr ls`, `flwr stop`, `flwr supernode register` authenticates nobody, so it stays on 127.0.0.1: operators "
        "elsewhere use an SSH tunnel). Both stay in the foreground and stop together. With SILO_AT_REST_KEY_FILE or "
        "SILO_AT_REST_KEY set (or --at-rest-key-file), the coordinator's checkpoints are encrypted at rest.",
    )
    start.add_argument("--host", default="127.0.0.1", help="SuperLink interface, loopback only (default: %(default)s)")
    start.add_argument(
        "--port",
        type=int,
        default=9093,
        help="SuperLink port: operator's flwr / silo federation (default: %(default)s)",
    )
    start.add_argument(
        "--fleet-host",
        default=proxy.DEFAULT_FLEET_HOST,
        help="interface the Fleet proxy listens on for sites (default: %(default)s)",
    )
    start.add_argument(
        "--fleet-port",
        type=int,
        default=proxy.DEFAULT_FLEET_PORT,
        help="port sites connect to: `silo site start --superlink HOST:PORT` (default: %(default)s)",
    )
    start.add_argument(
        "--keys", "--ssl-dir", dest="keys", type=Path, metavar="DIR",
        help="the coordinator/ directory from `silo keys` (ca.pem, superlink.pem, superlink.key, supernodes/)",
    )  # fmt: skip
    start.add_argument(
        "--database",
        type=Path,
        help="SuperLink state file, kept across restarts (registered SuperNodes, runs); created 0600 in a 0700 "
        "directory, not encrypted at rest",
    )
    start.add_argument(
        "--state-dir",
        type=Path,
        help="where the proxy's generated nginx.conf, pid and logs go (default: the --database directory, "
        "else ./coordinator-state)",
    )
    start.add_argument("--nginx", type=Path, help="the nginx binary (default: nginx on PATH or in /usr/sbin)")
    start.add_argument(
        "--no-fleet-proxy",
        action="store_true",
        help="do not start nginx: another process is the Fleet proxy (the compose / Kubernetes sidecar, with the "
        "config from `silo coordinator proxy-config`)",
    )
    start.add_argument(
        "--expose-control-plane",
        action="store_true",
        help="allow a non-loopback --host: anyone who reaches it with the CA certificate can start runs at every "
        "site and register SuperNodes (warns; never in production)",
    )
    start.add_argument(
        "--at-rest-key-file", type=Path, help="encrypt checkpoints with this key (`silo at-rest keygen`)"
    )
    start.add_argument("--insecure", action="store_true", help="no TLS, no authentication (testing only; warns)")
    start.set_defaults(func=start_coordinator)

    config = csub.add_parser(
        "proxy-config",
        help="print the nginx.conf of the Fleet proxy, for a proxy started by something else",
        description="Write the nginx configuration `silo coordinator start` generates (TLS with the SuperLink's "
        "certificate; Fleet API calls forwarded to 127.0.0.1:--port; everything else 403), for the paths the "
        "key files will have where nginx runs (a container's mounts). Logs go to stderr/stdout.",
    )
    config.add_argument("--keys", type=Path, required=True, metavar="DIR", help="coordinator/ as nginx will see it")
    config.add_argument("--state-dir", type=Path, required=True, help="a directory nginx may write (pid, temp)")
    config.add_argument("--port", type=int, default=9093, help="the SuperLink's loopback port (default: %(default)s)")
    config.add_argument("--fleet-host", default=proxy.DEFAULT_FLEET_HOST, help="(default: %(default)s)")
    config.add_argument("--fleet-port", type=int, default=proxy.DEFAULT_FLEET_PORT, help="(default: %(default)s)")
    config.add_argument("--out", type=Path, help="write here instead of standard output")
    config.set_defaults(func=print_proxy_config)


def _superlink_args(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--superlink", default="127.0.0.1:9093", help="SuperLink address host:port (default: %(default)s)")
    cmd.add_argument(
        "--keys", type=Path, metavar="DIR", help="the coordinator/ directory from `silo keys` (its ca.pem)"
    )
    cmd.add_argument("--root-certificates", type=Path, help="CA certificate for a TLS SuperLink (instead of --keys)")
    cmd.add_argument("--insecure", action="store_true", help="plain-text connection (testing only)")


def _access(args: argparse.Namespace) -> run_control.SuperLinkAccess:
    return run_control.SuperLinkAccess.from_args(args.superlink, args.keys, args.root_certificates, args.insecure)


def show_status(args: argparse.Namespace) -> int:
    for line in run_control.run_status(_access(args), args.run_dir, args.run_id):
        print(line)
    return 0


def list_runs(args: argparse.Namespace) -> int:
    lines = run_control.list_runs(_access(args), args.runs)
    print("\n".join(lines) if lines else f"the SuperLink at {args.superlink} knows no runs")
    return 0


def show_logs(args: argparse.Namespace) -> int:
    sys.stdout.write(run_control.run_logs(_access(args), args.run_dir, args.run_id))
    return 0


def stop_run(args: argparse.Namespace) -> int:
    fid, _ = run_control.flower_run_id(args.run_dir, args.run_id)
    print(run_control.stop_run(_access(args), fid))
    return 0


def _on_interrupt(args: argparse.Namespace, access: run_control.SuperLinkAccess, run_id: int) -> int:
    """Ctrl-C while following a run: the run itself goes on at the SuperLink (and sites go on spending ε)
    unless it is stopped there. Stop it (--stop-on-interrupt, or yes on a terminal) or say how to."""
    stop = args.stop_on_interrupt
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
        where = f"--run-dir {args.run_dir}"
        print(
            f"silo: Flower run {run_id} goes on at the SuperLink (nothing was stopped). Follow it: `silo federation "
            f"status {where}` and `silo federation logs {where}`; stop it: `silo federation stop {where}`",
            file=sys.stderr,
        )
    return 130


def run_federation(args: argparse.Namespace) -> int:
    cfg = load_federation_config(args.config)  # fail on a bad config before anything is submitted
    if args.keys is not None and args.root_certificates is None:
        args.root_certificates = (
            KeyLayout(args.keys).ca_cert if (args.keys / "coordinator").is_dir() else args.keys / "ca.pem"
        )
    if not args.insecure and args.root_certificates is None:
        raise ConfigError(
            "give --keys (or --root-certificates) for a TLS SuperLink, or --insecure for a plain-text test setup"
        )
    if args.insecure:
        print("silo: WARNING: --insecure: updates travel unencrypted and unauthenticated", file=sys.stderr)
    home = Path(args.run_dir).resolve().parent / f".{Path(args.run_dir).name}.flwr"
    conn = FlowerConnection(home, args.superlink, insecure=args.insecure, root_certificates=args.root_certificates)
    try:
        run_id = conn.submit(
            {"silo-config": str(Path(args.config).resolve()), "run-dir": str(Path(args.run_dir).resolve())}
        )
    except FederationFailed as err:
        if "403 Forbidden" not in str(err):
            raise
        raise FederationFailed(
            f"{args.superlink} refused the Control API (403): that is the Fleet proxy sites use; give the SuperLink's "
            "loopback address on the coordinator host (127.0.0.1:9093), through an SSH tunnel from elsewhere"
        ) from None
    print(f"submitted Flower run {run_id} ({cfg.federation.rounds} rounds, {cfg.federation.strategy})", file=sys.stderr)
    try:
        manifest = follow_run(conn, run_id, args.run_dir, timeout=args.timeout, log=sys.stderr)
    except KeyboardInterrupt:
        access = run_control.SuperLinkAccess(args.superlink, args.root_certificates, args.insecure)
        return _on_interrupt(args, access, run_id)
    print(
        f"run {manifest['run_id']} completed: {manifest['completed_rounds']} rounds; final adapter in {args.run_dir}/final"
    )
    return 0


def start_coordinator(args: argparse.Namespace) -> int:
    keys = None
    if args.insecure:
        print(
            "silo: WARNING: --insecure: the SuperLink accepts plain-text connections from any SuperNode, "
            "and no Fleet proxy runs (it needs the keys)",
            file=sys.stderr,
        )
    elif args.keys is None:
        raise ConfigError("give --keys DIR/coordinator (from `silo keys`), or --insecure for testing")
    else:
        keys = KeyLayout.for_coordinator(args.keys)
    if args.at_rest_key_file is not None:
        encryption.load_key_file(args.at_rest_key_file)  # a bad key fails here, before anything starts
    if not is_loopback(args.host):
        if not args.expose_control_plane:
            superlink_argv(host=args.host, port=args.port, keys=None)  # raises the one-line refusal
        print(
            f"silo: WARNING: --expose-control-plane: the SuperLink listens on {args.host}:{args.port}, where Flower's "
            "Control API authenticates nobody: anyone who reaches it can start runs at every site and register "
            "SuperNodes. Firewall it to the operators' machines.",
            file=sys.stderr,
        )
    argv = superlink_argv(
        host=args.host,
        port=args.port,
        keys=keys,
        database=args.database,
        expose_control_plane=args.expose_control_plane,
    )
    check_port_free(args.host, args.port, flag="--port")
    state_dir = Path(args.state_dir or (args.database.parent if args.database else Path("coordinator-state")))
    proxy.make_private_dir(state_dir)  # parents too: a fresh directory needs nothing made by hand
    superlink_log = (state_dir / "logs" / "superlink.log").resolve()
    superlink_log.parent.mkdir(exist_ok=True)
    proxy_settings = None
    if keys is not None and not args.no_fleet_proxy:
        check_port_free(args.fleet_host, args.fleet_port, flag="--fleet-port")
        proxy_settings = proxy.ProxySettings.for_keys(
            keys,
            state_dir=(Path(state_dir) / "proxy").resolve(),
            listen_host=args.fleet_host,
            listen_port=args.fleet_port,
            superlink_port=args.port,
            log_dir=(Path(state_dir) / "proxy" / "logs").resolve(),
        )
        nginx = proxy.find_nginx(args.nginx)
        conf = proxy.write_config(proxy_settings)
        proxy.check_config(nginx, conf)  # a config nginx rejects fails before the SuperLink starts
    env = superlink_env(flower_env(Path(os.environ.get("FLWR_HOME", Path.home() / ".flwr"))))
    if args.at_rest_key_file is not None:
        env[encryption.ENV_KEY_FILE] = str(args.at_rest_key_file.resolve())
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
    local = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host  # noqa: S104
    address = f"{local}:{args.port}"
    try:
        ca = keys.ca_cert if keys else None
        wait_healthy(address, ca_cert=ca, alive=lambda: procs[0].poll() is None, log=superlink_log)
        if keys is not None:
            with tempfile.TemporaryDirectory(prefix="silo-flwr-") as home:
                conn = FlowerConnection(Path(home), address, insecure=False, root_certificates=ca)
                for site, outcome in register_sites(conn, keys).items():
                    print(f"silo: site {site}: SuperNode key {outcome}", file=sys.stderr)
        if proxy_settings is not None and keys is not None:
            conf = proxy_settings.state_dir / "nginx.conf"
            nginx_proc = subprocess.Popen(proxy.nginx_argv(nginx, conf), start_new_session=True)
            procs.append(nginx_proc)
            proxy.wait_ready(
                proxy_settings.address, ca_cert=keys.ca_cert, alive=lambda: nginx_proc.poll() is None,
                log=proxy_settings.state_dir / "logs" / "error.log",
            )  # fmt: skip
            print(
                f"silo: Fleet proxy (nginx) on {args.fleet_host}:{args.fleet_port} forwards SuperNodes' Fleet API calls "
                f"only; the Control API stays on {address} (config {conf})",
                file=sys.stderr,
            )
        elif keys is not None:
            print(
                f"silo: no Fleet proxy started (--no-fleet-proxy): the SuperLink is on {address} only", file=sys.stderr
            )
        sites_at = f"{args.fleet_host}:{args.fleet_port}" if proxy_settings is not None else address
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


def print_proxy_config(args: argparse.Namespace) -> int:
    settings = proxy.ProxySettings.for_keys(
        KeyLayout.for_coordinator(args.keys),
        state_dir=args.state_dir,
        listen_host=args.fleet_host,
        listen_port=args.fleet_port,
        superlink_port=args.port,
    )
    text = proxy.nginx_config(settings)
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0
