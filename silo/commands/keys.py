"""`silo keys`: every key and certificate a federation needs, in one command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import click
import typer

from common.pki import COORDINATOR_SIGNING_PUB
from common.registry import load_registry
from silo import console, keygen

_LAYOUT = """\
Layout (private keys mode 0600; nothing is ever overwritten):

  DIR/coordinator/ca.pem, ca.key            the federation's CA (keep ca.key offline once running)
  DIR/coordinator/superlink.pem, .key       the SuperLink's TLS certificate (SANs: --superlink-host)
  DIR/coordinator/registry.json             each site's Ed25519 signing key and fingerprint
  DIR/coordinator/supernodes/<id>.pub       each site's SuperNode key, registered with the SuperLink
  DIR/coordinator/coordinator_signing.key   signs the coordinator's run requests (found beside the registry)
  DIR/sites/<id>/ca.pem                     what site <id> receives: the CA certificate,
  DIR/sites/<id>/supernode_auth.key, .pub   its SuperNode authentication key (ECDSA P-384),
  DIR/sites/<id>/site_signing.key, .pub     its update/ledger signing key (Ed25519),
  DIR/sites/<id>/coordinator_signing.pub    and the coordinator's run-request key: it trains only for runs signed with it

Give DIR/coordinator/ to the coordinator (`silo coordinator start --keys DIR/coordinator`) and DIR/sites/<id>/
to site <id> only (`silo site start --keys DIR/sites/<id>`), over a channel you trust. The federation TOML names
the registry: [security] registry = ".../registry.json".
"""

EXAMPLES = (
    "silo keys --out keys --sites hospital-a,hospital-b,bank-c",
    "silo keys --out keys --sites a,b --superlink-host coordinator.example.org --superlink-host 10.0.0.5",
    "silo keys --out keys --add-sites bank-d       # a new site joins an existing federation",
    "silo keys --out keys --add-coordinator-key    # a key directory made before run requests were signed",
)


def register(app: typer.Typer) -> None:
    help_text = (
        "Make the federation's CA, SuperLink TLS certificate, and each site's authentication and signing keys.\n\n"
        "Create, in one directory, a CA, the SuperLink's TLS certificate, each site's SuperNode authentication "
        "key pair and Ed25519 signing key pair, and the coordinator's registry of site public keys. Refuses to "
        "overwrite any existing key.\n\n" + _LAYOUT
    )
    app.command("keys", help=console.help_text(help_text), epilog=console.examples(*EXAMPLES))(keys)


def keys(
    out: Annotated[Path, typer.Option("--out", metavar="DIR", help="key directory to create (or extend)")],
    sites: Annotated[
        str | None, typer.Option("--sites", metavar="A,B,C", help="site ids, comma-separated (as in each site's TOML)")
    ] = None,
    add_sites: Annotated[
        str | None,
        typer.Option("--add-sites", metavar="D,E", help="add sites to an existing DIR (same CA and registry)"),
    ] = None,
    add_coordinator_key: Annotated[
        bool,
        typer.Option(
            "--add-coordinator-key",
            help="add the coordinator's run-request signing key to an existing DIR, and its public half to every "
            "site kit there (nothing existing is replaced)",
        ),
    ] = False,
    superlink_host: Annotated[
        list[str] | None,
        typer.Option(
            "--superlink-host",
            metavar="HOST",
            help="DNS name or IP address the sites use to reach the SuperLink; repeat for several "
            f"(default: {', '.join(keygen.DEFAULT_HOSTS)})",
        ),
    ] = None,
    days: Annotated[int, typer.Option("--days", help="certificate validity in days")] = keygen.DEFAULT_VALIDITY_DAYS,
    as_json: Annotated[bool, typer.Option("--json", help="print the files written as JSON")] = False,
) -> int:
    if sum((sites is not None, add_sites is not None, add_coordinator_key)) != 1:
        raise click.UsageError("give exactly one of --sites, --add-sites, --add-coordinator-key")
    if sites is not None:
        site_ids = sites.split(",")
        layout = keygen.create_keys(out, site_ids, hosts=superlink_host or keygen.DEFAULT_HOSTS, days=days)
    elif add_sites is not None:
        site_ids = add_sites.split(",")
        layout = keygen.add_sites(out, site_ids)
    else:
        layout = keygen.add_coordinator_key(out)
        print(f"coordinator run-request key: {layout.coordinator_signing_key}; give each site its")
        print(f"  {COORDINATOR_SIGNING_PUB} from DIR/sites/<id>/ (public; its integrity matters)")
        return 0
    site_ids = [s.strip() for s in site_ids if s.strip()]
    hosts = keygen.certificate_hosts(keygen.load_certificate(layout.superlink_cert))
    registry = load_registry(layout.registry).entries
    if as_json:
        written = {
            "coordinator": str(layout.coordinator),
            "superlink_hosts": hosts,
            "registry": str(layout.registry),
            "sites": {
                s: {"dir": str(layout.site(s).root), "fingerprint": registry[s]["fingerprint"]} for s in site_ids
            },
        }
        print(json.dumps(written, indent=2))
        return 0
    print(f"coordinator: {layout.coordinator}  (SuperLink certificate for {', '.join(hosts)})")
    for s in site_ids:
        print(f"site {s}: {layout.site(s).root}  (signing key fingerprint {registry[s]['fingerprint'][:16]})")
    print(f"registry:    {layout.registry}  ({len(registry)} sites)")
    print("Give each site only its own directory; keep coordinator/ca.key offline.")
    return 0
