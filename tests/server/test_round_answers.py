"""The sites' hold-out answers filed under the round they are about (server/round_record.py `RoundAnswers`),
answers that arrive a round late (client/answer_later.py) included, and what a site that lies about the
round gets: its answer dropped, never filed under another round or averaged into the final evaluation."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message

from common.reply import ANSWERED_ROUND, reply_content
from server.exchange import evaluate_round
from server.round_record import RoundAnswers


def _answer(loss: float, holdout: int, answered: object = None) -> dict:
    out: dict = {"global_eval_loss": loss, "global_eval_loss_noise_std": 0.1, "holdout-examples": holdout}
    if answered is not None:
        out[ANSWERED_ROUND] = answered
    return out


def test_answers_are_filed_under_the_round_they_name_and_weighted_by_hold_out_size() -> None:
    answers = RoundAnswers()
    assert answers.add(1, _answer(2.0, 10), default_round=4, latest=4) == 4  # on receipt: round rnd - 1
    assert answers.add(2, _answer(4.0, 30, answered=3), default_round=4, latest=4) == 3  # a round late
    assert answers.add(3, _answer(6.0, 10, answered=3), default_round=4, latest=4) == 3
    assert answers.add(4, {"eval_seconds": 0.1}, default_round=4, latest=4) is None  # no answer in it
    three = answers.summary(3)
    assert three["sites"] == 2 and three["eval_loss"] == pytest.approx((4.0 * 30 + 6.0 * 10) / 40)
    assert answers.summary(4)["sites"] == 1 and answers.summary(2) == {"sites": 0}
    # A site's second answer about the same round replaces its first (a resent reply is not counted twice).
    answers.add(3, _answer(8.0, 10, answered=3), default_round=4, latest=4)
    assert answers.summary(3)["sites"] == 2


@pytest.mark.parametrize("forged", [5, 99, -1, True, 2.5, float("nan"), "3", [3]])
def test_an_answer_naming_a_round_not_yet_aggregated_or_no_round_is_dropped(forged: object) -> None:
    answers = RoundAnswers()
    assert answers.add(1, _answer(1.0, 10, answered=forged), default_round=4, latest=4) is None
    assert answers.by_round == {}


class _Sites:
    """A stand-in grid that answers each evaluate message as a site's runtime does after its last round:
    its answer about the final adapter, and the one about the round before it."""

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for i, msg in enumerate(messages):
            metrics = {"eval_loss": 1.0 + i, "eval_loss_noise_std": 0.1, "num-examples": 10.0}
            metrics |= _answer(5.0 + i, 10, answered=1)
            replies.append(Message(reply_content(ConfigRecord({"site-id": f"s{i}"}), metrics=metrics), reply_to=msg))
        return replies


def test_the_final_evaluation_files_the_late_answers_apart() -> None:
    answers = RoundAnswers()
    arrays = {"a.lora_B.weight": np.zeros((2, 2), dtype=np.float32)}
    final = evaluate_round(_Sites(), [11, 12], arrays, 2, timeout=5, run_id="r", answers=answers)  # type: ignore[arg-type]
    assert final["sites"] == 2 and final["eval_loss"] == pytest.approx(1.5)
    assert not any(k.startswith("global_") or k in (ANSWERED_ROUND, "holdout-examples") for k in final)
    assert answers.summary(1)["sites"] == 2 and answers.summary(1)["eval_loss"] == pytest.approx(5.5)


@pytest.mark.parametrize("poison", [float("nan"), float("inf"), True, "5.0"])
def test_an_answer_value_that_is_not_a_finite_number_never_reaches_the_averages(poison: object) -> None:
    """A final evaluation's reply is not gated like a train reply: its late answer is filtered here."""
    answers = RoundAnswers()
    metrics = _answer(2.0, 10, answered=1) | {"global_eval_loss": poison}
    assert answers.add(7, metrics, default_round=1, latest=1) == 1  # the finite part stays
    summary = answers.summary(1)
    assert "eval_loss" not in summary and summary["eval_loss_noise_std"] == pytest.approx(0.1)
    only_poison = {"global_eval_loss": poison, ANSWERED_ROUND: 1, "holdout-examples": 10}
    assert RoundAnswers().add(7, only_poison, default_round=1, latest=1) is None
