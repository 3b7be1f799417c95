"""`silo federation run` and `silo coordinator start`: for the federation operator."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from common.config import load_federation_config
from common.errors import ConfigError
from silo.launch import BIN, FlowerConnection, flower_env, follow_run


def register(sub: argparse._SubParsersAction) -> None:
    fed = sub.add_parser("federation", help="run federated rounds against a running SuperLink")
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
    run.add_argument("--root-certificates", type=Path, help="CA certificate for a TLS SuperLink")
    run.add_argument("--insecure", action="store_true", help="plain-text connection (testing only; warns)")
    run.add_argument("--timeout", type=float, default=24 * 3600, help="seconds before giving up (default: 1 day)")
    run.set_defaults(func=run_federation)

    coord = sub.add_parser(
        "coordinator",
        help="start the coordinator's SuperLink",
        description="Run a Flower SuperLink with Silo's settings (no runtime dependency installation).",
    )
    csub = coord.add_subparsers(dest="action", metavar="ACTION", required=True)
    start = csub.add_parser("start", help="run the SuperLink in the foreground")
    start.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    start.add_argument("--port", type=int, default=9093, help="SuperLink port (default: %(default)s)")
    start.add_argument("--ssl-dir", type=Path, help="directory with ca.pem, superlink.pem, superlink.key")
    start.add_argument("--insecure", action="store_true", help="no TLS (testing only; warns)")
    start.set_defaults(func=start_coordinator)


def run_federation(args: argparse.Namespace) -> int:
    cfg = load_federation_config(args.config)  # fail on a bad config before anything is submitted
    if not args.insecure and args.root_certificates is None:
        raise ConfigError("give --root-certificates for a TLS SuperLink, or --insecure for a plain-text test setup")
    if args.insecure:
        print("silo: WARNING: --insecure: updates travel unencrypted and unauthenticated", file=sys.stderr)
    home = Path(args.run_dir).resolve().parent / f".{Path(args.run_dir).name}.flwr"
    conn = FlowerConnection(home, args.superlink, insecure=args.insecure, root_certificates=args.root_certificates)
    run_id = conn.submit(
        {"silo-config": str(Path(args.config).resolve()), "run-dir": str(Path(args.run_dir).resolve())}
    )
    print(f"submitted Flower run {run_id} ({cfg.federation.rounds} rounds, {cfg.federation.strategy})", file=sys.stderr)
    manifest = follow_run(conn, run_id, args.run_dir, timeout=args.timeout, log=sys.stderr)
    print(
        f"run {manifest['run_id']} completed: {manifest['completed_rounds']} rounds; final adapter in {args.run_dir}/final"
    )
    return 0


def start_coordinator(args: argparse.Namespace) -> int:
    argv = [
        str(BIN / "flower-superlink"),
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--disable-runtime-dependency-installation",
    ]
    if args.insecure:
        print("silo: WARNING: --insecure: the SuperLink accepts plain-text connections", file=sys.stderr)
        argv.append("--insecure")
    elif args.ssl_dir is None:
        raise ConfigError("give --ssl-dir with ca.pem, superlink.pem and superlink.key, or --insecure for testing")
    else:
        d = Path(args.ssl_dir)
        argv += [
            "--ssl-ca-certfile",
            str(d / "ca.pem"),
            "--ssl-certfile",
            str(d / "superlink.pem"),
            "--ssl-keyfile",
            str(d / "superlink.key"),
        ]
    env = flower_env(Path(os.environ.get("FLWR_HOME", Path.home() / ".flwr")))
    os.execve(argv[0], argv, env)
    return 0  # not reached
