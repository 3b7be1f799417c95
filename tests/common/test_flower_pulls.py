"""common/flower_pulls.py: Flower's object pulls retry promptly once asked, and the Flower internals it
changes are the ones pinned (flwr 1.41)."""

import pytest
from flwr.supercore.inflatable import inflatable_utils

from common.flower_pulls import BACKOFF_CAP_S, FLOWER_PATIENCE_S, INITIAL_BACKOFF_S, prompt_object_pulls

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


def test_object_pulls_back_off_from_10_to_100_ms_with_flowers_patience(flower_defaults):
    # Flower's own figures, read from its constants: a ServerApp or grid built earlier in this test process
    # may already have called prompt_object_pulls() on the functions themselves.
    assert (inflatable_utils.PULL_INITIAL_BACKOFF, inflatable_utils.PULL_BACKOFF_CAP) == (1, 10)
    assert inflatable_utils.PULL_MAX_TRIES_PER_OBJECT == 500
    prompt_object_pulls()
    for f in PULLS:
        assert f.__kwdefaults__["initial_backoff"] == INITIAL_BACKOFF_S == 0.01
        assert f.__kwdefaults__["backoff_cap"] == BACKOFF_CAP_S == 0.1
        # As long a wait for a missing object as Flower's own: its tries times its cap, in shorter steps.
        tries = f.__kwdefaults__["max_tries_per_object"]
        assert tries * BACKOFF_CAP_S == FLOWER_PATIENCE_S
        assert FLOWER_PATIENCE_S == inflatable_utils.PULL_MAX_TRIES_PER_OBJECT * inflatable_utils.PULL_BACKOFF_CAP
