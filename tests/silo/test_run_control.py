"""silo/run_control.py: one line per Flower run, as `silo federation status` and `list` print it."""

from pathlib import Path

import pytest

from silo.run_control import describe


@pytest.mark.parametrize(
    ("elapsed", "shown"),
    [(139.291128, "2 min 19 s"), ("59.6", "1 min 0 s"), (7.4, "7 s"), (None, "?"), ("soon", "soon"), ("inf", "inf")],
)
def test_describe_shows_elapsed_time_to_the_second(elapsed, shown):
    run = {"run-id": 42, "status": "running", "elapsed": elapsed}
    line = describe(run, ("1a2b3c", Path("runs/1a2b3c")))
    assert line == f"Flower run 42: running, elapsed {shown}; Silo run 1a2b3c in runs/1a2b3c"


def test_describe_names_no_run_directory_when_none_is_known():
    line = describe({"run-id": 7, "status": "finished", "status-details": "completed", "elapsed": 3}, None)
    assert line == "Flower run 7: finished (completed), elapsed 3 s; no Silo run directory known"
