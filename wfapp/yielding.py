"""When work wfapp schedules itself (polls, action deliveries) yields to events in the inbox.

A poll or a delivery is a pull the product may time; an event is a push that someone waits to
see applied. On shared cores the inbox goes first: from `backlog` events waiting, the scheduled
work runs only a few requests at once, until fewer than half as many wait. The gap between
the two thresholds keeps a backlog hovering near one of them from switching the work on and
off at every look.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class InboxYield:
    """The yielding state of one executor. Not locked itself: its owner's lock guards it."""

    backlog: int  # events waiting that make the work yield; 0: never yield
    interval: float  # seconds between two looks at the inbox
    since: float | None = None  # when (monotonic) the yield began; None: not yielding
    checked_at: float = 0.0  # when (monotonic) the inbox was last looked at

    @property
    def active(self) -> bool:
        """Whether the work yields now."""
        return self.since is not None

    def due(self, now: float) -> bool:
        """Whether it is time to look at the inbox again (never, with a backlog of 0)."""
        return bool(self.backlog) and now - self.checked_at >= self.interval

    def note(self, waiting: int, now: float) -> Literal["began", "ended", ""]:
        """Take in a look at the inbox, `waiting` events (counted up to `backlog`): whether
        the yield began or ended with it, or "" when nothing changed."""
        self.checked_at = now
        if self.since is None and self.backlog and waiting >= self.backlog:
            self.since = now
            return "began"
        if self.since is not None and waiting < max(1, self.backlog // 2):
            self.since = None
            return "ended"
        return ""

    def end(self, now: float) -> float:
        """Stop yielding (the work is over); how long the yield lasted (0 if none)."""
        seconds = 0.0 if self.since is None else now - self.since
        self.since = None
        return seconds
