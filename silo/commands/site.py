"""`silo site check` and `silo site start`: for the site operator."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from common.config import load_site_config
from common.errors import ConfigError
from common.pki import SiteKit
from silo import console
from silo.flower_processes import (
    RUNTIME_HOST,
    check_port_free,
    flower_env,
    kit_coordinator_key,
    site_node_argv,
    supernode_argv,
)
from silo.site_watch import SiteNode, run_site_node

CHECK_EXAMPLES = ("silo site check --config site.toml",)
START_EXAMPLES = (
    "silo site start --config site.toml --superlink coord.example:9092 --keys keys/sites/hospital-a",
    "silo site start --config site.toml --superlink coord.example:9092 --keys keys/sites/hospital-b --port 9095 "
    "--connect-timeout 0    # a second site on this machine; wait for the coordinator for ever",
)
# Seconds `silo site start` waits for its first connection before giving up with the reason: long
# enough for a coordinator started a few minutes after its sites.
DEFAULT_CONNECT_TIMEOUT_S = 300.0

_START_HELP = (
    "Run this site's SuperNode in the foreground.\n\n"
    "Check the site, then run a Flower SuperNode that connects to the coordinator's SuperLink over TLS and "
    "authenticates with this site's SuperNode key, served by Silo's site executor: it runs only the app "
    "`[site] app` approves (default: the Silo installed here), always with the installed code, and only for runs "
    "the coordinator signed (its key is in the kit). A refused run is one line in this log; nothing is executed, "
    "trained or spent. With --keys, the site's signing key is first copied into its state_dir (an existing "
    "different key there is refused)."
)


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        help="Check or start this site's node.\n\n"
        "For the site operator: check the site's TOML and records, or run its node.",
        epilog=console.examples(*CHECK_EXAMPLES, *START_EXAMPLES),
        no_args_is_help=True,
        rich_markup_mode="rich",
    )
    group.command("check", epilog=console.examples(*CHECK_EXAMPLES))(check_site)
    group.command("start", help=console.help_text(_START_HELP), epilog=console.examples(*START_EXAMPLES))(start_site)
    app.add_typer(group, name="site")


def check_site(config: Annotated[Path, typer.Option("--config", help="site TOML")]) -> int:
    """Validate the site TOML and records without training or sending anything.

    Load the site TOML and every record file, check them against the task, and report the train / hold-out
    split. Errors name the field, or the file and line.
    """
    from client.ingest import load_site_records, split_records

    cfg = load_site_config(config)
    records = load_site_records(cfg.data_dir, cfg.data, cfg.task)
    split = split_records(records, holdout_fraction=cfg.data.holdout_fraction, seed=cfg.data.seed)
    print(
        f"site {cfg.site.id}: {len(records)} records in {cfg.data_dir} "
        f"({len(split.train)} train, {len(split.holdout)} hold-out); task {cfg.task.type}; model {cfg.model_source()}"
    )
    return 0


def start_site(
    config: Annotated[Path, typer.Option("--config", help="site TOML")],
    superlink: Annotated[str, typer.Option("--superlink", help="coordinator's SuperLink address host:port")],
    keys: Annotated[
        Path | None,
        typer.Option("--keys", metavar="DIR", help="this site's directory from `silo keys` (DIR/sites/<site id>)"),
    ] = None,
    root_certificates: Annotated[
        Path | None,
        typer.Option("--root-certificates", help="CA certificate of the coordinator's TLS (instead of --keys)"),
    ] = None,
    auth_key: Annotated[
        Path | None, typer.Option("--auth-key", help="SuperNode authentication private key (instead of --keys)")
    ] = None,
    coordinator_key: Annotated[
        Path | None,
        typer.Option(
            "--coordinator-key",
            help="the coordinator's run-request public key, coordinator_signing.pub (instead of --keys)",
        ),
    ] = None,
    port: Annotated[int, typer.Option("--port", help="loopback port of the SuperNode's Runtime API")] = 9094,
    connect_timeout: Annotated[
        float,
        typer.Option(
            "--connect-timeout",
            metavar="SECONDS",
            help="give up, saying why (DNS, refused, TLS, unregistered key), when not connected by then; 0 waits "
            "for ever",
        ),
    ] = DEFAULT_CONNECT_TIMEOUT_S,
    log: Annotated[
        Path | None,
        typer.Option("--log", help="where Flower's own log lines go (default: <state_dir>/logs/node.log)"),
    ] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="plain-text connection (testing only; warns)")] = False,
) -> int:
    check_site(config=config)
    cfg_path = Path(config).resolve()
    cfg = load_site_config(cfg_path)
    kit = ca_cert = auth_key_path = None
    if insecure:
        print("silo: WARNING: --insecure: this site's updates travel unencrypted and unauthenticated", file=sys.stderr)
    elif keys is not None:
        kit = SiteKit(keys)
        kit.check()
        from client.site_state import install_kit_signing_key  # torch and Flower: only when a site starts

        install_kit_signing_key(kit, cfg)
    elif root_certificates is not None and auth_key is not None:
        ca_cert, auth_key_path = root_certificates, auth_key
    else:
        raise ConfigError(
            "give --keys DIR/sites/<site id> (from `silo keys`), or --root-certificates and --auth-key, "
            "or --insecure for testing"
        )
    supernode = supernode_argv(
        superlink=superlink, port=port, site_config=cfg_path, kit=kit, ca_cert=ca_cert, auth_key=auth_key_path
    )
    run_key = kit_coordinator_key(kit) if kit is not None else coordinator_key
    # After the keys' checks (a key others can read is refused whatever the port), before anything starts.
    check_port_free(RUNTIME_HOST, port, flag="--port (a second site on this machine needs its own)")
    argv = site_node_argv(supernode, site_config=cfg_path, port=port, coordinator_key=run_key)
    node = SiteNode(
        site_id=cfg.site.id,
        argv=argv,
        env=flower_env(Path(os.environ.get("FLWR_HOME", Path.home() / ".flwr"))),
        log=log or cfg.state_dir / "logs" / "node.log",
        superlink=superlink,
        ca_cert=kit.ca_cert if kit is not None else ca_cert,
        auth_public_key=kit.auth_public_key if kit is not None else auth_key_path and auth_key_path.with_suffix(".pub"),
        connect_timeout=connect_timeout,
    )
    return run_site_node(node)
