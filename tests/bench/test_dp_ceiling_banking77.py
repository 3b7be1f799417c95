"""bench/dp_ceiling_banking77.py: its ROUNDSxN options."""

from __future__ import annotations

import pytest

from bench.dp_ceiling_banking77 import main, parse_rounds_x


def test_parse_rounds_x_reads_two_positive_integers() -> None:
    assert parse_rounds_x("30x3000") == (30, 3000)
    assert parse_rounds_x("5X4") == (5, 4)


@pytest.mark.parametrize("text", ["30", "0x4", "3x4x5", "bench", "ax4"])
def test_parse_rounds_x_rejects_other_text(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rounds_x(text)


def test_main_rejects_a_malformed_distributed_schedule_before_reading_data(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--distributed", "bench", "30y3000", "--data", "/nonexistent"])
    assert exit_info.value.code == 2
    assert "--distributed takes ROUNDSxBATCH such as 30x3000, or bench" in capsys.readouterr().err
