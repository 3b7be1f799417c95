"""Flower's object pulls without its multi-second back-off (flwr 1.41, supercore/inflatable/inflatable_utils.py).

A message crosses Flower as a head plus its objects. The receiver often asks for an object before its
sender has finished pushing it (the SuperNode creates a site's task before the message's objects have
arrived; a reply's head reaches the ServerApp before its arrays): each miss then waits 1 s, doubling to
10 s (`PULL_INITIAL_BACKOFF`, `PULL_BACKOFF_CAP`), seconds of every round spent sleeping.
`prompt_object_pulls()` makes this process retry after 10 ms, doubling to 100 ms, and allows as many
tries as keep Flower's own patience (500 tries up to its 10 s cap: ~5,000 s per object; `PULL_MAX_TIME`
bounds the whole pull either way). A miss costs one small request, so the waits only shorten what is
already on the critical path of a round. Nothing happens at import: the site's runtime, its SuperNode
and the ServerApp call it when they start.
"""

from __future__ import annotations

INITIAL_BACKOFF_S = 0.01
BACKOFF_CAP_S = 0.1
# Flower's patience per object: PULL_MAX_TRIES_PER_OBJECT (500) tries, most of them PULL_BACKOFF_CAP (10 s) apart.
FLOWER_PATIENCE_S = 500 * 10.0


def prompt_object_pulls(initial_backoff: float = INITIAL_BACKOFF_S, backoff_cap: float = BACKOFF_CAP_S) -> None:
    """Every object pull of this process (direct or through `pull_and_inflate_object_from_tree`) retries
    a missing object after `initial_backoff` seconds, doubling up to `backoff_cap`, for as long as
    Flower's own back-off would have waited."""
    from flwr.supercore.inflatable import inflatable_utils

    for pull in (inflatable_utils.pull_objects, inflatable_utils.pull_and_inflate_object_from_tree):
        defaults = pull.__kwdefaults__
        if defaults is None or not {"initial_backoff", "backoff_cap", "max_tries_per_object"} <= set(defaults):
            raise RuntimeError(
                f"flwr's {pull.__name__} no longer takes initial_backoff/backoff_cap/max_tries_per_object"
            )
        defaults.update(
            initial_backoff=initial_backoff,
            backoff_cap=backoff_cap,
            max_tries_per_object=int(FLOWER_PATIENCE_S / backoff_cap),
        )
