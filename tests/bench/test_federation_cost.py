"""bench/federation_cost.py's report: a round's overhead, split into the sites' hold-out answer and the rest."""

from __future__ import annotations

from bench import federation_cost as fc


def _row(rnd: int, wall: float, train: float, answer: float) -> dict:
    row = {k: 0.0 for k, _ in fc.STAGES} | {"site_eval_seconds": answer}
    return row | {
        "round": rnd,
        "wall": wall,
        "train": train,
        "overhead": (wall - train) / wall,
        "up": 1,
        "down": 1,
        "fp32": 2,
    }


def _result(name: str, rows: list[dict]) -> dict:
    return {"setup": {"name": name}, "params": 1_000_000, "rows": rows, "final_eval_loss": 5.0}


def test_the_steady_overhead_is_split_into_the_hold_out_answer_and_the_rest(capsys) -> None:
    # Round 1 loads and scrubs and is left out; rounds 2-3: 10 s, 8.5 s training, 1 s answer: 15% = 10% + 5%.
    rows = [_row(1, 30.0, 8.0, 1.0), _row(2, 10.0, 8.4, 0.9), _row(3, 10.0, 8.6, 1.1)]
    fc.report([_result("warm, 3 sites", rows)])
    steady = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("  warm, 3 sites"))
    assert "overhead  15.0% (hold-out answer 10.0%, the rest  5.0%)" in steady


def test_a_single_round_is_its_own_steady_state() -> None:
    rows = [_row(1, 30.0, 8.0, 1.0)]
    assert fc._steady(_result("floor", rows)) == rows
    assert fc._steady(_result("warm", [*rows, rows[0]])) == [rows[0]]
