"""The site executor's gate (client/runtime/): which app bundles and which runs a site agrees to.

Real zips, real Flower messages, real keys; the installed app is replaced by a recorder only to see
whether the gate let a message through to it."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from client.runtime.app_pin import AppPin, identify, installed_version
from client.runtime.flower_io import TaskInput
from client.runtime.site_runtime import SiteRuntime
from common.errors import ConfigError, RunRefused
from common.keys import generate_signing_key, save_public_key
from common.run_request import HANDSHAKE_MESSAGE_TYPE, RECORD, make_run_request


def fab(publisher: str = "silo", name: str = "silo", version: str | None = None, extra: bytes = b"") -> bytes:
    """A real zip with a Flower app's pyproject.toml (and, optionally, code that must never run)."""
    manifest = f'[project]\nname = "{name}"\nversion = "{version or installed_version()}"\n\n'
    manifest += f'[tool.flwr.app]\npublisher = "{publisher}"\n'
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("pyproject.toml", manifest)
        zf.writestr("client/app.py", b"raise SystemExit('bundle code ran')\n" + extra)
    return buf.getvalue()


@pytest.fixture(autouse=True)
def _task_identity() -> None:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 5, 7, 1


@pytest.fixture
def coordinator(tmp_path: Path):
    key = generate_signing_key()
    save_public_key(key, tmp_path / "coordinator_signing.pub")
    return key


@pytest.fixture
def runtime(tmp_path: Path, write_site_toml):
    """`runtime(app="", key=True)`: a SiteRuntime whose installed app only records what reaches it."""

    def make(*, app: str = "", key: bool = True) -> SiteRuntime:
        rt = SiteRuntime(write_site_toml(app), tmp_path / "coordinator_signing.pub" if key else None)
        rt.calls = []  # type: ignore[attr-defined]

        def installed(msg: Message, context: Context) -> Message:
            rt.calls.append(msg.metadata.message_type)  # type: ignore[attr-defined]
            return Message(RecordDict(), reply_to=msg)

        rt._app = installed
        return rt

    return make


def task(bundle: bytes, message_type: str = MessageType.TRAIN, request=None, config=None) -> TaskInput:
    content = RecordDict({"config": ConfigRecord(config or {"server-round": 1, "run-id": "run-1"})})
    if request is not None:
        content[RECORD] = ConfigRecord(request.record())
    msg = Message(content, dst_node_id=7, message_type=message_type)
    context = Context(run_id=5, node_id=7, node_config={}, state=RecordDict(), run_config={})
    return TaskInput(msg, context, 5, hashlib.sha256(bundle).hexdigest(), "silo/silo", "x", bundle)


def request_for(bundle: bytes, key, **over):
    fields = {"run_id": "run-1", "config_hash": "c" * 64, "rounds": 2, "sites": ["s-a"]}
    return make_run_request(key, app_sha256=hashlib.sha256(bundle).hexdigest(), **{**fields, **over})


def test_app_pin_identify_reads_the_bundles_declaration_without_running_it():
    app = identify(fab(version="9.9"))
    assert (app.publisher, app.name, app.version) == ("silo", "silo", "9.9")
    assert identify(b"not a zip").name == "?"


@pytest.mark.parametrize("bundle", [fab(version="0.0.1-evil"), fab(publisher="mallory"), fab(name="silo-fork")])
def test_app_pin_installed_refuses_a_bundle_declaring_anything_else(bundle):
    with pytest.raises(RunRefused, match="does not declare the Silo installed here"):
        AppPin().check(identify(bundle))
    AppPin().check(identify(fab()))


def test_app_pin_sha256_accepts_exactly_that_bundle():
    approved = fab()
    pin = AppPin(f"sha256:{hashlib.sha256(approved).hexdigest()}")
    pin.check(identify(approved))
    with pytest.raises(RunRefused, match="not the app this site pinned"):
        pin.check(identify(fab(extra=b"# one more byte")))  # same declaration, other code


def test_site_app_setting_is_validated_at_load(runtime):
    with pytest.raises(ConfigError, match="site.app"):
        runtime(app='app = "sha256:abc"')


def test_site_runtime_refuses_an_unapproved_bundle_before_the_app_runs(runtime, coordinator, caplog):
    rt = runtime()
    evil = fab(version="6.6.6")
    outcome = rt.handle(task(evil, request=request_for(evil, coordinator)))
    assert rt.calls == [] and not outcome.ok
    assert outcome.reply.has_error() and outcome.reply.error.code == 1000 + RunRefused.exit_code
    line = next(r.getMessage() for r in caplog.records if "refused run" in r.getMessage())
    assert "refused run 5" in line and hashlib.sha256(evil).hexdigest() in line


def test_site_runtime_refuses_a_bundle_whose_bytes_do_not_match_its_hash(runtime, coordinator):
    rt = runtime()
    bundle = fab()
    t = task(bundle, request=request_for(bundle, coordinator))
    t.fab_hash = "0" * 64
    assert not rt.handle(t).ok and rt.calls == []


@pytest.mark.parametrize(
    ("why", "make"),
    [
        ("no request", lambda b, k: None),
        ("unsigned", lambda b, k: request_for(b, None)),
        ("forged", lambda b, k: request_for(b, generate_signing_key())),
        ("other app", lambda b, k: request_for(fab(version="1.0"), k)),
        ("other site", lambda b, k: request_for(b, k, sites=["s-b"])),
        ("other run", lambda b, k: request_for(b, k, run_id="run-9")),
        ("past its rounds", lambda b, k: request_for(b, k, rounds=0)),
    ],
)
def test_site_runtime_trains_only_for_the_coordinators_signed_request(runtime, coordinator, why, make):
    rt = runtime()
    bundle = fab()
    outcome = rt.handle(task(bundle, request=make(bundle, coordinator)))
    assert rt.calls == [], why
    assert outcome.reply.has_error() and outcome.reply.error.code == 1000 + RunRefused.exit_code


def test_site_runtime_passes_an_agreed_message_to_the_installed_app(runtime, coordinator):
    rt = runtime()
    bundle = fab()
    agreed = request_for(bundle, coordinator)
    assert rt.handle(task(bundle, request=agreed)).ok
    assert rt.handle(task(bundle, MessageType.EVALUATE, agreed, {"server-round": 0})).ok
    assert rt.handle(task(bundle, HANDSHAKE_MESSAGE_TYPE, agreed, {})).ok
    assert rt.calls == [MessageType.TRAIN, MessageType.EVALUATE, HANDSHAKE_MESSAGE_TYPE]


def test_site_runtime_gives_the_app_the_sites_own_config(runtime, tmp_path, coordinator):
    rt = runtime()
    bundle = fab()
    t = task(bundle, request=request_for(bundle, coordinator))
    t.context.node_config["site-config"] = "/elsewhere/site.toml"
    rt.handle(t)
    assert t.context.node_config["site-config"] == str((tmp_path / "site.toml").resolve())


def test_site_runtime_without_a_coordinator_key_accepts_unsigned_requests(runtime):
    rt = runtime(key=False)
    bundle = fab()
    assert rt.handle(task(bundle, request=request_for(bundle, None))).ok
    assert not rt.handle(task(bundle)).ok  # still needs a request for this app, site, run and round


def test_site_runtime_an_app_failure_sends_its_type_never_its_text(runtime, coordinator):
    rt = runtime()

    def leaky(msg: Message, context: Context) -> Message:
        raise ValueError("Jane Doe, MRN 12345")

    rt._app = leaky
    bundle = fab()
    outcome = rt.handle(task(bundle, request=request_for(bundle, coordinator)))
    assert not outcome.ok and "ValueError" in outcome.reply.error.reason
    assert "Jane" not in outcome.reply.error.reason and "12345" not in outcome.reply.error.reason


def test_site_runtime_answers_a_handshake_that_does_not_name_it_but_trains_for_none(runtime, coordinator):
    """Its signed answer lets the coordinator name the reason (its registry); rounds stay refused."""
    rt = runtime()
    bundle = fab()
    other = request_for(bundle, coordinator, sites=["s-b"])
    assert rt.handle(task(bundle, HANDSHAKE_MESSAGE_TYPE, other, {})).ok
    assert not rt.handle(task(bundle, request=other)).ok
    assert rt.calls == [HANDSHAKE_MESSAGE_TYPE]


def test_site_runtime_refuses_any_other_message_without_the_signed_request(runtime, coordinator):
    rt = runtime()
    bundle = fab()
    assert not rt.handle(task(bundle, "query.secagg", None, {})).ok
    assert not rt.handle(task(bundle, "query.secagg", request_for(bundle, generate_signing_key()), {})).ok
    assert rt.handle(task(bundle, "query.secagg", request_for(bundle, coordinator), {})).ok
    assert rt.calls == ["query.secagg"]
