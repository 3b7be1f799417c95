"""`silo at-rest`: the key that encrypts the coordinator's checkpoints, and decrypting them."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from common import encryption
from common.errors import ConfigError

_EPILOG = """\
The coordinator encrypts each round's adapter and strategy state (AES-256-GCM) when its environment
names a key: SILO_AT_REST_KEY_FILE=/path/to/at_rest.key (preferred) or SILO_AT_REST_KEY=<base64>,
or `silo coordinator start --at-rest-key-file FILE`. Files become *.enc; the manifest records the
cipher and key id, and its adapter_sha256 stays the hash of the plain adapter. Resuming needs the
same key. Lose the key and the checkpoints are gone: back it up apart from the run directory.

examples:
  silo at-rest keygen --out /etc/silo/at_rest.key
  silo at-rest decrypt --key-file /etc/silo/at_rest.key --in run/final --out final-plain
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "at-rest",
        help="make the checkpoint encryption key, or decrypt an encrypted adapter directory",
        description="Encryption at rest for the coordinator's run directory.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    keygen = actions.add_parser("keygen", help="write a new 256-bit key (base64, mode 0600; never overwrites)")
    keygen.add_argument("--out", type=Path, required=True, metavar="FILE")
    keygen.set_defaults(func=run_keygen)
    decrypt = actions.add_parser(
        "decrypt",
        help="copy an adapter directory (RUN/final, RUN/rounds/<n>) with its *.enc files decrypted",
        description="Write a plain copy of DIR into OUT: every *.enc file decrypted and authenticated (a "
        "changed byte or the wrong key fails and nothing is written), every other file copied.",
    )
    decrypt.add_argument("--in", dest="src", type=Path, required=True, metavar="DIR")
    decrypt.add_argument("--out", type=Path, required=True, metavar="OUT", help="new directory (must not exist)")
    decrypt.add_argument("--key-file", type=Path, help="key file (default: SILO_AT_REST_KEY_FILE / SILO_AT_REST_KEY)")
    decrypt.set_defaults(func=run_decrypt)


def run_keygen(args: argparse.Namespace) -> int:
    key = encryption.write_key_file(args.out)
    print(f"wrote {args.out} (key id {encryption.key_id(key)}); set SILO_AT_REST_KEY_FILE={args.out.resolve()}")
    return 0


def run_decrypt(args: argparse.Namespace) -> int:
    key = encryption.load_key_file(args.key_file) if args.key_file else encryption.key_from_env()
    if key is None:
        raise ConfigError("give --key-file, or set SILO_AT_REST_KEY_FILE or SILO_AT_REST_KEY")
    if not args.src.is_dir():
        raise ConfigError(f"--in {args.src}: not a directory")
    if args.out.exists():
        raise ConfigError(f"--out {args.out} already exists; refusing to overwrite")
    files = [p for p in sorted(args.src.iterdir()) if p.is_file()]
    # Decrypt everything in memory first: nothing is written unless every file authenticates.
    plain = {
        p.name.removesuffix(encryption.SUFFIX): encryption.decrypt_bytes(
            key, p.read_bytes(), context=p.name.removesuffix(encryption.SUFFIX), source=str(p)
        )
        for p in files
        if p.name.endswith(encryption.SUFFIX)
    }
    args.out.mkdir(parents=True)
    for p in files:
        if p.name.endswith(encryption.SUFFIX):
            (args.out / p.name.removesuffix(encryption.SUFFIX)).write_bytes(
                plain[p.name.removesuffix(encryption.SUFFIX)]
            )
        else:
            shutil.copy2(p, args.out / p.name)
    print(f"{len(plain)} file(s) decrypted into {args.out}")
    return 0
