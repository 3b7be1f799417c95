"""How a site's node is started (silo/flower_processes.py): Silo's executor in front of an isolated SuperNode."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from common.errors import ConfigError
from silo.flower_processes import kit_coordinator_key, site_node_argv, supernode_argv
from silo.keygen import create_keys


def test_site_node_is_the_executor_with_a_supernode_that_runs_no_app(tmp_path: Path):
    kit = create_keys(tmp_path / "keys", ["a"]).site("a")
    supernode = supernode_argv(superlink="127.0.0.1:9092", port=9094, site_config=tmp_path / "a.toml", kit=kit)
    argv = site_node_argv(
        supernode, site_config=tmp_path / "a.toml", port=9094, coordinator_key=kit_coordinator_key(kit)
    )

    assert argv[:3] == [sys.executable, "-m", "client.runtime"]
    assert argv[argv.index("--coordinator-key") + 1] == str(kit.coordinator_public_key.resolve())
    assert argv[argv.index("--runtime-api-address") + 1] == "127.0.0.1:9094"
    child = argv[argv.index("--") + 1 :]
    assert child == supernode and Path(child[0]).name == "flower-supernode"
    assert child[child.index("--isolation") + 1] == "process"
    assert child[child.index("--host") + 1] == "127.0.0.1"  # the Runtime API never leaves the machine


def test_site_node_with_tls_needs_the_coordinators_key(tmp_path: Path):
    kit = create_keys(tmp_path / "keys", ["a"]).site("a")
    supernode = supernode_argv(superlink="127.0.0.1:9092", port=9094, site_config=tmp_path / "a.toml", kit=kit)
    with pytest.raises(ConfigError, match="run-request key"):
        site_node_argv(supernode, site_config=tmp_path / "a.toml", port=9094, coordinator_key=None)


def test_site_node_in_plain_text_accepts_unsigned_requests_and_says_so(tmp_path: Path):
    supernode = supernode_argv(superlink="127.0.0.1:9092", port=9094, site_config=tmp_path / "a.toml")
    argv = site_node_argv(supernode, site_config=tmp_path / "a.toml", port=9094, coordinator_key=None)
    assert "--insecure" in supernode and "--no-coordinator-key" in argv
