"""Private keys others can read are refused by the real commands, before anything starts: one line that
names the file and the `chmod 600` that fixes it (exit 2); a private key where a public one belongs is
refused the same way."""

from __future__ import annotations

import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from common import encryption
from silo.keygen import create_keys
from tests.integration.conftest import make_layout

SILO = [sys.executable, "-m", "silo"]


def _silo(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SILO, *args], capture_output=True, text=True, cwd=cwd, timeout=180, check=False)


def test_keys_open_to_others_are_refused_by_every_command_that_loads_them(tmp_path: Path, base_model_dir: Path) -> None:
    layout, sites = make_layout(tmp_path, base_model_dir, rounds=1, sites=1)
    coordinator, kit = layout.keys / "coordinator", layout.keys / "sites" / "site-0"
    at_rest = tmp_path / "at_rest.key"
    encryption.write_key_file(at_rest)
    # Each case: its own copy of the keys with one private file opened up, and the command that loads it.
    cases: dict[str, tuple[Path, list[str]]] = {}

    def case(name: str, relative: str, mode: int, command: list[str]) -> None:
        root = tmp_path / name
        shutil.copytree(layout.keys, root / "keys")
        shutil.copy2(at_rest, root / "at_rest.key")
        target = root / relative
        target.chmod(mode)
        cases[name] = (target, [arg.replace("{root}", str(root)) for arg in command])

    start = ["coordinator", "start", "--keys", "{root}/keys/coordinator", "--port", "1", "--fleet-port", "2"]
    start += ["--database", "{root}/state/superlink.db"]
    site = [
        "site",
        "start",
        "--config",
        str(sites[0]),
        "--superlink",
        "127.0.0.1:2",
        "--keys",
        "{root}/keys/sites/site-0",
    ]
    case("superlink-key", "keys/coordinator/superlink.key", 0o644, start)
    case("ca-key", "keys/coordinator/ca.key", 0o640, start)
    case("at-rest-coordinator", "at_rest.key", 0o604, [*start, "--at-rest-key-file", "{root}/at_rest.key"])
    decrypt = ["at-rest", "decrypt", "--key-file", "{root}/at_rest.key", "--in", "{root}", "--out", "{root}/plain"]
    case("at-rest-decrypt", "at_rest.key", 0o644, decrypt)
    case("supernode-auth-key", "keys/sites/site-0/supernode_auth.key", 0o644, site)
    case("site-signing-key", "keys/sites/site-0/site_signing.key", 0o660, site)

    with ThreadPoolExecutor(max_workers=3) as pool:
        outcomes = dict(zip(cases, pool.map(lambda c: _silo(*c[1], cwd=tmp_path), cases.values()), strict=True))
    for name, out in outcomes.items():
        target = cases[name][0]
        assert out.returncode == 2, (name, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in out.stderr, (name, out.stderr)
        mode = target.stat().st_mode & 0o777
        assert lines[0].endswith(
            f"{target} is a private key open to group or others (mode {mode:03o}); fix: chmod 600 {target}"
        ), (name, lines)
    # Nothing was started or created on the way: no SuperLink database, no decrypted copy.
    assert not any((tmp_path / name / "state").exists() for name in cases)
    assert not (tmp_path / "at-rest-decrypt" / "plain").exists()
    assert (coordinator / "superlink.key").stat().st_mode & 0o777 == 0o600  # the original kit is untouched
    assert (kit / "supernode_auth.key").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("private", ["sites/site-0/site_signing.key", "sites/site-0/supernode_auth.key"])
def test_a_private_key_given_as_a_public_key_is_refused(tmp_path: Path, private: str) -> None:
    layout = create_keys(tmp_path / "keys", ["site-0"])
    key = layout.root / private
    # The auditor's command, and the coordinator's SuperNode registry (it would upload the key to the SuperLink).
    layout.supernode_public_key("site-0").unlink()
    shutil.copy2(key, layout.supernode_public_key("site-0"))
    start = ["coordinator", "start", "--keys", str(layout.coordinator), "--port", "1", "--fleet-port", "2"]
    outs = [
        _silo("ledger", "verify", "--ledger", str(tmp_path / "ledger.jsonl"), "--public-key", str(key), cwd=tmp_path),
        _silo(*start, "--nginx", "/bin/true", cwd=tmp_path),
    ]
    for out, named in zip(outs, [key, layout.supernode_public_key("site-0")], strict=True):
        assert out.returncode == 2, out.stderr
        assert out.stderr.strip().splitlines() == [
            f"{out.stderr.split(':', 1)[0]}: error: {named} holds a private key where a public key is expected; "
            "give its .pub file (and keep the private key where it was)"
        ]
