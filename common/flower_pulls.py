"""Flower's object pulls without its multi-second back-off (flwr 1.41, supercore/inflatable/inflatable_utils.py).

A message crosses Flower as a head plus one object per array. The receiver often asks for an object
before its sender has finished pushing it (the SuperNode creates a site's task before the message's
objects have arrived; a reply's head reaches the ServerApp before its arrays): each miss then waits
1 s, doubling to 10 s (`PULL_INITIAL_BACKOFF`, `PULL_BACKOFF_CAP`), seconds of every round spent
sleeping. `prompt_object_pulls()` makes this process retry after 50 ms, doubling to 1 s, with the same
500 tries per object. Nothing happens at import: the site's runtime, its SuperNode and the ServerApp
call it when they start.
"""

from __future__ import annotations

INITIAL_BACKOFF_S = 0.05
BACKOFF_CAP_S = 1.0


def prompt_object_pulls(initial_backoff: float = INITIAL_BACKOFF_S, backoff_cap: float = BACKOFF_CAP_S) -> None:
    """Every object pull of this process (direct or through `pull_and_inflate_object_from_tree`) retries
    a missing object after `initial_backoff` seconds, doubling up to `backoff_cap`."""
    from flwr.supercore.inflatable import inflatable_utils

    for pull in (inflatable_utils.pull_objects, inflatable_utils.pull_and_inflate_object_from_tree):
        defaults = pull.__kwdefaults__
        if defaults is None or not {"initial_backoff", "backoff_cap"} <= set(defaults):
            raise RuntimeError(f"flwr's {pull.__name__} no longer takes initial_backoff/backoff_cap")
        defaults.update(initial_backoff=initial_backoff, backoff_cap=backoff_cap)
