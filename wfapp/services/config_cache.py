"""A short-lived, per-process cache of integration configuration for inbound endpoints.

A webhook endpoint needs its integration's settings and secret on every request; reading them
costs two database round trips and a decryption, more than storing the event itself. Endpoints
may take them from here instead: entries live at most `max_age` seconds, and every write of an
integration or a secret in this process drops them all at once, so a change is seen at once in
the process that made it and within `max_age` seconds in every other one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app

T = TypeVar("T")
_lock = threading.Lock()
_generation = 0


def invalidate() -> None:
    """Forget every cached entry (called after integrations or secrets change)."""
    global _generation
    with _lock:
        _generation += 1


def get(key: Any, max_age: float, load: Callable[[], T]) -> T:
    """The cached value of `key` if younger than `max_age` seconds, else `load()` (cached)."""
    if max_age <= 0:
        return load()
    store: dict[Any, tuple[float, int, Any]] = current_app.extensions["wfapp"].setdefault(
        "config_cache", {})
    now = time.monotonic()
    found = store.get(key)
    if found is not None and found[1] == _generation and now - found[0] < max_age:
        return found[2]
    generation = _generation
    value = load()
    if len(store) > 10_000:  # integrations are few; never let a flood of codes grow it
        store.clear()
    store[key] = (now, generation, value)
    return value
