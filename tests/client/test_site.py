"""The site's Flower handlers, called as the ClientApp process calls them: the privacy invariants a
site operator relies on — never past the budget, nothing unscrubbed trained on, nothing raw sent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from client.ledger import verify_ledger
from client.site import handle_evaluate, handle_train
from common.adapter import adapter_state, hash_state, state_to_arrays
from common.config import LoraSettings, TaskConfig
from common.errors import BudgetExhausted, LedgerError
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


def _evaluate_message(base_model_dir: Path) -> Message:
    message = _train_message(base_model_dir, 1)
    return Message(message.content, dst_node_id=7, message_type=MessageType.EVALUATE)


def test_two_rounds_with_identical_inputs_send_different_updates(tmp_path: Path, base_model_dir: Path) -> None:
    """Same site, same config (same seeds), same global adapter: fresh DP noise makes the updates differ.
    Two sites built from identical configurations (two federations) differ too."""
    hashes = []
    for name in ("first", "second"):
        cfg, _ = _site(tmp_path / name, base_model_dir, PRIVACY.format(sigma=1.0, budget=50.0))
        for rnd in (1, 2):
            reply = handle_train(_train_message(base_model_dir, rnd), _context(cfg))
            assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
            hashes.append(hash_state(ArrayRecord.to_torch_state_dict(reply.content["arrays"])))
        rounds = [e for e in _ledger_entries(cfg) if e["kind"] == "round"]
        assert [e["noise_source"] for e in rounds] == ["os-seeded", "os-seeded"]
    assert len(set(hashes)) == 4


def test_evaluation_answers_are_charged_and_refused_once_the_budget_is_spent(
    tmp_path: Path, base_model_dir: Path
) -> None:
    """A coordinator asking 1,000 evaluations gets answers only while the ledger can pay for them; every
    answer has its ledger entry, the recomputed total never passes the budget."""
    privacy = PRIVACY.format(sigma=1.0, budget=3.0) + "eval_noise_multiplier = 5.0\n"
    cfg, _ = _site(tmp_path, base_model_dir, privacy)
    answered, refused = 0, 0
    for _ in range(1000):
        reply = handle_evaluate(_evaluate_message(base_model_dir), _context(cfg))
        if reply.has_error():
            assert reply.error.code == 1000 + BudgetExhausted.exit_code, reply.error.reason
            refused += 1
        else:
            assert set(reply.content["metrics"].keys()) >= {"eval_loss", "eval_loss_noise_std", "num-examples"}
            answered += 1
    evaluations = [e for e in _ledger_entries(cfg) if e["kind"] == "evaluation"]
    assert 1 <= answered == len(evaluations) < 20 and refused == 1000 - answered
    assert all(e["noise_source"] == "os-seeded" and e["noise_multiplier"] == 5.0 for e in evaluations)
    result = verify_ledger(
        cfg.parent / "state" / "privacy_ledger.jsonl", load_public_key(cfg.parent / "state" / "site_signing.pub")
    )
    assert result.ok, result.reason
    assert result.epsilon_total <= 3.0


def test_a_deleted_ledger_stops_the_site_until_an_operator_restarts_it(tmp_path: Path, base_model_dir: Path) -> None:
    cfg, _ = _site(tmp_path, base_model_dir, PRIVACY.format(sigma=1.0, budget=50.0))
    assert not handle_train(_train_message(base_model_dir, 1), _context(cfg)).has_error()
    ledger = cfg.parent / "state" / "privacy_ledger.jsonl"
    ledger.unlink()

    reply = handle_train(_train_message(base_model_dir, 2), _context(cfg))
    assert reply.has_error() and reply.error.code == 1000 + LedgerError.exit_code
    assert not ledger.exists()  # not recreated: the budget did not restart


MALFORMED = {
    "list-text": '{"text": ["Jane Roe SSN 123-45-6789 phone 555-867-5309"]}',
    "number-text": '{"text": 5558675309123}',
    "nested": '{"text": {"note": "Jane Roe SSN 123-45-6789"}}',
    "not-json": '{"text": "Jane Roe SSN 123-45-6789',
    "bare-string": '"Jane Roe SSN 123-45-6789 phone 555-867-5309"',
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_a_malformed_record_never_crosses_the_wire(tmp_path: Path, base_model_dir: Path, kind: str) -> None:
    """The bytes Flower would send for the error reply hold no piece of the record (4+ characters)."""
    from flwr.common.serde import message_to_proto

    cfg, _ = _site(tmp_path, base_model_dir, PRIVACY.format(sigma=1.0, budget=50.0))
    records = cfg.parent / "data" / "records.jsonl"
    records.write_text(records.read_text() + MALFORMED[kind] + "\n")
    reply = handle_train(_train_message(base_model_dir, 1), _context(cfg))
    assert reply.has_error()
    wire = message_to_proto(reply).SerializeToString().decode("latin-1")
    secret = MALFORMED[kind]
    pieces = {secret[i : i + 4] for i in range(len(secret) - 3)} - {'"tex', "text", 'ext"', 'xt":', 't": '}
    assert [p for p in pieces if p in wire] == []
