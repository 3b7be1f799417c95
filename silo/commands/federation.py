"""`silo federation run` and `silo coordinator start`: for the federation operator."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from common import encryption
from common.config import load_federation_config
from common.errors import ConfigError, FederationFailed
from common.pki import KeyLayout
from silo.launch import FlowerConnection, flower_env, follow_run, register_sites, superlink_argv, wait_healthy


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
    run.add_argument(
        "--keys", type=Path, metavar="DIR", help="the coordinator/ directory from `silo keys` (its ca.pem)"
    )
    run.add_argument("--root-certificates", type=Path, help="CA certificate for a TLS SuperLink (instead of --keys)")
    run.add_argument("--insecure", action="store_true", help="plain-text connection (testing only; warns)")
    run.add_argument("--timeout", type=float, default=24 * 3600, help="seconds before giving up (default: 1 day)")
    run.set_defaults(func=run_federation)

    coord = sub.add_parser(
        "coordinator",
        help="start the coordinator's SuperLink",
        description="Run a Flower SuperLink with Silo's settings (no runtime dependency installation).",
    )
    csub = coord.add_subparsers(dest="action", metavar="ACTION", required=True)
    start = csub.add_parser(
        "start",
        help="run the SuperLink in the foreground: TLS, SuperNode authentication, sites' keys registered",
        description="Start a Flower SuperLink serving TLS with the certificate from `silo keys`, admitting only "
        "SuperNodes whose key is registered; register every site key in KEYS/supernodes/ (already registered "
        "ones are kept), then stay in the foreground until stopped. With SILO_AT_REST_KEY_FILE or "
        "SILO_AT_REST_KEY set (or --at-rest-key-file), the coordinator's checkpoints are encrypted at rest.",
    )
    start.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    start.add_argument("--port", type=int, default=9093, help="SuperLink port (default: %(default)s)")
    start.add_argument(
        "--keys", "--ssl-dir", dest="keys", type=Path, metavar="DIR",
        help="the coordinator/ directory from `silo keys` (ca.pem, superlink.pem, superlink.key, supernodes/)",
    )  # fmt: skip
    start.add_argument(
        "--database", type=Path, help="SuperLink state file: keeps registered SuperNodes and runs across restarts"
    )
    start.add_argument(
        "--at-rest-key-file", type=Path, help="encrypt checkpoints with this key (`silo at-rest keygen`)"
    )
    start.add_argument("--insecure", action="store_true", help="no TLS, no authentication (testing only; warns)")
    start.set_defaults(func=start_coordinator)


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
    keys = None
    if args.insecure:
        print(
            "silo: WARNING: --insecure: the SuperLink accepts plain-text connections from any SuperNode",
            file=sys.stderr,
        )
    elif args.keys is None:
        raise ConfigError("give --keys DIR/coordinator (from `silo keys`), or --insecure for testing")
    else:
        keys = KeyLayout.for_coordinator(args.keys)
    argv = superlink_argv(host=args.host, port=args.port, keys=keys, database=args.database)
    env = flower_env(Path(os.environ.get("FLWR_HOME", Path.home() / ".flwr")))
    if args.at_rest_key_file is not None:
        encryption.load_key_file(args.at_rest_key_file)  # a bad key fails here, not at the first checkpoint
        env[encryption.ENV_KEY_FILE] = str(args.at_rest_key_file.resolve())
    at_rest = encryption.key_from_env(env)
    print(f"silo: checkpoints {'encrypted at rest (key id ' + encryption.key_id(at_rest) + ')' if at_rest else 'NOT encrypted at rest'}",
          file=sys.stderr)  # fmt: skip
    proc = subprocess.Popen(argv, env=env)
    # Forward the operator's stop to the SuperLink, then wait for it to exit.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: proc.send_signal(signum))
    local = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    address = f"{local}:{args.port}"
    try:
        ca = keys.ca_cert if keys else None
        wait_healthy(address, ca_cert=ca, alive=lambda: proc.poll() is None, log=Path("/dev/null"))
        if keys is not None:
            with tempfile.TemporaryDirectory(prefix="silo-flwr-") as home:
                conn = FlowerConnection(Path(home), address, insecure=False, root_certificates=ca)
                for site, outcome in register_sites(conn, keys).items():
                    print(f"silo: site {site}: SuperNode key {outcome}", file=sys.stderr)
    except FederationFailed:
        proc.terminate()
        raise
    return_code = proc.wait()
    if return_code not in (0, -signal.SIGTERM, -signal.SIGINT):
        raise FederationFailed(f"the SuperLink exited with code {return_code}")
    return 0
