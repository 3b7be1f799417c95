"""The site's Flower handlers, called as the ClientApp process calls them: the privacy invariants a
site operator relies on — never past the budget, nothing unscrubbed trained on, nothing raw sent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from client.ledger import verify_ledger
from client.site import handle_train
from common.adapter import adapter_state, hash_state, state_to_arrays
from common.config import LoraSettings, TaskConfig
from common.errors import BudgetExhausted
from common.keys import load_public_key
from common.model import load_lora_model
from silo.demo import DemoLayout, write_site
from silo.synthetic import make_clinical_notes

RECORDS = 40


@pytest.fixture(autouse=True)
def _task_identity() -> None:
    # Set by Flower in a real ClientApp process; replies read it.
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 7, 1


def _site(tmp_path: Path, base_model_dir: Path, privacy: str) -> tuple[Path, list]:
    layout = DemoLayout(tmp_path)
    notes = make_clinical_notes(RECORDS, seed=5)
    cfg = write_site(layout, "hosp", [{"text": r.text} for r in notes], base_model=str(base_model_dir), rounds=2)
    text = cfg.read_text()
    text = text[: text.index("[privacy]")] + privacy  # replace the demo's privacy section
    text = text.replace(
        'target_modules = ["q_proj", "k_proj", "v_proj", "o_proj", "lm_head"]', 'target_modules = ["q_proj", "v_proj"]'
    )
    cfg.write_text(text)
    return cfg, notes


def _train_message(base_model_dir: Path, rnd: int) -> Message:
    model = load_lora_model(str(base_model_dir), LoraSettings(target_modules=("q_proj", "v_proj")), TaskConfig())
    content = RecordDict(
        {
            "arrays": state_to_arrays(adapter_state(model)),
            "config": ConfigRecord({"server-round": rnd, "run-id": "run-test"}),
        }
    )
    return Message(content, dst_node_id=7, message_type=MessageType.TRAIN)


def _context(cfg: Path) -> Context:
    return Context(run_id=1, node_id=7, node_config={"site-config": str(cfg)}, state=RecordDict(), run_config={})


def _ledger_entries(cfg: Path) -> list[dict]:
    path = cfg.parent / "state" / "privacy_ledger.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


PRIVACY = "[privacy]\nmax_grad_norm = 1.0\nnoise_multiplier = {sigma}\nbudget_epsilon = {budget}\nbudget_delta = 1e-5\n"


def test_handle_train_refuses_a_round_past_the_budget_and_sends_nothing(tmp_path: Path, base_model_dir: Path) -> None:
    cfg, _ = _site(tmp_path, base_model_dir, PRIVACY.format(sigma=0.5, budget=0.5))
    reply = handle_train(_train_message(base_model_dir, 1), _context(cfg))

    assert reply.has_error()
    assert BudgetExhausted.__name__ in reply.error.reason
    assert reply.error.code == 1000 + BudgetExhausted.exit_code
    # Refused before training: nothing reserved, nothing recorded.
    assert [e for e in _ledger_entries(cfg) if e.get("kind") in ("reserve", "round")] == []


def test_handle_train_records_the_sent_update_then_refuses_when_spent(tmp_path: Path, base_model_dir: Path) -> None:
    # sigma 1.0 on ~32 records in batches of 16 (q = 0.5, 2 steps): one round spends ~5.2 epsilon, two exceed 6.
    cfg, _ = _site(tmp_path, base_model_dir, PRIVACY.format(sigma=1.0, budget=6.0))
    first = handle_train(_train_message(base_model_dir, 1), _context(cfg))
    assert not first.has_error(), first.error.reason if first.has_error() else ""

    sent = {k: v for k, v in ArrayRecord.to_torch_state_dict(first.content["arrays"]).items()}
    rounds = [e for e in _ledger_entries(cfg) if e.get("kind") == "round"]
    assert len(rounds) == 1
    assert rounds[0]["update_sha256"] == hash_state(sent)  # the ledger names exactly what left the site
    result = verify_ledger(
        cfg.parent / "state" / "privacy_ledger.jsonl", load_public_key(cfg.parent / "state" / "site_signing.pub")
    )
    assert result.ok, result.reason

    second = handle_train(_train_message(base_model_dir, 2), _context(cfg))
    assert second.has_error() and BudgetExhausted.__name__ in second.error.reason
    assert len([e for e in _ledger_entries(cfg) if e.get("kind") == "round"]) == 1


def test_handle_train_reply_carries_no_raw_identifier(tmp_path: Path, base_model_dir: Path) -> None:
    cfg, notes = _site(tmp_path, base_model_dir, PRIVACY.format(sigma=1.0, budget=10.0))
    reply = handle_train(_train_message(base_model_dir, 1), _context(cfg))
    assert not reply.has_error()

    declared = json.dumps({k: dict(v) for k, v in reply.content.items() if not isinstance(v, ArrayRecord)}, default=str)
    planted = {s.entity_value for r in notes for s in r.spans if len(s.entity_value) >= 6}
    assert planted, "the synthetic notes must carry identifiers for this test to mean anything"
    assert [v for v in planted if v in declared] == []
    assert set(reply.content["arrays"].keys()) == set(
        adapter_state(
            load_lora_model(str(base_model_dir), LoraSettings(target_modules=("q_proj", "v_proj")), TaskConfig())
        ).keys()
    )


def test_handle_train_when_scrubbing_fails_trains_and_sends_nothing(tmp_path: Path, base_model_dir: Path) -> None:
    # The site names an NER model it does not have: the scrubber cannot be built.
    cfg, _ = _site(tmp_path, base_model_dir, PRIVACY.format(sigma=1.0, budget=10.0))
    cfg.write_text(cfg.read_text() + '\n[scrub]\nner_model = "/nonexistent/ner-model"\n')
    reply = handle_train(_train_message(base_model_dir, 1), _context(cfg))

    assert reply.has_error()
    assert "ScrubFailed" in reply.error.reason or "ConfigError" in reply.error.reason
    assert not reply.has_content()
    assert [e for e in _ledger_entries(cfg) if e.get("kind") in ("reserve", "round")] == []
