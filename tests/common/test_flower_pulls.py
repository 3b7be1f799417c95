"""common/flower_pulls.py: Flower's object pulls retry promptly once asked, and the Flower internals it
changes are the ones pinned (flwr 1.41)."""

import pytest
from flwr.supercore.inflatable import inflatable_utils

from common.flower_pulls import BACKOFF_CAP_S, INITIAL_BACKOFF_S, prompt_object_pulls

PULLS = (inflatable_utils.pull_objects, inflatable_utils.pull_and_inflate_object_from_tree)


@pytest.fixture
def flower_defaults():
    """Flower's own defaults on both functions for the test (an earlier test may have changed them), and
    whatever this process had before restored after it."""
    saved = [dict(f.__kwdefaults__) for f in PULLS]
    for f in PULLS:
        f.__kwdefaults__.update(
            initial_backoff=inflatable_utils.PULL_INITIAL_BACKOFF, backoff_cap=inflatable_utils.PULL_BACKOFF_CAP
        )
    yield saved
    for f, d in zip(PULLS, saved, strict=True):
        f.__kwdefaults__.clear()
        f.__kwdefaults__.update(d)


def test_object_pulls_back_off_from_50_ms_to_1_s_instead_of_1_to_10(flower_defaults):
    # Flower's own figures, read from its constants: a ServerApp or grid built earlier in this test process
    # may already have called prompt_object_pulls() on the functions themselves.
    assert (inflatable_utils.PULL_INITIAL_BACKOFF, inflatable_utils.PULL_BACKOFF_CAP) == (1, 10)
    assert inflatable_utils.PULL_MAX_TRIES_PER_OBJECT == 500
    prompt_object_pulls()
    for f in PULLS:
        assert f.__kwdefaults__["initial_backoff"] == INITIAL_BACKOFF_S == 0.05
        assert f.__kwdefaults__["backoff_cap"] == BACKOFF_CAP_S == 1.0
        assert f.__kwdefaults__["max_tries_per_object"] == inflatable_utils.PULL_MAX_TRIES_PER_OBJECT  # same tries
