"""The site's round-0 handshake (client/handshake.py): it agrees only to runs on its own base model.

Attacker's test: the coordinator's run pins one base model, the site holds another (different weights,
same architecture, same file names). The site refuses, says why, and its state directory (ledger,
its head, its keys) is byte for byte what it was: nothing trained, nothing spent."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from safetensors.torch import load_file, save_file

from client.handshake import ACCEPTED, handle_handshake
from client.site_state import site_signing_key
from common.config import (
    DataConfig,
    LoraSettings,
    ModelConfig,
    PrivacyConfig,
    SiteConfig,
    SiteSection,
    TaskConfig,
    TrainingConfig,
    load_site_config,
)
from common.errors import RunRefused
from common.keys import generate_signing_key
from common.model_pin import model_fingerprint
from common.run_request import HANDSHAKE_MESSAGE_TYPE, RECORD, make_run_request

COORDINATOR = generate_signing_key()


@pytest.fixture(autouse=True)
def _task_identity() -> None:
    """The task Flower's executor binds before a handler runs (replies are stamped with it)."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 5, 7, 1


def _site(tmp_path: Path, model: Path) -> Path:
    config = SiteConfig(
        site=SiteSection(id="s-a"),
        data=DataConfig(),
        task=TaskConfig(),
        model=ModelConfig(base=str(model)),
        lora=LoraSettings(),
        training=TrainingConfig(),
        privacy=PrivacyConfig(noise_multiplier=1.0, max_grad_norm=1.0, budget_epsilon=10.0, budget_delta=1e-5),
    )
    path = tmp_path / "site.toml"
    path.write_text(config.to_toml())
    site_signing_key(load_site_config(path))  # the site's key and its (empty) ledger, as a site has them
    return path


def _handshake(site_toml: Path, pinned: str | None) -> Message:
    signed = make_run_request(
        COORDINATOR,
        run_id="run-1",
        config_hash="c" * 64,
        app_sha256="a" * 64,
        rounds=2,
        sites=["s-a"],
        base_model_sha256=pinned,
    )
    msg = Message(
        RecordDict({RECORD: ConfigRecord(signed.record())}), dst_node_id=7, message_type=HANDSHAKE_MESSAGE_TYPE
    )
    context = Context(
        run_id=5, node_id=7, node_config={"site-config": str(site_toml)}, state=RecordDict(), run_config={}
    )
    return handle_handshake(msg, context)


def _state(site_toml: Path) -> dict[str, bytes]:
    state = load_site_config(site_toml).state_dir
    return {str(p.relative_to(state)): p.read_bytes() for p in sorted(state.rglob("*")) if p.is_file()}


def _other_model(base_model_dir: Path, out: Path) -> Path:
    """The same architecture and files, one weight changed: what a site holding another checkpoint has."""
    shutil.copytree(base_model_dir, out)
    weights = next(out.glob("*.safetensors"))
    tensors = load_file(str(weights))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + torch.finfo(tensors[name].dtype).eps * 4
    save_file(tensors, str(weights), metadata={"format": "pt"})
    return out


def test_handshake_site_on_the_pinned_base_model_agrees(tmp_path: Path, base_model_dir: Path) -> None:
    site = _site(tmp_path, base_model_dir)
    reply = _handshake(site, model_fingerprint(base_model_dir))
    assert not reply.has_error()
    assert reply.content.config_records["site"]["handshake"] == ACCEPTED


def test_handshake_site_on_another_base_model_refuses_with_nothing_spent(tmp_path: Path, base_model_dir: Path) -> None:
    other = _other_model(base_model_dir, tmp_path / "other-model")
    site = _site(tmp_path, other)
    before = _state(site)
    assert "privacy_ledger.jsonl" in before

    reply = _handshake(site, model_fingerprint(base_model_dir))

    assert reply.has_error()
    assert reply.error.code == 1000 + RunRefused.exit_code
    assert "base model mismatch" in reply.error.reason
    assert model_fingerprint(other)[:16] in reply.error.reason  # the coordinator's operator sees both pins
    assert not reply.has_content()
    assert _state(site) == before  # ledger, head and keys untouched


def test_handshake_request_without_a_pin_is_answered(tmp_path: Path, base_model_dir: Path) -> None:
    """A coordinator that predates the pin: the site has nothing to compare and answers as before."""
    reply = _handshake(_site(tmp_path, base_model_dir), None)
    assert not reply.has_error()
