"""Throttling failed log-ins and failed API-token checks (the `limits` library).

Counts live in Redis when `REDIS_URL` is set, so every web process and host shares them, and in
memory otherwise (one process, the embedded setup). Only failures count: a person who types the
right password is never slowed down, an attacker guessing one account is locked out of it for a
while, and a client address that keeps failing is held back whatever account it tries.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import cast

from flask import Flask, current_app
from limits import RateLimitItem, parse
from limits.storage import Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rules:
    """The limits, from configuration (`LOGIN_LIMIT_ACCOUNT`, ...)."""

    account: RateLimitItem
    address: RateLimitItem
    token: RateLimitItem


class Throttle:
    """Counts failures per key and says when a key is blocked."""

    def __init__(self, app: Flask) -> None:
        uri = app.config.get("REDIS_URL")
        options = {"socket_timeout": 2, "socket_connect_timeout": 2} if uri else {}
        self.storage = cast(Storage, storage_from_string(uri or "memory://", **options))
        self.limiter = MovingWindowRateLimiter(self.storage)
        self.rules = Rules(parse(app.config["LOGIN_LIMIT_ACCOUNT"]),
                           parse(app.config["LOGIN_LIMIT_ADDRESS"]),
                           parse(app.config["TOKEN_LIMIT_ADDRESS"]))

    def blocked_for(self, item: RateLimitItem, *key: str) -> int | None:
        """Seconds until `key` may try again, or None when it is not blocked."""
        try:
            if self.limiter.test(item, "wfapp", *key):
                return None
            reset, _remaining = self.limiter.get_window_stats(item, "wfapp", *key)
        except Exception as exc:  # noqa: BLE001 — the counter store is away: do not lock everyone out
            _unreachable(exc, "not throttling")
            return None
        return max(1, int(reset - time.time()))

    def failed(self, item: RateLimitItem, *key: str) -> None:
        """Count one failure for `key`."""
        try:
            self.limiter.hit(item, "wfapp", *key)
        except Exception as exc:  # noqa: BLE001
            _unreachable(exc, "failure not counted")

    def clear(self, item: RateLimitItem, *key: str) -> None:
        """Forget the failures of `key` (after a successful log-in)."""
        try:
            self.limiter.clear(item, "wfapp", *key)
        except Exception as exc:  # noqa: BLE001
            _unreachable(exc, "failures not cleared")


def _unreachable(exc: Exception, consequence: str) -> None:
    # One line, no traceback: with Redis away this runs on every log-in and API request.
    log.warning("throttle storage unreachable (%s: %s); %s", type(exc).__name__, exc, consequence)


def get_throttle() -> Throttle:
    """This app's throttle."""
    return current_app.extensions["wfapp"]["throttle"]


def minutes(seconds: int) -> str:
    """'3 minutes' / '1 minute' for a lockout message."""
    count = max(1, (seconds + 59) // 60)
    return f"{count} minute{'s' if count != 1 else ''}"
