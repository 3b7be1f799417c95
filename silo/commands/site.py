"""`silo site check` and `silo site start`: for the site operator."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from common.config import load_site_config
from common.errors import ConfigError
from common.pki import SiteKit
from silo.launch import RUNTIME_HOST, check_port_free, flower_env, kit_coordinator_key, site_node_argv, supernode_argv
from silo.site_watch import SiteNode, run_site_node

_EPILOG = """\
examples:
  silo site check --config site.toml
  silo site start --config site.toml --superlink coord.example:9092 --keys keys/sites/hospital-a
  silo site start --config site.toml --superlink coord.example:9092 --keys keys/sites/hospital-b --port 9095 \\
      --connect-timeout 0          # a second site on this machine; wait for the coordinator for ever
"""
# Seconds `silo site start` waits for its first connection before giving up with the reason: long
# enough for a coordinator started a few minutes after its sites.
DEFAULT_CONNECT_TIMEOUT_S = 300.0


def register(sub: argparse._SubParsersAction) -> None:
    site = sub.add_parser(
        "site",
        help="check or start this site's node",
        description="For the site operator: check the site's TOML and records, or run its node.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ssub = site.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = ssub.add_parser(
        "check",
        help="validate the site TOML and records without training or sending anything",
        description="Load the site TOML and every record file, check them against the task, and report "
        "the train / hold-out split. Errors name the field, or the file and line.",
    )
    check.add_argument("--config", type=Path, required=True, help="site TOML")
    check.set_defaults(func=check_site)

    start = ssub.add_parser(
        "start",
        help="run this site's SuperNode in the foreground",
        description="Check the site, then run a Flower SuperNode that connects to the coordinator's SuperLink "
        "over TLS and authenticates with this site's SuperNode key, served by Silo's site executor: it runs only "
        "the app `[site] app` approves (default: the Silo installed here), always with the installed code, and "
        "only for runs the coordinator signed (its key is in the kit). A refused run is one line in this log; "
        "nothing is executed, trained or spent. With --keys, the site's signing key is first copied into its "
        "state_dir (an existing different key there is refused).",
    )
    start.add_argument("--config", type=Path, required=True, help="site TOML")
    start.add_argument("--superlink", required=True, help="coordinator's SuperLink address host:port")
    start.add_argument(
        "--keys", type=Path, metavar="DIR", help="this site's directory from `silo keys` (DIR/sites/<site id>)"
    )
    start.add_argument(
        "--root-certificates", type=Path, help="CA certificate of the coordinator's TLS (instead of --keys)"
    )
    start.add_argument("--auth-key", type=Path, help="SuperNode authentication private key (instead of --keys)")
    start.add_argument(
        "--coordinator-key",
        type=Path,
        help="the coordinator's run-request public key, coordinator_signing.pub (instead of --keys)",
    )
    start.add_argument(
        "--port", type=int, default=9094, help="loopback port of the SuperNode's Runtime API (default: %(default)s)"
    )
    start.add_argument(
        "--connect-timeout",
        type=float,
        default=DEFAULT_CONNECT_TIMEOUT_S,
        metavar="SECONDS",
        help="give up, saying why (DNS, refused, TLS, unregistered key), when not connected by then; 0 waits for "
        "ever (default: %(default).0f)",
    )
    start.add_argument("--log", type=Path, help="where Flower's own log lines go (default: <state_dir>/logs/node.log)")
    start.add_argument("--insecure", action="store_true", help="plain-text connection (testing only; warns)")
    start.set_defaults(func=start_site)


def check_site(args: argparse.Namespace) -> int:
    from client.ingest import load_site_records, split_records

    cfg = load_site_config(args.config)
    records = load_site_records(cfg.data_dir, cfg.data, cfg.task)
    split = split_records(records, holdout_fraction=cfg.data.holdout_fraction, seed=cfg.data.seed)
    print(
        f"site {cfg.site.id}: {len(records)} records in {cfg.data_dir} "
        f"({len(split.train)} train, {len(split.holdout)} hold-out); task {cfg.task.type}; model {cfg.model_source()}"
    )
    return 0


def start_site(args: argparse.Namespace) -> int:
    check_site(args)
    cfg_path = Path(args.config).resolve()
    cfg = load_site_config(cfg_path)
    kit = ca_cert = auth_key = None
    if args.insecure:
        print("silo: WARNING: --insecure: this site's updates travel unencrypted and unauthenticated", file=sys.stderr)
    elif args.keys is not None:
        kit = SiteKit(args.keys)
        kit.check()
        from client.site import install_kit_signing_key  # torch and Flower: only when a site starts

        install_kit_signing_key(kit, cfg)
    elif args.root_certificates is not None and args.auth_key is not None:
        ca_cert, auth_key = args.root_certificates, args.auth_key
    else:
        raise ConfigError(
            "give --keys DIR/sites/<site id> (from `silo keys`), or --root-certificates and --auth-key, "
            "or --insecure for testing"
        )
    supernode = supernode_argv(
        superlink=args.superlink, port=args.port, site_config=cfg_path, kit=kit, ca_cert=ca_cert, auth_key=auth_key
    )
    coordinator_key = kit_coordinator_key(kit) if kit is not None else args.coordinator_key
    # After the keys' checks (a key others can read is refused whatever the port), before anything starts.
    check_port_free(RUNTIME_HOST, args.port, flag="--port (a second site on this machine needs its own)")
    argv = site_node_argv(supernode, site_config=cfg_path, port=args.port, coordinator_key=coordinator_key)
    node = SiteNode(
        site_id=cfg.site.id,
        argv=argv,
        env=flower_env(Path(os.environ.get("FLWR_HOME", Path.home() / ".flwr"))),
        log=args.log or cfg.state_dir / "logs" / "node.log",
        superlink=args.superlink,
        ca_cert=kit.ca_cert if kit is not None else ca_cert,
        auth_public_key=kit.auth_public_key if kit is not None else auth_key and auth_key.with_suffix(".pub"),
        connect_timeout=args.connect_timeout,
    )
    return run_site_node(node)
