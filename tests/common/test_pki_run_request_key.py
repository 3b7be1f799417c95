"""The coordinator's run-request key in a `silo keys` directory (common/pki.py): made once, its public
half in every site kit, added to key directories made before it existed without replacing anything."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from common.errors import ConfigError
from common.keys import load_private_key, load_public_key
from common.pki import add_coordinator_key, add_sites, create_keys
from silo.flower_processes import kit_coordinator_key


def test_create_keys_gives_every_kit_the_coordinators_run_request_key(tmp_path: Path):
    layout = create_keys(tmp_path / "keys", ["a", "b"])
    private = load_private_key(layout.coordinator_signing_key)
    assert stat.S_IMODE(layout.coordinator_signing_key.stat().st_mode) == 0o600
    for site in ("a", "b"):
        kit = layout.site(site)
        assert load_public_key(kit.coordinator_public_key) == private.public_key()
        assert not (kit.root / layout.coordinator_signing_key.name).exists()  # never the private half
    add_sites(layout.root, ["c"])
    assert layout.site("c").coordinator_public_key.read_bytes() == layout.coordinator_signing_public_key.read_bytes()


def test_add_coordinator_key_upgrades_an_old_key_directory_and_keeps_it(tmp_path: Path):
    layout = create_keys(tmp_path / "keys", ["a"])
    # A directory from before run requests were signed: no coordinator key anywhere.
    for path in (layout.coordinator_signing_key, layout.coordinator_signing_public_key):
        path.unlink()
    layout.site("a").coordinator_public_key.unlink()
    with pytest.raises(ConfigError, match="add-coordinator-key"):
        kit_coordinator_key(layout.site("a"))

    out = subprocess.run(
        [sys.executable, "-m", "silo", "keys", "--out", str(layout.root), "--add-coordinator-key"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "coordinator_signing" in out.stdout
    first = layout.coordinator_signing_key.read_bytes()
    assert kit_coordinator_key(layout.site("a")).read_bytes() == layout.coordinator_signing_public_key.read_bytes()
    add_coordinator_key(layout.root)  # again: nothing replaced
    assert layout.coordinator_signing_key.read_bytes() == first
