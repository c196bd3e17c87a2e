"""When work wfapp schedules itself (polls, action deliveries) yields to events in the inbox.

A poll or a delivery is a pull the product may time; an event is a push that someone waits to
see applied. On shared cores the inbox goes first: from `backlog` events waiting, the scheduled
work runs only a few requests at once (or none), until fewer than half as many wait. The gap
between the two thresholds keeps a backlog hovering near one of them from switching the work on
and off at every look.

An executor learns of a backlog two ways. It looks at the inbox (a query) every `interval`
seconds; and the engine, when it takes a batch in the same process, notes how many events of
each source the batch held (`engine_took`), which an executor reads for free before it starts
each request (`InboxYield.hint`). The note says at once what the next look would say up to
`interval` seconds later, when a burst has already begun to compete for the CPU.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

#: How long a batch the engine took counts as a sign of a backlog (it takes the next one well
#: within this while a backlog lasts).
ENGINE_NOTE_SECONDS = 0.5

# (when, events by source) of the engine's last batch in this process. One tuple, replaced
# whole, so readers in other threads never see half of it.
_engine_last: tuple[float, Mapping[str, int]] = (0.0, {})


def engine_took(sources: Mapping[str, int]) -> None:
    """Note a batch the engine takes in this process: its events (or timeouts) by source."""
    global _engine_last
    _engine_last = (time.monotonic(), dict(sources))


def engine_took_others(source: str, now: float) -> int:
    """Events of sources other than `source` in the engine's last batch here, if it is recent."""
    at, sources = _engine_last
    if now - at > ENGINE_NOTE_SECONDS:
        return 0
    return sum(count for name, count in sources.items() if name != source)


@dataclass
class InboxYield:
    """The yielding state of one executor. Not locked itself: its owner's lock guards it."""

    backlog: int  # events waiting that make the work yield; 0: never yield
    interval: float  # seconds between two looks at the inbox
    #: The executor's own source, to also yield to the engine's batches here (`engine_took`)
    #: except for its own events; None: only looks at the inbox count.
    engine_source: str | None = None
    since: float | None = None  # when (monotonic) the yield began; None: not yielding
    checked_at: float = 0.0  # when (monotonic) the inbox was last looked at

    @property
    def active(self) -> bool:
        """Whether the work yields now."""
        return self.since is not None

    def due(self, now: float) -> bool:
        """Whether it is time to look at the inbox again (never, with a backlog of 0)."""
        return bool(self.backlog) and now - self.checked_at >= self.interval

    def hint(self, now: float) -> bool:
        """Begin yielding when the engine here just took a batch holding `backlog` or more
        events of other sources (no query); whether the yield began."""
        if self.since is not None or not self.backlog or self.engine_source is None:
            return False
        if engine_took_others(self.engine_source, now) >= self.backlog:
            self.since = now
            return True
        return False

    def note(self, waiting: int, now: float) -> Literal["began", "ended", ""]:
        """Take in a look at the inbox, `waiting` events (counted up to `backlog`): whether
        the yield began or ended with it, or "" when nothing changed.

        With an `engine_source`, a yield does not end while the engine here still takes batches of
        the backlog's size: their events are no longer pending, but still being applied.
        """
        self.checked_at = now
        if self.engine_source is not None and self.backlog:
            waiting = max(waiting, engine_took_others(self.engine_source, now))
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
