"""Attacks on the coordinator from where sites stand, with real processes: the SuperLink on loopback,
nginx in front of it (silo/proxy.py), a site's own CA certificate and SuperNode key in the attacker's hands.

Every Control API command a site's kit could drive (`flwr run`, `flwr ls`, `flwr stop`, `flwr supernode
register`) fails through the proxy and changes nothing, while the registered site's SuperNode trains a
round through the same proxy."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from silo.flower_connection import APP_DIR, FlowerConnection
from silo.keygen import openssh_public_key
from silo.local_federation import LocalFederation
from silo.run_progress import follow_run
from tests.integration.conftest import make_layout

pytestmark = pytest.mark.integration


def _raw(address: str, ca: Path, method: str, path: str) -> int:
    """Status of one raw HTTPS request to `address`, the path sent exactly as given."""
    request = urllib.request.Request(f"https://{address}{path}", method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=30, context=ssl.create_default_context(cafile=str(ca))) as r:  # noqa: S310
            return int(r.status)
    except urllib.error.HTTPError as err:
        return err.code


def _refused(out: object) -> str:
    """The `flwr --format json` outcome of a command that must have failed with nginx's 403."""
    payload = json.loads(out.stdout)  # type: ignore[attr-defined]
    assert payload.get("success") is False, payload
    assert "403 Forbidden" in payload.get("error-message", ""), payload
    return str(payload["error-message"])


def test_control_api_is_refused_through_the_fleet_proxy_while_a_round_runs(
    tmp_path: Path, base_model_dir: Path, listening_hosts: Callable[[int], set[str]]
) -> None:
    layout, sites = make_layout(tmp_path, base_model_dir, rounds=1, sites=1)
    kit = layout.keys / "sites" / "site-0"
    attacker_pub = tmp_path / "attacker.pub"
    attacker_pub.write_bytes(openssh_public_key(ec.generate_private_key(ec.SECP384R1())))

    with LocalFederation(tmp_path / "procs", sites, keys=layout.keys, fleet_proxy=True) as fed:
        # The SuperLink (Control, Fleet and Runtime APIs on one port) listens on loopback only.
        assert listening_hosts(fed.superlink_port) == {"0100007F"}  # 127.0.0.1
        assert listening_hosts(fed.proxy_port)
        # Its state is in memory: no database of messages in transit (adapters) is written to disk.
        assert not list(fed.workdir.rglob("*.db*")), "the local federation's SuperLink wrote a database"

        run_id = fed.submit({"silo-config": str(layout.federation_config), "run-dir": str(layout.run_dir)})

        # The attacker: the address sites use, the site's CA certificate (its SuperNode key changes nothing:
        # the Control API never asks for one).
        ca = kit / "ca.pem"
        attacker = FlowerConnection(
            tmp_path / "attacker", fed.fleet_address, insecure=False, root_certificates=kit / "ca.pem"
        )
        attacks = {
            "run": ("run", str(APP_DIR), "silo", "--format", "json"),
            "ls": ("ls", "--format", "json"),
            "stop": ("stop", str(run_id), "--format", "json"),
            "register": ("supernode", "register", str(attacker_pub), "silo", "--format", "json"),
        }
        with ThreadPoolExecutor(max_workers=len(attacks)) as pool:
            outcomes = dict(
                zip(attacks, pool.map(lambda a: attacker.flwr(*a, timeout=120), attacks.values()), strict=True)
            )
        for name, out in outcomes.items():
            assert "/v1/control/" in _refused(out), name

        # An operator who points `silo federation run` at the proxy is told where the Control API is.
        argv = [sys.executable, "-m", "silo", "federation", "run", "--config", str(layout.federation_config)]
        argv += ["--run-dir", str(tmp_path / "wrong-run"), "--superlink", fed.fleet_address]
        argv += ["--root-certificates", str(ca)]
        out = subprocess.run(argv, capture_output=True, text=True, env=attacker.env, timeout=180, check=False)
        assert out.returncode == 8 and out.stderr.strip().splitlines() == [
            f"silo federation: error: {fed.fleet_address} refused the Control API (403): that is the Fleet proxy sites "
            "use; give the SuperLink's loopback address on the coordinator host (127.0.0.1:9093), through an SSH "
            "tunnel from elsewhere"
        ], out.stderr
        assert not (tmp_path / "wrong-run").exists()

        # The same commands work from the coordinator's loopback: the refusals above are the proxy's doing.
        operator_runs = json.loads(fed.connection.flwr("ls", "--format", "json", timeout=120).stdout)["runs"]
        assert [int(r["run-id"]) for r in operator_runs] == [run_id]  # the attacker's `flwr run` made no run
        nodes = json.loads(fed.connection.flwr("supernode", "list", "--format", "json", timeout=120).stdout)["nodes"]
        assert len(nodes) == 1, nodes  # the attacker's key was not registered

        # Raw requests: only POSTs to the Fleet paths are forwarded; nothing is decoded into another path.
        refused = [
            ("POST", "/v1/control/list-runs"),
            ("POST", "/v1/control/start-run"),
            ("POST", "/v1/control/register-node"),
            ("POST", "/v1/runtime/get-nodes"),
            ("GET", "/health"),
            ("GET", "/docs"),
            ("GET", "/openapi.json"),
            ("GET", "/v1/fleet/get-run"),
            ("POST", "/v1/fleet/../control/list-runs"),
            ("POST", "/v1/fleet/%2e%2e/control/list-runs"),
            ("POST", "/v1/fleet/get-run/../../control/list-runs"),
            ("POST", "/v1/fleet//get-run"),
            ("POST", "/v1/fleet/get-run?x=/v1/control/list-runs"),
            ("POST", "/v1/FLEET/get-run"),
        ]
        assert {f"{m} {p}": _raw(fed.fleet_address, ca, m, p) for m, p in refused} == {
            f"{m} {p}": 403 for m, p in refused
        }
        # A Fleet call does reach the SuperLink, which turns an empty, unsigned body away itself.
        assert _raw(fed.fleet_address, ca, "POST", "/v1/fleet/get-run") not in (403, 200)

        # The registered site trains the round through the proxy, and the stop above did not stop it.
        manifest = follow_run(fed.connection, run_id, layout.run_dir, timeout=600, log=sys.stderr)
        proxy_log = fed.proc("proxy").log.read_text()

    assert manifest["status"] == "completed"
    assert [s["site_id"] for s in manifest["rounds"][-1]["sites"]] == ["site-0"]
    assert 'POST /v1/fleet/push-messages HTTP/1.1" 200' in proxy_log
    assert f"--superlink {fed.fleet_address}" in " ".join(fed.proc("site-0").popen.args)  # type: ignore[arg-type]
