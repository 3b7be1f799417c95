"""`silo keys`: every key and certificate a federation needs, in one command."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import pki

_EPILOG = """\
layout (private keys mode 0600; nothing is ever overwritten):
  DIR/coordinator/ca.pem, ca.key            the federation's CA (keep ca.key offline once running)
  DIR/coordinator/superlink.pem, .key       the SuperLink's TLS certificate (SANs: --superlink-host)
  DIR/coordinator/registry.json             each site's Ed25519 signing key and fingerprint
  DIR/coordinator/supernodes/<id>.pub       each site's SuperNode key, registered with the SuperLink
  DIR/coordinator/coordinator_signing.key   signs the coordinator's run requests (found beside the registry)
  DIR/sites/<id>/ca.pem                     what site <id> receives: the CA certificate,
  DIR/sites/<id>/supernode_auth.key, .pub   its SuperNode authentication key (ECDSA P-384),
  DIR/sites/<id>/site_signing.key, .pub     its update/ledger signing key (Ed25519),
  DIR/sites/<id>/coordinator_signing.pub    and the coordinator's run-request key: it trains only for runs signed with it

Give DIR/coordinator/ to the coordinator (`silo coordinator start --keys DIR/coordinator`) and
DIR/sites/<id>/ to site <id> only (`silo site start --keys DIR/sites/<id>`), over a channel you
trust. The federation TOML names the registry: [security] registry = ".../registry.json".

examples:
  silo keys --out keys --sites hospital-a,hospital-b,bank-c
  silo keys --out keys --sites a,b --superlink-host coordinator.example.org --superlink-host 10.0.0.5
  silo keys --out keys --add-sites bank-d       # a new site joins an existing federation
  silo keys --out keys --add-coordinator-key    # a key directory made before run requests were signed
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "keys",
        help="make the federation's CA, SuperLink TLS certificate, and each site's authentication and signing keys",
        description="Create, in one directory, a CA, the SuperLink's TLS certificate, each site's SuperNode "
        "authentication key pair and Ed25519 signing key pair, and the coordinator's registry of site "
        "public keys. Refuses to overwrite any existing key.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="key directory to create (or extend)")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--sites", metavar="A,B,C", help="site ids, comma-separated (as in each site's [site] id)")
    group.add_argument("--add-sites", metavar="D,E", help="add sites to an existing DIR (same CA and registry)")
    group.add_argument(
        "--add-coordinator-key",
        action="store_true",
        help="add the coordinator's run-request signing key to an existing DIR, and its public half to every "
        "site kit there (nothing existing is replaced)",
    )
    p.add_argument(
        "--superlink-host",
        action="append",
        metavar="HOST",
        help="DNS name or IP address the sites use to reach the SuperLink; repeat for several "
        f"(default: {', '.join(pki.DEFAULT_HOSTS)})",
    )
    p.add_argument(
        "--days",
        type=int,
        default=pki.DEFAULT_VALIDITY_DAYS,
        help="certificate validity in days (default: %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="print the files written as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.sites is not None:
        sites = args.sites.split(",")
        layout = pki.create_keys(args.out, sites, hosts=args.superlink_host or pki.DEFAULT_HOSTS, days=args.days)
    elif args.add_sites is not None:
        sites = args.add_sites.split(",")
        layout = pki.add_sites(args.out, sites)
    else:
        layout = pki.add_coordinator_key(args.out)
        print(f"coordinator run-request key: {layout.coordinator_signing_key}; give each site its")
        print(f"  {pki.COORDINATOR_SIGNING_PUB} from DIR/sites/<id>/ (public; its integrity matters)")
        return 0
    sites = [s.strip() for s in sites if s.strip()]
    hosts = pki.certificate_hosts(pki.load_certificate(layout.superlink_cert))
    registry = pki.read_registry(layout.registry)
    if args.json:
        print(json.dumps({
            "coordinator": str(layout.coordinator),
            "superlink_hosts": hosts,
            "registry": str(layout.registry),
            "sites": {s: {"dir": str(layout.site(s).root), "fingerprint": registry[s]["fingerprint"]} for s in sites},
        }, indent=2))  # fmt: skip
        return 0
    print(f"coordinator: {layout.coordinator}  (SuperLink certificate for {', '.join(hosts)})")
    for s in sites:
        print(f"site {s}: {layout.site(s).root}  (signing key fingerprint {registry[s]['fingerprint'][:16]})")
    print(f"registry:    {layout.registry}  ({len(registry)} sites)")
    print("Give each site only its own directory; keep coordinator/ca.key offline.")
    return 0
