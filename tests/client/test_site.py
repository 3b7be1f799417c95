"""The site's Flower handlers, called as the ClientApp process calls them: the privacy invariants a
site operator relies on — never past the budget, nothing unscrubbed trained on, nothing raw sent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flwr.app import ArrayRecord, Message, MessageType

from client.site import handle_evaluate, handle_train
from common.adapter import adapter_state, arrays_to_state, hash_state
from common.config import LoraSettings, PrivacyConfig, TaskConfig
from common.errors import BudgetExhausted, LedgerError
from common.keys import load_public_key
from common.ledger.verify import verify_ledger
from common.model import load_lora_model
from common.reply import reply_parts

pytestmark = pytest.mark.usefixtures("flower_task")


def test_handle_train_refuses_a_round_past_the_budget_and_sends_nothing(
    make_site, train_message, site_context, site_ledger
) -> None:
    cfg, _ = make_site(sigma=0.5, budget=0.5)
    reply = handle_train(train_message(1), site_context(cfg))

    assert reply.has_error()
    assert BudgetExhausted.__name__ in reply.error.reason
    assert reply.error.code == 1000 + BudgetExhausted.exit_code
    # Refused before training: nothing reserved, nothing recorded.
    assert [e for e in site_ledger(cfg) if e.get("kind") in ("reserve", "round")] == []


def test_handle_train_records_the_sent_update_then_refuses_when_spent(
    make_site, train_message, site_context, site_ledger
) -> None:
    # sigma 1.0 on ~32 records in batches of 16 (q = 0.5, 2 steps): one round spends ~5.2 epsilon, two exceed 6.
    cfg, _ = make_site(sigma=1.0, budget=6.0)
    first = handle_train(train_message(1), site_context(cfg))
    assert not first.has_error(), first.error.reason if first.has_error() else ""

    sent = {k: v for k, v in arrays_to_state(reply_parts(first.content).arrays).items()}
    rounds = [e for e in site_ledger(cfg) if e.get("kind") == "round"]
    assert len(rounds) == 1
    assert rounds[0]["update_sha256"] == hash_state(sent)  # the ledger names exactly what left the site
    result = verify_ledger(
        cfg.parent / "state" / "privacy_ledger.jsonl", load_public_key(cfg.parent / "state" / "site_signing.pub")
    )
    assert result.ok, result.reason

    second = handle_train(train_message(2), site_context(cfg))
    assert second.has_error() and BudgetExhausted.__name__ in second.error.reason
    assert len([e for e in site_ledger(cfg) if e.get("kind") == "round"]) == 1


def test_handle_train_reply_carries_no_raw_identifier(
    base_model_dir: Path, make_site, train_message, site_context
) -> None:
    cfg, notes = make_site(sigma=1.0, budget=10.0)
    reply = handle_train(train_message(1), site_context(cfg))
    assert not reply.has_error()

    declared = json.dumps({k: dict(v) for k, v in reply.content.items() if not isinstance(v, ArrayRecord)}, default=str)
    planted = {s.entity_value for r in notes for s in r.spans if len(s.entity_value) >= 6}
    assert planted, "the synthetic notes must carry identifiers for this test to mean anything"
    assert [v for v in planted if v in declared] == []
    assert set(arrays_to_state(reply_parts(reply.content).arrays).keys()) == set(
        adapter_state(
            load_lora_model(str(base_model_dir), LoraSettings(target_modules=("q_proj", "v_proj")), TaskConfig())
        ).keys()
    )


def test_handle_train_when_scrubbing_fails_trains_and_sends_nothing(
    make_site, train_message, site_context, site_ledger
) -> None:
    # The site names an NER model it does not have: the scrubber cannot be built.
    cfg, _ = make_site(sigma=1.0, budget=10.0)
    cfg.write_text(cfg.read_text() + '\n[scrub]\nner_model = "/nonexistent/ner-model"\n')
    reply = handle_train(train_message(1), site_context(cfg))

    assert reply.has_error()
    assert reply.error.reason.startswith("ScrubFailed: ")  # a missing model is a scrubbing failure, fail closed
    assert not reply.has_content()
    assert [e for e in site_ledger(cfg) if e.get("kind") in ("reserve", "round")] == []


def test_two_rounds_with_identical_inputs_send_different_updates(
    tmp_path: Path, make_site, train_message, site_context, site_ledger
) -> None:
    """Same site, same config (same seeds), same global adapter: fresh DP noise makes the updates differ.
    Two sites built from identical configurations (two federations) differ too."""
    hashes = []
    for name in ("first", "second"):
        cfg, _ = make_site(sigma=1.0, budget=50.0, root=tmp_path / name)
        for rnd in (1, 2):
            reply = handle_train(train_message(rnd), site_context(cfg))
            assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
            hashes.append(hash_state(arrays_to_state(reply_parts(reply.content).arrays)))
        rounds = [e for e in site_ledger(cfg) if e["kind"] == "round"]
        assert [e["noise_source"] for e in rounds] == ["os-seeded", "os-seeded"]
    assert len(set(hashes)) == 4


def test_evaluation_answers_are_charged_and_refused_once_the_budget_is_spent(
    make_site, train_message, site_context, site_ledger
) -> None:
    """A coordinator asking 1,000 evaluations gets answers only while the ledger can pay for them; every
    answer has its ledger entry, the recomputed total never passes the budget."""
    privacy = PrivacyConfig(
        max_grad_norm=1.0, noise_multiplier=1.0, budget_epsilon=3.0, budget_delta=1e-5, eval_noise_multiplier=5.0
    )
    cfg, _ = make_site(privacy=privacy)
    evaluate = Message(train_message(1).content, dst_node_id=7, message_type=MessageType.EVALUATE)
    answered, refused, declared = 0, 0, []
    for _ in range(1000):
        reply = handle_evaluate(evaluate, site_context(cfg))
        if reply.has_error():
            assert reply.error.code == 1000 + BudgetExhausted.exit_code, reply.error.reason
            refused += 1
        else:
            parts = reply_parts(reply.content)
            assert set(parts.metrics.keys()) >= {"eval_loss", "eval_loss_noise_std", "num-examples"}
            assert parts.arrays is None
            # The site's total after the answer, for the coordinator's live view; nothing else rides along.
            site = parts.site
            assert set(site.keys()) == {"site-id", "privacy"}
            declared.append(json.loads(site["privacy"]))
            answered += 1
    evaluations = [e for e in site_ledger(cfg) if e["kind"] == "evaluation"]
    assert 1 <= answered == len(evaluations) < 20 and refused == 1000 - answered
    assert declared == [{"epsilon_total": e["epsilon_total"], "budget_epsilon": 3.0} for e in evaluations]
    assert all(e["noise_source"] == "os-seeded" and e["noise_multiplier"] == 5.0 for e in evaluations)
    result = verify_ledger(
        cfg.parent / "state" / "privacy_ledger.jsonl", load_public_key(cfg.parent / "state" / "site_signing.pub")
    )
    assert result.ok, result.reason
    assert result.epsilon_total <= 3.0


def test_a_deleted_ledger_stops_the_site_until_an_operator_restarts_it(make_site, train_message, site_context) -> None:
    cfg, _ = make_site(sigma=1.0, budget=50.0)
    assert not handle_train(train_message(1), site_context(cfg)).has_error()
    ledger = cfg.parent / "state" / "privacy_ledger.jsonl"
    ledger.unlink()

    reply = handle_train(train_message(2), site_context(cfg))
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
def test_a_malformed_record_never_crosses_the_wire(kind: str, make_site, train_message, site_context) -> None:
    """The bytes Flower would send for the error reply hold no piece of the record (4+ characters)."""
    from flwr.common.serde import message_to_proto

    cfg, _ = make_site(sigma=1.0, budget=50.0)
    records = cfg.parent / "data" / "records.jsonl"
    records.write_text(records.read_text() + MALFORMED[kind] + "\n")
    reply = handle_train(train_message(1), site_context(cfg))
    assert reply.has_error()
    wire = message_to_proto(reply).SerializeToString().decode("latin-1")
    secret = MALFORMED[kind]
    pieces = {secret[i : i + 4] for i in range(len(secret) - 3)} - {'"tex', "text", 'ext"', 'xt":', 't": '}
    assert [p for p in pieces if p in wire] == []
