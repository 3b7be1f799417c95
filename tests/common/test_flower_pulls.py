"""common/flower_pulls.py: Flower's object pulls retry promptly once asked, and the Flower internals it
changes are the ones pinned (flwr 1.41)."""

import pytest
from flwr.supercore.inflatable import inflatable_utils

from common.flower_pulls import BACKOFF_CAP_S, INITIAL_BACKOFF_S, prompt_object_pulls

PULLS = (inflatable_utils.pull_objects, inflatable_utils.pull_and_inflate_object_from_tree)


@pytest.fixture
def flower_defaults():
    saved = [dict(f.__kwdefaults__) for f in PULLS]
    yield saved
    for f, d in zip(PULLS, saved, strict=True):
        f.__kwdefaults__.clear()
        f.__kwdefaults__.update(d)


def test_object_pulls_back_off_from_50_ms_to_1_s_instead_of_1_to_10(flower_defaults):
    assert all((d["initial_backoff"], d["backoff_cap"]) == (1, 10) for d in flower_defaults), "Flower's own"
    prompt_object_pulls()
    for f in PULLS:
        assert f.__kwdefaults__["initial_backoff"] == INITIAL_BACKOFF_S == 0.05
        assert f.__kwdefaults__["backoff_cap"] == BACKOFF_CAP_S == 1.0
        assert f.__kwdefaults__["max_tries_per_object"] == 500  # the same number of tries
