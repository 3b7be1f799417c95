"""What code a site executes, and which runs it spends budget on, with real processes.

Two sites pinned to the sha256 of the approved app bundle run behind Silo's executor (SuperNode with
`--isolation process`). Against that federation:
- a hostile bundle (`flwr build` of a modified copy of the app whose ClientApp reads the records
  directory and the signing key, and leaves a canary file when any of its code runs) is refused at
  both sites: the canary never appears and no ledger changes;
- a run whose request is signed with another key, or unsigned, spends nothing;
- a stale key registry at the coordinator is caught in the round-0 handshake, before anyone trains;
- the approved bundle runs a round normally.
The module's first test pins the Flower internals the executor relies on (client/runtime/flower_io.py).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import flwr
import httpx
import pytest

from client.runtime import flower_io
from common.config import load_site_config
from common.keys import generate_signing_key, save_private_key
from common.pki import COORDINATOR_SIGNING_KEY
from silo.demo import DemoLayout, write_federation
from silo.flower_connection import APP_DIR
from silo.flower_processes import BIN
from silo.keygen import add_sites
from silo.local_federation import LocalFederation
from silo.run_progress import follow_run
from tests.integration.conftest import make_layout

# The files `flwr build` bundles (pyproject's `fab-include`): what a copy of the app needs.
APP_FILES = ("pyproject.toml", "client", "server", "common")


def test_flower_internals_the_executor_uses_are_the_pinned_ones():
    """Fails loudly when the installed Flower is not the one client/runtime/flower_io.py was written for."""
    from flwr.common.constant import ISOLATION_MODE_PROCESS
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.constant import TaskType
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supernode.runtime import run_clientapp

    assert flwr.__version__ == flower_io.FLWR_VERSION == "1.41.0"
    flower_io.check_flower_version()
    assert ISOLATION_MODE_PROCESS == "process" and TaskType.CLIENT_APP == "flwr-clientapp"
    assert "supported_task_types" in AcquireTaskRequest.DESCRIPTOR.fields_by_name
    from flwr.supercore.superexec.run_superexec import _SUPEREXEC_AUTH_METHODS

    assert {flower_io.ACQUIRE_TASK_METHOD} == _SUPEREXEC_AUTH_METHODS
    for name in ("AcquireTask", "SendTaskHeartbeat", "PullTaskInput", "PullMessages", "PushMessages"):
        assert callable(getattr(RuntimeHttpClient, name)), name
    assert list(inspect.signature(run_clientapp.pull_task_input).parameters) == ["client"]
    assert list(inspect.signature(run_clientapp.push_message).parameters) == ["client", "message", "context"]
    assert list(inspect.signature(run_clientapp.push_task_output).parameters) == [
        "client",
        "context",
        "sub_status",
        "details",
    ]
    # The SuperNode's loop sleeps through the `time` module it imported: what `run_supernode` caps.
    from flwr.supernode import start_client_internal
    from flwr.supernode.cli import flower_supernode

    source = inspect.getsource(start_client_internal)
    assert start_client_internal.time is __import__("time") and "time.sleep(3)" in source
    # ... and calls its message pull by the module's name each time: what `run_supernode` wraps to ring the runtime.
    assert callable(start_client_internal._pull_and_store_message)
    assert "run_id = _pull_and_store_message(" in source
    assert callable(flower_supernode)
    # The SuperNode still offers the isolation mode in which it starts no app process.
    out = subprocess.run([str(BIN / "flower-supernode"), "--help"], capture_output=True, text=True, check=True)
    assert "--isolation" in out.stdout and "process" in out.stdout


def test_flower_version_check_refuses_another_release(monkeypatch):
    monkeypatch.setattr(flwr, "__version__", "1.42.0")
    with pytest.raises(RuntimeError, match="1.41.0"):
        flower_io.check_flower_version()


# ---- real processes -------------------------------------------------------------------------------


def copy_app(dst: Path) -> Path:
    """The app's bundled files, copied (so a neighbour editing the checkout cannot change the hash)."""
    dst.mkdir(parents=True)
    for name in APP_FILES:
        src = APP_DIR / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, dst / name)
    return dst


def build(app: Path, out: Path) -> str:
    """`flwr build` the app; the sha256 of the .fab it wrote (what `flwr run` of that directory sends)."""
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(BIN / "flwr"), "build", "--app", str(app)], cwd=out, check=True, capture_output=True)
    (fab,) = out.glob("*.fab")
    return hashlib.sha256(fab.read_bytes()).hexdigest()


HOSTILE = """

# ---- hostile additions: read what a site holds, and leave a canary if any of this ever runs ----
import pathlib as _pathlib

_CANARY = _pathlib.Path({canary!r})
_CANARY.write_text("hostile bundle imported at a site\\n")


def _steal(context):
    from common.config import load_site_config

    cfg = load_site_config(context.node_config["site-config"])
    loot = [p.read_text()[:200] for p in cfg.data_dir.glob("*")]
    loot.append((cfg.state_dir / "site_signing.key").read_text())
    _CANARY.write_text("\\n".join(loot))


for _name, _handler in list(app._registered_funcs.items()):
    def _hostile(msg, context, _handler=_handler):
        _steal(context)
        return _handler(msg, context)

    app._registered_funcs[_name] = _hostile
"""


def ledger_state(layout, site_ids) -> dict[str, bytes]:
    """Each site's ledger and its head, byte for byte (absent files too)."""
    out = {}
    for site in site_ids:
        state = layout.site_dir(site) / "state"
        for name in ("privacy_ledger.jsonl", "privacy_ledger.jsonl.head"):
            path = state / name
            out[f"{site}/{name}"] = path.read_bytes() if path.exists() else b"<absent>"
    return out


def pin_app(site_toml: Path, sha256: str) -> None:
    cfg = load_site_config(str(site_toml))
    site_toml.write_text(replace(cfg, site=replace(cfg.site, app=f"sha256:{sha256}")).to_toml(defaults=True))


@pytest.fixture(scope="module")
def pinned(tmp_path_factory, base_model_dir):
    """Two sites pinned to the approved bundle's sha256, behind Silo's executor, until the module ends."""
    root = tmp_path_factory.mktemp("executor")
    layout, sites = make_layout(root, base_model_dir, rounds=1, sites=2)
    approved = copy_app(root / "approved")
    approved_sha = build(approved, root / "approved-fab")
    for site in sites:
        pin_app(site, approved_sha)
    with LocalFederation(root / "procs", sites, keys=layout.keys) as fed:
        yield {"root": root, "layout": layout, "fed": fed, "approved": approved, "approved_sha": approved_sha}


def _submit(fed: LocalFederation, app: Path, fed_toml: Path, run_dir: Path) -> dict:
    run_id = fed.connection.submit({"silo-config": str(fed_toml), "run-dir": str(run_dir)}, app_dir=app)
    status = fed.wait(run_id, timeout=600)
    manifest = run_dir / "manifest.json"
    return {
        "run_id": run_id,
        "status": status,
        "manifest": json.loads(manifest.read_text()) if manifest.exists() else {},
    }


def _site_logs(fed: LocalFederation) -> str:
    return "".join(p.log.read_text(errors="replace") for p in fed.procs if p.name.startswith("site-"))


def _federation(tmp: Path, base_model: Path, registry: Path) -> Path:
    """A federation TOML like the layout's, naming `registry` (and so the signing key beside it)."""
    layout = DemoLayout(tmp)
    return write_federation(layout, base_model=str(base_model), rounds=1, min_sites=2, timeout_s=180, registry=registry)


def _trained(fed: LocalFederation) -> int:
    return _site_logs(fed).count("Receiving: train message")


@pytest.mark.integration
@pytest.mark.parametrize("secret", [None, b"a guess"])
def test_another_local_process_cannot_claim_a_sites_tasks(pinned, secret):
    """Only the executor holds the secret its SuperNode checks task claims against (a 0600 file)."""
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.runtime import RuntimeHttpClient

    fed = pinned["fed"]
    address = f"127.0.0.1:{fed.site_ports[0]}"
    if secret is None:  # no HMAC at all
        thief = RuntimeHttpClient.from_server_address(
            server_address=address, insecure=True, root_certificates=None, interceptors=[]
        )

        def claim() -> object:
            return thief.AcquireTask(AcquireTaskRequest(supported_task_types=["flwr-clientapp"]))
    else:  # an HMAC under the wrong secret
        claim = flower_io.RuntimeLink(address, secret).acquire
    deadline = time.monotonic() + 120
    while True:  # the site's SuperNode may still be starting
        try:
            claim()
        except httpx.TransportError:
            assert time.monotonic() < deadline, "the site's Runtime API never came up"
            time.sleep(0.5)
            continue
        except httpx.HTTPStatusError as err:
            refused = err
            break
        pytest.fail("a task claim without the node's secret was accepted")
    assert refused.response.status_code == 401
    assert fed.proc("site-0").alive()


@pytest.mark.integration
def test_hostile_bundle_is_refused_at_the_site_and_reads_nothing(pinned):
    root, layout, fed = pinned["root"], pinned["layout"], pinned["fed"]
    canary = root / "canary.txt"
    hostile = copy_app(root / "hostile")
    app_py = hostile / "client" / "app.py"
    app_py.write_text(app_py.read_text() + HOSTILE.format(canary=str(canary)))
    hostile_sha = build(hostile, root / "hostile-fab")
    assert hostile_sha != pinned["approved_sha"]
    before = ledger_state(layout, fed.site_ids)

    result = _submit(fed, hostile, layout.federation_config, root / "run-hostile")

    assert result["status"]["status"] == "finished:failed"
    assert "handshake" in result["manifest"].get("failure", "")
    assert not canary.exists(), canary.read_text()
    assert ledger_state(layout, fed.site_ids) == before
    logs = _site_logs(fed)
    assert logs.count(f"refused run {result['run_id']}, app sha256 {hostile_sha}") >= 2  # both sites
    # The stolen values never show up anywhere at the coordinator either.
    key = (layout.keys / "sites" / "site-0" / "site_signing.key").read_text()
    assert key.splitlines()[1] not in json.dumps(result["manifest"])


@pytest.mark.integration
@pytest.mark.parametrize("signer", ["another key", "no key"])
def test_run_with_a_forged_or_unsigned_request_spends_nothing(pinned, tmp_path, base_model_dir, signer):
    layout, fed = pinned["layout"], pinned["fed"]
    # The coordinator's TOML names a registry whose directory holds another key, or none at all.
    elsewhere = tmp_path / "coordinator"
    elsewhere.mkdir()
    shutil.copy(layout.registry, elsewhere / "registry.json")
    if signer == "another key":
        save_private_key(generate_signing_key(), elsewhere / COORDINATOR_SIGNING_KEY)
    fed_toml = _federation(tmp_path, base_model_dir, elsewhere / "registry.json")
    before, trained = ledger_state(layout, fed.site_ids), _trained(fed)

    result = _submit(fed, pinned["approved"], fed_toml, tmp_path / "run")

    assert result["status"]["status"] == "finished:failed"
    failure = result["manifest"]["failure"]
    assert "round 0 handshake: 0 site(s) agreed" in failure
    assert ("does not verify" if signer == "another key" else "unsigned") in failure
    assert ledger_state(layout, fed.site_ids) == before
    assert _trained(fed) == trained


@pytest.mark.integration
def test_stale_registry_is_caught_in_the_handshake_before_anyone_trains(pinned, tmp_path, base_model_dir):
    layout, fed = pinned["layout"], pinned["fed"]
    # A registry from an older key directory: same site ids, other signing keys.
    stale = tmp_path / "old-keys"
    shutil.copytree(layout.keys / "coordinator", stale / "coordinator")
    (stale / "coordinator" / "registry.json").write_text('{"sites": {}}\n')
    shutil.rmtree(stale / "coordinator" / "supernodes")
    add_sites(stale, fed.site_ids)
    fed_toml = _federation(tmp_path, base_model_dir, stale / "coordinator" / "registry.json")
    before, trained = ledger_state(layout, fed.site_ids), _trained(fed)

    result = _submit(fed, pinned["approved"], fed_toml, tmp_path / "run")

    failure = result["manifest"]["failure"]
    assert "round 0 handshake: 0 site(s) agreed" in failure and "bad signature" in failure
    assert ledger_state(layout, fed.site_ids) == before
    assert _trained(fed) == trained


@pytest.mark.integration
@pytest.mark.slow  # every integration test runs the approved app through the executor; this one pins its sha256
def test_the_approved_bundle_runs_a_round(pinned, tmp_path):
    layout, fed = pinned["layout"], pinned["fed"]
    before = ledger_state(layout, fed.site_ids)
    run_id = fed.connection.submit(
        {"silo-config": str(layout.federation_config), "run-dir": str(tmp_path / "run")}, app_dir=pinned["approved"]
    )
    manifest = follow_run(fed.connection, run_id, tmp_path / "run", timeout=600, log=sys.stderr)

    assert manifest["status"] == "completed" and manifest["completed_rounds"] == 1
    round1 = next(r for r in manifest["rounds"] if r["round"] == 1)
    assert {s["site_id"] for s in round1["sites"]} == {"site-0", "site-1"}
    after = ledger_state(layout, fed.site_ids)
    assert all(after[k] != before[k] for k in before if k.endswith("privacy_ledger.jsonl"))
