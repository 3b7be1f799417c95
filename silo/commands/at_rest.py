"""`silo at-rest`: the key that encrypts the coordinator's checkpoints, and decrypting them."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

from common import encryption
from common.errors import ConfigError
from silo import console

_ABOUT = (
    "The coordinator encrypts each round's adapter and strategy state (AES-256-GCM) when its environment "
    "names a key: SILO_AT_REST_KEY_FILE=/path/to/at_rest.key (preferred) or SILO_AT_REST_KEY=<base64>, "
    "or `silo coordinator start --at-rest-key-file FILE`. Files become *.enc; the manifest records the "
    "cipher and key id, and its adapter_sha256 stays the hash of the plain adapter. Resuming needs the "
    "same key. Lose the key and the checkpoints are gone: back it up apart from the run directory."
)

KEYGEN_EXAMPLES = ("silo at-rest keygen --out /etc/silo/at_rest.key",)
DECRYPT_EXAMPLES = ("silo at-rest decrypt --key-file /etc/silo/at_rest.key --in run/final --out final-plain",)


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        help=console.help_text(
            "make the checkpoint encryption key, or decrypt an encrypted adapter directory\n\n"
            "Encryption at rest for the coordinator's run directory.\n\n" + _ABOUT
        ),
        epilog=console.examples(*KEYGEN_EXAMPLES, *DECRYPT_EXAMPLES),
        no_args_is_help=True,
        rich_markup_mode="rich",
    )
    group.command("keygen", epilog=console.examples(*KEYGEN_EXAMPLES))(run_keygen)
    group.command("decrypt", epilog=console.examples(*DECRYPT_EXAMPLES))(run_decrypt)
    app.add_typer(group, name="at-rest")


def run_keygen(
    out: Annotated[Path, typer.Option("--out", metavar="FILE", help="key file to create")],
) -> int:
    """write a new 256-bit key (base64, mode 0600; never overwrites)"""
    key = encryption.write_key_file(out)
    print(f"wrote {out} (key id {encryption.key_id(key)}); set SILO_AT_REST_KEY_FILE={out.resolve()}")
    return 0


def run_decrypt(
    src: Annotated[Path, typer.Option("--in", metavar="DIR", help="the encrypted adapter directory")],
    out: Annotated[Path, typer.Option("--out", metavar="OUT", help="new directory (must not exist)")],
    key_file: Annotated[
        Path | None,
        typer.Option("--key-file", metavar="FILE", help="key file (default: SILO_AT_REST_KEY_FILE / SILO_AT_REST_KEY)"),
    ] = None,
) -> int:
    """copy an adapter directory (RUN/final, RUN/rounds/<n>) with its *.enc files decrypted

    Write a plain copy of DIR into OUT: every *.enc file decrypted and authenticated (a changed byte or the wrong key fails and nothing is written), every other file copied.
    """
    key = encryption.load_key_file(key_file) if key_file else encryption.key_from_env()
    if key is None:
        raise ConfigError("give --key-file, or set SILO_AT_REST_KEY_FILE or SILO_AT_REST_KEY")
    if not src.is_dir():
        raise ConfigError(f"--in {src}: not a directory")
    if out.exists():
        raise ConfigError(f"--out {out} already exists; refusing to overwrite")
    files = [p for p in sorted(src.iterdir()) if p.is_file()]
    # Decrypt everything in memory first: nothing is written unless every file authenticates.
    plain = {
        p.name.removesuffix(encryption.SUFFIX): encryption.decrypt_bytes(
            key, p.read_bytes(), context=p.name.removesuffix(encryption.SUFFIX), source=str(p)
        )
        for p in files
        if p.name.endswith(encryption.SUFFIX)
    }
    out.mkdir(parents=True)
    for p in files:
        if p.name.endswith(encryption.SUFFIX):
            (out / p.name.removesuffix(encryption.SUFFIX)).write_bytes(plain[p.name.removesuffix(encryption.SUFFIX)])
        else:
            shutil.copy2(p, out / p.name)
    print(f"{len(plain)} file(s) decrypted into {out}")
    return 0
