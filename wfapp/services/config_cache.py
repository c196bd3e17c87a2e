"""A per-process cache of integration configuration for inbound endpoints.

A webhook endpoint needs its integration's settings and secret on every request; reading them
costs two database round trips and a decryption, more than storing the event itself. Endpoints
may take them from here instead, in one of two ways:

- `cached` (`find_integration(code, cached=True)`): the copy is kept until something changes.
  Every change of an integration's fields, settings or secrets bumps its `config_version` in
  the same transaction (`changed`), and the store that follows checks that version in the same
  statement as its insert (`store_event_now`), so a copy another process changed is noticed by
  the very next request that would use it: nothing is stored, the caller reloads and checks
  again.
- `max_age` (older): the copy lives at most that many seconds.

Either way every change made in this process drops every copy at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app

T = TypeVar("T")
LIMIT = 10_000  # integrations are few; never let a flood of codes grow the cache


class _Cache:
    """One app's copies and its generation (bumped to drop them all)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.generation = 0
        self.entries: dict[Any, tuple[float, int, Any]] = {}


def _cache() -> _Cache:
    found: _Cache | None = current_app.extensions["wfapp"].get("config_cache")
    if found is None:
        found = current_app.extensions["wfapp"].setdefault("config_cache", _Cache())
    return found


def invalidate() -> None:
    """Forget every cached entry of this app (in this process)."""
    cache = _cache()
    with cache.lock:
        cache.generation += 1


def changed(integration_id: int | None) -> None:
    """An integration's configuration changes in the current transaction: bump its version (so
    every process's copy is stale once this commits) and forget this process's copies."""
    invalidate()
    if integration_id is None:
        return  # not inserted yet: nobody can have a copy
    from sqlalchemy import update

    from ..extensions import db
    from ..models import Integration

    db.session.execute(update(Integration).where(Integration.id == integration_id).values(
        config_version=Integration.config_version + 1))


def get(key: Any, max_age: float, load: Callable[[], T]) -> T:
    """The cached value of `key` if younger than `max_age` seconds, else `load()` (cached)."""
    if max_age <= 0:
        return load()
    cache = _cache()
    now = time.monotonic()
    found = cache.entries.get(key)
    if found is not None and found[1] == cache.generation and now - found[0] < max_age:
        return found[2]
    generation = cache.generation
    value = load()
    put(key, value, generation, now)
    return value


def peek(key: Any) -> Any:
    """The cached value of `key` whatever its age (None when there is none or it was dropped)."""
    cache = _cache()
    found = cache.entries.get(key)
    return found[2] if found is not None and found[1] == cache.generation else None


def generation() -> int:
    """The current generation: take it before loading a value that `put` will keep."""
    return _cache().generation


def put(key: Any, value: Any, generation: int, now: float | None = None) -> None:
    """Keep a value loaded during `generation` (kept only while that generation lasts); None
    forgets the key."""
    entries = _cache().entries
    if value is None:
        entries.pop(key, None)
        return
    if len(entries) > LIMIT:
        entries.clear()
    entries[key] = (time.monotonic() if now is None else now, generation, value)
