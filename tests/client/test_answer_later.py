"""The hold-out answer a long-lived runtime computes after its reply (client/answer_later.py): charged in
the ledger before it is kept, sent with the next reply for the round it is about, the same events and ε
as answering on receipt, and nothing kept across runs."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Message, MessageType, RecordDict

from client.answer_later import LATER, PendingAnswer
from client.site import handle_evaluate, handle_train
from client.warm import WARM
from common.reply import ANSWERED_ROUND, reply_parts

pytestmark = pytest.mark.usefixtures("flower_task")


@pytest.fixture
def later() -> Iterator[None]:
    """A runtime that answers after its replies, as client/runtime/site_runtime.py turns it on."""
    WARM.drop()
    LATER.enabled, LATER.job, LATER.pending = True, None, None
    yield
    LATER.finish()
    LATER.enabled, LATER.job, LATER.pending = False, None, None


@pytest.fixture
def kept_answer(later, make_site, train_message, site_context) -> Path:
    """A DP site that trained round 1, replied, and has its answer charged and kept; its site TOML."""
    cfg = _round_one(make_site, train_message, site_context)
    _after_reply()
    return cfg


def _kept(cfg: Path) -> Path:
    return cfg.parent / "state" / "pending_answer.json"


def _metrics(reply: Message) -> dict:
    assert not reply.has_error(), reply.error.reason
    return dict(reply_parts(reply.content).metrics)


def _after_reply() -> None:
    """What the runtime does once a reply is handed over, and before the next message."""
    LATER.start()
    LATER.finish()


def _round_one(make_site, train_message, site_context) -> Path:
    """A DP site that has trained round 1 and replied; its answer is scheduled, not yet computed."""
    cfg, _ = make_site(sigma=0.8, budget=100)
    _metrics(handle_train(train_message(1), site_context(cfg)))
    return cfg


def _evaluations(entries: list[dict]) -> list[dict]:
    return [e for e in entries if e["kind"] == "evaluation"]


def _evaluate_message(rnd: int, train_message) -> Message:
    content = RecordDict(
        {
            "arrays": train_message(rnd).content.config_records["arrays"],
            "config": ConfigRecord({"server-round": rnd, "run-id": "run-test"}),
        }
    )
    return Message(content, dst_node_id=7, message_type=MessageType.EVALUATE)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.usefixtures("later")
def test_the_answer_is_charged_after_the_reply_and_sent_with_the_next(
    make_site, train_message, site_context, site_ledger, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="silo.site")
    cfg, _ = make_site(sigma=0.8, budget=100)
    first = _metrics(handle_train(train_message(1), site_context(cfg)))
    # The site's screen says where this round's answer went, and then what it spent.
    assert "this round (training; its evaluation answer after the reply)" in caplog.text
    # Round 1's reply carries no answer yet, and none has been charged: the adapter is evaluated afterwards.
    assert not any(k.startswith("global_") for k in first) and ANSWERED_ROUND not in first
    assert _evaluations(site_ledger(cfg)) == []
    assert LATER.job is not None

    _after_reply()
    assert (
        "evaluation answer for round 1 of run run-test" in caplog.text and "(sent with the next reply)" in caplog.text
    )
    charged = _evaluations(site_ledger(cfg))
    assert len(charged) == 1 and charged[0]["round"] == 1  # charged BEFORE it is kept, under round 1's key
    assert LATER.pending is not None and LATER.pending.answered_round == 0

    second = _metrics(handle_train(train_message(2), site_context(cfg)))
    assert second[ANSWERED_ROUND] == 0  # about round 0's aggregate: the adapter round 1 carried
    assert math.isfinite(second["global_eval_loss"]) and second["global_eval_loss_noise_std"] > 0
    assert second["holdout-examples"] >= 1
    assert LATER.pending is None  # sent once
    kinds = [e["kind"] for e in site_ledger(cfg)]
    # round 1 reserved and recorded, its answer, round 2 reserved and recorded: nothing sent before its entry.
    assert kinds == ["reserve", "round", "evaluation", "reserve", "round"]

    # The final evaluation carries its own answer and the one about round 1's aggregate, kept apart.
    _after_reply()
    final = _metrics(handle_evaluate(_evaluate_message(2, train_message), site_context(cfg)))
    assert math.isfinite(final["eval_loss"]) and final[ANSWERED_ROUND] == 1
    assert math.isfinite(final["global_eval_loss"])


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_answering_later_spends_exactly_what_answering_on_receipt_spends(
    tmp_path: Path, make_site, train_message, site_context, site_ledger
) -> None:
    """The same events in another order: the ε total after two rounds and their answers is the same."""
    on_receipt, _ = make_site(sigma=0.8, budget=100, root=tmp_path / "receipt")
    for rnd in (1, 2):
        _metrics(handle_train(train_message(rnd), site_context(on_receipt)))
    _metrics(handle_evaluate(_evaluate_message(2, train_message), site_context(on_receipt)))

    deferred, _ = make_site(sigma=0.8, budget=100, root=tmp_path / "later")
    WARM.drop()
    LATER.enabled = True
    try:
        for rnd in (1, 2):
            _metrics(handle_train(train_message(rnd), site_context(deferred)))
            _after_reply()
        _metrics(handle_evaluate(_evaluate_message(2, train_message), site_context(deferred)))
    finally:
        LATER.enabled, LATER.job, LATER.pending = False, None, None
    a, b = site_ledger(on_receipt), site_ledger(deferred)
    assert len(_evaluations(a)) == len(_evaluations(b)) == 3
    assert b[-1]["epsilon_total"] == pytest.approx(a[-1]["epsilon_total"], rel=1e-9)


def test_an_answer_kept_for_another_run_is_never_sent(tmp_path: Path) -> None:
    import torch

    from client.privacy import release_evaluation

    release = release_evaluation(torch.ones(4), None, loss_clip=5.0, noise_multiplier=1.0)
    kept = tmp_path / "pending_answer.json"
    try:
        for in_memory in (True, False):
            old = PendingAnswer.of("old-run", 3, release)
            LATER.pending = old if in_memory else None
            if not in_memory:
                old.save(kept)
            assert LATER.take("new-run", kept=kept) is None
            assert LATER.pending is None and not kept.exists()
        LATER.pending = PendingAnswer.of("run", 3, release)
        assert LATER.take("run", kept=kept) is not None
    finally:
        LATER.pending = None


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.usefixtures("later")
def test_a_failed_answer_sends_nothing_and_the_next_round_trains(
    make_site, train_message, site_context, site_ledger
) -> None:
    cfg = _round_one(make_site, train_message, site_context)
    # Between the reply and the answer, the site's signing key cannot be read: its ledger cannot be signed.
    key = cfg.parent / "state" / "site_signing.key"
    saved = key.read_bytes()
    key.write_bytes(b"not a key")
    try:
        _after_reply()
    finally:
        key.write_bytes(saved)
    assert LATER.pending is None and _evaluations(site_ledger(cfg)) == []
    second = _metrics(handle_train(train_message(2), site_context(cfg)))
    assert ANSWERED_ROUND not in second and not any(k.startswith("global_") for k in second)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_runtime_started_after_the_charge_sends_the_kept_answer_once(
    kept_answer: Path, train_message, site_context, site_ledger
) -> None:
    cfg, kept = kept_answer, _kept(kept_answer)
    # On disk: the numbers the next reply carries and which run and round they answer, nothing else.
    on_disk = json.loads(kept.read_text())
    assert set(on_disk) == {"run_id", "answered_round", "answer", "holdout_examples"}
    assert set(on_disk["answer"]) == {"eval_loss", "eval_loss_noise_std"}
    assert oct(kept.stat().st_mode & 0o777) == "0o600"

    LATER.pending = None  # the runtime died: its memory is gone, the file is not
    WARM.drop()
    second = _metrics(handle_train(train_message(2), site_context(cfg)))
    assert second[ANSWERED_ROUND] == 0 and second["global_eval_loss"] == on_disk["answer"]["eval_loss"]
    assert not kept.exists()
    assert len(_evaluations(site_ledger(cfg))) == 1  # sent from the file: not charged again


@pytest.mark.parametrize(
    "forged",
    [
        b"not json",
        b'{"run_id": "run-test", "answered_round": 0, "answer": {"eval_loss": NaN}, "holdout_examples": 5}',
        b'{"run_id": "run-test", "answered_round": "zero", "answer": {}, "holdout_examples": 5}',
        b'{"run_id": "run-test", "answer": {"eval_loss": 1.0}, "holdout_examples": 5}',
    ],
)
def test_a_kept_answer_file_that_is_not_one_is_never_sent(tmp_path: Path, forged: bytes) -> None:
    kept = tmp_path / "pending_answer.json"
    kept.write_bytes(forged)
    LATER.pending = None
    assert LATER.take("run-test", kept=kept) is None
    assert not kept.exists()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_round_refused_by_the_budget_keeps_the_answer_for_a_later_reply(
    kept_answer: Path, train_message, site_context, site_ledger
) -> None:
    """Taken only once the round has trained: a round refused half-way does not swallow the kept answer."""
    from dataclasses import replace

    from common.config import load_site_config

    cfg, kept = kept_answer, _kept(kept_answer)
    spent = site_ledger(cfg)[-1]["epsilon_total"]
    site = load_site_config(cfg)
    tight = replace(site, privacy=replace(site.privacy, budget_epsilon=spent + 0.01))
    cfg.write_text(tight.to_toml(defaults=True))
    refused = handle_train(train_message(2), site_context(cfg))  # round 2 cannot fit: refused in the ledger
    assert refused.has_error() and kept.exists()
    cfg.write_text(site.to_toml(defaults=True))
    second = _metrics(handle_train(train_message(2), site_context(cfg)))
    assert second[ANSWERED_ROUND] == 0 and not kept.exists()
