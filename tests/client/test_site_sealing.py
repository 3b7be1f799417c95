"""The site seals its update so the coordinator's gate opens it; when signing fails, nothing is sent."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from client import replies
from client.site import handle_train
from common.adapter import arrays_to_state, state_to_numpy
from common.config import SecuritySection
from common.errors import UpdateRejected
from server.gate import RoundGate, collect_updates
from server.verify import UpdateVerifier, load_registry, write_registry

pytestmark = pytest.mark.usefixtures("flower_task")


def test_handle_train_reply_opens_at_the_coordinators_gate(
    tmp_path: Path, make_site, train_message, site_context
) -> None:
    cfg, _ = make_site(sigma=1.0, budget=10.0)
    msg = train_message(1)
    reply = handle_train(msg, site_context(cfg))
    assert not reply.has_error(), reply.error.reason if reply.has_error() else ""

    registry = load_registry(write_registry(tmp_path / "r.json", {"hosp": cfg.parent / "state" / "site_signing.pub"}))
    global_arrays = state_to_numpy(arrays_to_state(msg.content["arrays"]))
    gate = RoundGate(UpdateVerifier(registry), SecuritySection(), "run-test", 1, global_arrays)
    received = SimpleNamespace(content=reply.content, metadata=SimpleNamespace(src_node_id=7), has_error=lambda: False)

    accepted, rejected = collect_updates([received], gate)

    assert rejected == []
    assert accepted[0].site_id == "hosp" and accepted[0].entry.signing_key_fingerprint


def test_handle_train_when_signing_fails_sends_nothing(monkeypatch, make_site, train_message, site_context) -> None:
    cfg, _ = make_site(sigma=1.0, budget=10.0)

    def broken(*_args, **_kwargs):
        raise ValueError("HSM unavailable")

    monkeypatch.setattr(replies, "seal_update", broken)
    reply = handle_train(train_message(1), site_context(cfg))

    assert reply.has_error()
    assert reply.error.reason.startswith(UpdateRejected.__name__) and "could not seal" in reply.error.reason
    assert reply.error.code == 1000 + UpdateRejected.exit_code and "HSM" not in reply.error.reason  # text stays local
    assert reply.error.code == 1000 + UpdateRejected.exit_code
