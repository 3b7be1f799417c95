"""`silo ledger`: verify, export, and make the signing key of a site's privacy ledger."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from client.ledger import restart_ledger
from client.ledger_export import export_ledger
from common import keys
from common.errors import ConfigError, LedgerError
from common.ledger.verify import verify_ledger

_EPILOG = """\
The ledger is the site's append-only record of every training round's privacy spend: one JSON entry
per line, hash-chained and signed with the site's Ed25519 key. `verify` checks the format, the chain,
every signature against the site's PUBLIC key, and recomputes every recorded epsilon from the DP
events; it names the first bad entry (0-based line index). Removing entries from the END of the file
cannot be seen from the file alone: the site keeps a signed head (`<ledger>.head`) and refuses to train
on a ledger that is missing, shorter than its head or different from it; the coordinator records each
site's ledger index and flags one that went backwards.

A lost ledger is never restarted silently. `restart` is the deliberate way out: it keeps the old files
beside the new ledger (`.lost-<time>`) and writes entry 0 of kind "restart", with the lost ledger's last
head when known, so every auditor sees that the budget started again.

examples:
  silo ledger keygen --out site/keys/ledger.pem        # also writes site/keys/ledger.pem.pub
  silo ledger verify --ledger site/ledger.jsonl --public-key site/keys/ledger.pem.pub
  silo ledger export --ledger site/ledger.jsonl --out audit/site-a
  silo ledger restart --ledger state/privacy_ledger.jsonl --key state/site_signing.key --confirm-budget-restart
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ledger",
        help="verify or export a site's signed privacy ledger",
        description="Check, export or key a site's signed, hash-chained privacy ledger.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    verify = actions.add_parser(
        "verify",
        help="check chain, signatures and every epsilon; name the first bad entry",
        description="Exit 0 when every entry is intact; otherwise exit 6 naming the first bad entry.",
    )
    verify.add_argument("--ledger", required=True, metavar="FILE", help="the site's ledger (JSONL)")
    verify.add_argument("--public-key", required=True, metavar="FILE", help="the site's Ed25519 public key (PEM)")
    verify.add_argument("--json", action="store_true", help="print the result as JSON")
    verify.set_defaults(func=run_verify)

    export = actions.add_parser(
        "export",
        help="write the ledger, the site's public key and a manifest for an auditor",
        description="Copy the ledger with the site's public key and a manifest (fingerprint, entry "
        "count, sha256, self-verification) into DIR. No private key, no records.",
    )
    export.add_argument("--ledger", required=True, metavar="FILE", help="the site's ledger (JSONL)")
    export.add_argument("--out", required=True, metavar="DIR", help="output directory (files are never overwritten)")
    export.set_defaults(func=run_export)

    keygen = actions.add_parser(
        "keygen",
        help="create a site signing key (PEM, mode 0600) and its public key (FILE.pub)",
        description="Create an Ed25519 signing key for the ledger; refuses to overwrite.",
    )
    keygen.add_argument("--out", required=True, metavar="FILE", help="private key path; public key goes to FILE.pub")
    keygen.set_defaults(func=run_keygen)

    restart = actions.add_parser(
        "restart",
        help="deliberately start a new ledger after losing one (recorded in its first entry)",
        description="Start a new ledger whose entry 0 records the restart. The site's budget starts again "
        "from 0, visibly: only with --confirm-budget-restart. The old ledger and head, if any, are kept.",
    )
    restart.add_argument("--ledger", required=True, metavar="FILE", help="the site's ledger path (JSONL)")
    restart.add_argument("--key", required=True, metavar="FILE", help="the site's signing key (PEM)")
    restart.add_argument(
        "--confirm-budget-restart",
        action="store_true",
        help="required: you accept that the spend recorded in the lost ledger is no longer enforced",
    )
    restart.set_defaults(func=run_restart)


def run_verify(args: argparse.Namespace) -> int:
    result = verify_ledger(args.ledger, keys.load_public_key(args.public_key))
    if args.json:
        print(json.dumps({"ledger": args.ledger, **result.__dict__}, default=str, indent=2))
    if not result.ok:
        raise LedgerError(f"{args.ledger}: {result}")
    if not args.json:
        print(f"{args.ledger}: {result}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    out = export_ledger(args.ledger, args.out)
    manifest = json.loads((out / "manifest.json").read_text())
    state = "verifies" if manifest["self_verification"]["ok"] else "DOES NOT VERIFY"
    print(
        f"exported {manifest['entries']} entries to {out} ({state}); "
        f"site key fingerprint {manifest['site_public_key_fingerprint']}"
    )
    return 0


def run_keygen(args: argparse.Namespace) -> int:
    key = keys.generate_signing_key()
    private_path = Path(args.out)
    public_path = private_path.with_name(private_path.name + ".pub")
    if public_path.exists():
        raise ConfigError(f"refusing to overwrite existing key file {public_path}.")
    keys.save_private_key(key, private_path)
    keys.save_public_key(key, public_path)
    print(f"wrote {private_path} (mode 0600) and {public_path}; fingerprint {keys.fingerprint(key)}")
    return 0


def run_restart(args: argparse.Namespace) -> int:
    if not args.confirm_budget_restart:
        raise ConfigError(
            "restarting a ledger restarts the site's privacy budget at 0; pass --confirm-budget-restart "
            "if that is what you mean (restoring the lost ledger from a backup is better)"
        )
    entry = restart_ledger(args.ledger, signing_key=keys.load_private_key(args.key))
    lost = entry["update_sha256"] or "unknown (no head survived)"
    print(f"started a new ledger at {args.ledger}; entry 0 records the restart (lost head {lost})")
    return 0
