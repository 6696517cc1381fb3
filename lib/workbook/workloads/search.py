"""Property search: a seeded, shrinking Hypothesis search for an input on which a scenario fails."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any


def property_search(strategy: Any, failing: Callable[[Any], Awaitable[bool]], *, examples: int,
                    seed: int) -> dict[str, Any]:
    """Search *strategy* for an input on which ``await failing(x)`` is true, shrink it, and return
    ``{"counterexample": x or None, "examples": calls made, "shrinks": calls after the first failure}``.

    Hypothesis's ``find`` with a seeded ``random`` and no example database: the same seed, the same
    search, the same smallest counterexample (as long as *failing* is a function of its input). It runs
    on a private event loop, so call it through ``asyncio.to_thread`` from a notebook."""
    import random

    from hypothesis import HealthCheck, find, settings
    from hypothesis.errors import NoSuchExample

    calls = {"n": 0, "first": None}
    loop = asyncio.new_event_loop()

    def condition(x: Any) -> bool:
        calls["n"] += 1
        found = loop.run_until_complete(failing(x))
        if found and calls["first"] is None:
            calls["first"] = calls["n"]
        return found

    config = settings(max_examples=examples, database=None, deadline=None,
                      suppress_health_check=list(HealthCheck))
    try:
        example = find(strategy, condition, settings=config, random=random.Random(seed))
    except NoSuchExample:
        example = None
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    first = calls["first"]
    return {"counterexample": example, "examples": calls["n"], "first_failure_at": first,
            "shrinks": calls["n"] - first if first is not None else 0}
