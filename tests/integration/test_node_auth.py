"""Real processes: the SuperLink serves TLS and admits only SuperNodes whose key was registered, also
through the Fleet proxy that sites use (silo/proxy.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from silo.flower_processes import free_port, supernode_argv
from silo.local_federation import LocalFederation
from tests.integration.conftest import make_layout

pytestmark = pytest.mark.integration


def _nodes(fed: LocalFederation) -> list[dict]:
    out = fed.connection.flwr("supernode", "list", "--format", "json", timeout=60)
    return json.loads(out.stdout).get("nodes", [])


def _wait_exit(fed: LocalFederation, name: str, timeout: float = 90.0) -> int:
    proc = fed.proc(name)
    deadline = time.monotonic() + timeout
    while proc.alive() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not proc.alive(), f"{name} is still running after {timeout:.0f}s:\n{proc.tail()}"
    return proc.popen.returncode


def test_supernode_whose_key_is_not_registered_cannot_join(tmp_path: Path, federation_model_dir: Path) -> None:
    layout, sites = make_layout(tmp_path, federation_model_dir, rounds=1, sites=2)
    # site-1 holds a full kit from `silo keys` (the right CA, a SuperNode key, a signing key), but
    # the coordinator never registered its SuperNode key.
    (layout.keys / "coordinator" / "supernodes" / "site-1.pub").unlink()

    with LocalFederation(tmp_path / "procs", sites, keys=layout.keys, fleet_proxy=True) as fed:
        assert fed.registered == {"site-0": "registered"}
        # A third SuperNode with TLS (it trusts the right CA) but no authentication key at all.
        argv = supernode_argv(superlink=fed.fleet_address, port=free_port(), site_config=sites[1], kit=fed.site_kit(1))
        assert argv[-2] == "--auth-supernode-private-key"
        fed._spawn("no-key", argv[:-2])

        assert _wait_exit(fed, "site-1") != 0
        assert "Failed to activate SuperNode" in fed.proc("site-1").log.read_text()
        assert _wait_exit(fed, "no-key") != 0
        assert "must be registered" in fed.proc("no-key").log.read_text()

        nodes = _nodes(fed)
        assert len(nodes) == 1, nodes
        deadline = time.monotonic() + 60
        while nodes[0]["status"] != "online" and time.monotonic() < deadline:
            time.sleep(0.5)
            nodes = _nodes(fed)
        assert nodes[0]["status"] == "online", nodes
        assert fed.proc("site-0").alive()
