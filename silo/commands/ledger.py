"""`silo ledger`: verify, export, and make the signing key of a site's privacy ledger."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from client.ledger import restart_ledger
from client.ledger_export import export_ledger
from common import keys
from common.errors import ConfigError, LedgerError
from common.ledger.verify import verify_ledger
from silo import console

_ABOUT = (
    "The ledger is the site's append-only record of every training round's privacy spend: one JSON entry "
    "per line, hash-chained and signed with the site's Ed25519 key. `verify` checks the format, the chain, "
    "every signature against the site's PUBLIC key, and recomputes every recorded epsilon from the DP "
    "events; it names the first bad entry (0-based line index). Removing entries from the END of the file "
    "cannot be seen from the file alone: the site keeps a signed head (`<ledger>.head`) and refuses to train "
    "on a ledger that is missing, shorter than its head or different from it; the coordinator records each "
    "site's ledger index and flags one that went backwards.\n\n"
    "A lost ledger is never restarted silently. `restart` is the deliberate way out: it keeps the old files "
    'beside the new ledger (`.lost-<time>`) and writes entry 0 of kind "restart", with the lost ledger\'s last '
    "head when known, so every auditor sees that the budget started again."
)

KEYGEN_EXAMPLES = ("silo ledger keygen --out site/keys/ledger.pem        # also writes site/keys/ledger.pem.pub",)
VERIFY_EXAMPLES = ("silo ledger verify --ledger site/ledger.jsonl --public-key site/keys/ledger.pem.pub",)
EXPORT_EXAMPLES = ("silo ledger export --ledger site/ledger.jsonl --out audit/site-a",)
RESTART_EXAMPLES = (
    "silo ledger restart --ledger state/privacy_ledger.jsonl --key state/site_signing.key --confirm-budget-restart",
)

_LEDGER_HELP = "the site's ledger (JSONL)"


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        help=console.help_text(
            "verify or export a site's signed privacy ledger\n\n"
            "Check, export or key a site's signed, hash-chained privacy ledger.\n\n" + _ABOUT
        ),
        epilog=console.examples(*KEYGEN_EXAMPLES, *VERIFY_EXAMPLES, *EXPORT_EXAMPLES, *RESTART_EXAMPLES),
        no_args_is_help=True,
        rich_markup_mode="rich",
    )
    group.command("verify", epilog=console.examples(*VERIFY_EXAMPLES))(run_verify)
    group.command("export", epilog=console.examples(*EXPORT_EXAMPLES))(run_export)
    group.command("keygen", epilog=console.examples(*KEYGEN_EXAMPLES))(run_keygen)
    group.command("restart", epilog=console.examples(*RESTART_EXAMPLES))(run_restart)
    app.add_typer(group, name="ledger")


def run_verify(
    ledger: Annotated[str, typer.Option("--ledger", metavar="FILE", help=_LEDGER_HELP)],
    public_key: Annotated[
        str, typer.Option("--public-key", metavar="FILE", help="the site's Ed25519 public key (PEM)")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> int:
    """check chain, signatures and every epsilon; name the first bad entry

    Exit 0 when every entry is intact; otherwise exit 6 naming the first bad entry.
    """
    result = verify_ledger(ledger, keys.load_public_key(public_key))
    if as_json:
        print(json.dumps({"ledger": ledger, **result.__dict__}, default=str, indent=2))
    if not result.ok:
        raise LedgerError(f"{ledger}: {result}")
    if not as_json:
        print(f"{ledger}: {result}")
    return 0


def run_export(
    ledger: Annotated[str, typer.Option("--ledger", metavar="FILE", help=_LEDGER_HELP)],
    out: Annotated[str, typer.Option("--out", metavar="DIR", help="output directory (files are never overwritten)")],
) -> int:
    """write the ledger, the site's public key and a manifest for an auditor

    Copy the ledger with the site's public key and a manifest (fingerprint, entry count, sha256, self-verification) into DIR. No private key, no records.
    """
    out_dir = export_ledger(ledger, out)
    manifest = json.loads((out_dir / "manifest.json").read_text())
    state = "verifies" if manifest["self_verification"]["ok"] else "DOES NOT VERIFY"
    print(
        f"exported {manifest['entries']} entries to {out_dir} ({state}); "
        f"site key fingerprint {manifest['site_public_key_fingerprint']}"
    )
    return 0


def run_keygen(
    out: Annotated[Path, typer.Option("--out", metavar="FILE", help="private key path; public key goes to FILE.pub")],
) -> int:
    """create a site signing key (PEM, mode 0600) and its public key (FILE.pub)

    Create an Ed25519 signing key for the ledger; refuses to overwrite.
    """
    key = keys.generate_signing_key()
    private_path = out
    public_path = private_path.with_name(private_path.name + ".pub")
    if public_path.exists():
        raise ConfigError(f"refusing to overwrite existing key file {public_path}.")
    keys.save_private_key(key, private_path)
    keys.save_public_key(key, public_path)
    print(f"wrote {private_path} (mode 0600) and {public_path}; fingerprint {keys.fingerprint(key)}")
    return 0


def run_restart(
    ledger: Annotated[str, typer.Option("--ledger", metavar="FILE", help="the site's ledger path (JSONL)")],
    key: Annotated[str, typer.Option("--key", metavar="FILE", help="the site's signing key (PEM)")],
    confirm_budget_restart: Annotated[
        bool,
        typer.Option(
            "--confirm-budget-restart",
            help="required: you accept that the spend recorded in the lost ledger is no longer enforced",
        ),
    ] = False,
) -> int:
    """deliberately start a new ledger after losing one (recorded in its first entry)

    Start a new ledger whose entry 0 records the restart. The site's budget starts again from 0, visibly: only with --confirm-budget-restart. The old ledger and head, if any, are kept.
    """
    if not confirm_budget_restart:
        raise ConfigError(
            "restarting a ledger restarts the site's privacy budget at 0; pass --confirm-budget-restart "
            "if that is what you mean (restoring the lost ledger from a backup is better)"
        )
    entry = restart_ledger(ledger, signing_key=keys.load_private_key(key))
    lost = entry["update_sha256"] or "unknown (no head survived)"
    print(f"started a new ledger at {ledger}; entry 0 records the restart (lost head {lost})")
    return 0
