"""On Scheduled Poll: the executor that makes the HTTP requests off the job queue.

One executor per app and process. The scheduled job only wakes it (so the job returns at once
and an RQ worker goes on with event processing and the timeout sweep); the executor's *pump*
thread claims due timers, hands them to at most `POLL_CONCURRENCY` request threads and stores
what they got in batches. Bounded per integration too (its `poll_concurrency` setting), with
the threads taking integrations round-robin, so a slow or dead endpoint holds at most its own
integration's share of threads while the others go on.

The pump claims only what the threads can start soon (at most two rounds per integration
waiting to start); it asks for about one more round when only one is left, for as long as the
last claim came back full, and otherwise waits for the next wake.

Polls yield to other events: a poll is a pull the product may time, an event a push someone
waits for, and on a small machine the requests and their answers take the CPU the workers need
to apply the other events. While at least `POLL_YIELD_BACKLOG` events of other sources wait in
the inbox (looked at every `YIELD_CHECK_SECONDS` while there is poll work), or the engine in this
process has just taken a batch of that many (`InboxYield.hint`, looked at before every request),
the executor starts no new request (`POLL_YIELD_CONCURRENCY`, default 0; at most that many at
once when set) and claims nothing; it resumes its full concurrency once fewer than half as many
wait. A yield longer than `POLL_YIELD_MAX_SECONDS` lets one poll at a time through, so a steady
backlog slows a cycle down but cannot stop it. Requests already running finish and are stored.
Nothing claimed is dropped or given back: what waits in the queues starts later.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from typing import Any

import urllib3

from wfapp.plugin_api import (
    DatabaseCounter,
    DueInstance,
    InboxYield,
    NewEvent,
    claim_due,
    config,
    count_delivery,
    finish_due_batch,
    integrations,
    other_events_waiting,
    release_due,
    store_events,
)

log = logging.getLogger(__name__)

#: Results stored per `store_events` call (one transaction).
STORE_BATCH = 500
#: Results wait until this many are in, or this long, before they are stored (fewer, bigger
#: transactions); at once when nothing else is queued or running.
STORE_MIN = 200
STORE_DELAY = 0.5
#: How long an idle pump (nothing queued, running or to store) lives before it exits.
IDLE_SECONDS = 2.0
#: Attempts to store a batch of results before they are dropped (the database is away).
STORE_ATTEMPTS = 5
#: How often the inbox is looked at for other events waiting (while there is poll work).
YIELD_CHECK_SECONDS = 0.1

#: (the claimed item, the event to store, its error or None, failed attempts to store it)
Result = tuple[DueInstance, NewEvent, str | None, int]
Poll = Callable[[DueInstance, dict[str, str], urllib3.PoolManager, int],
                tuple[NewEvent, str | None]]


class PollExecutor:
    """Request threads, their queues per integration, and the pump that claims and stores."""

    def __init__(self, app: Any, trigger_type: str, poll: Poll, setting: str,
                 needs_secrets: Callable[[DueInstance], bool],
                 yields: DatabaseCounter | None = None) -> None:
        self.app = app
        self.trigger_type = trigger_type
        self.poll = poll
        self.setting = setting
        self.needs_secrets = needs_secrets
        self.yields = yields
        self.max_workers = max(1, int(config("POLL_CONCURRENCY", 32)))
        #: Yielding to other events waiting (POLL_YIELD_BACKLOG; 0: never yield).
        self.yielding = InboxYield(max(0, int(config("POLL_YIELD_BACKLOG", 100))),
                                   YIELD_CHECK_SECONDS, engine_source=trigger_type)
        #: Requests at once while yielding (0: none), and how long a yield holds them to that
        #: before one at a time goes through anyway (a steady backlog must not starve polls).
        self.yield_workers = max(0, min(self.max_workers,
                                        int(config("POLL_YIELD_CONCURRENCY", 0))))
        self.yield_max_seconds = max(0.0, float(config("POLL_YIELD_MAX_SECONDS", 30)))
        self.yield_counted = False
        self.claimed_at = 0.0
        self.max_bytes = max(1024, int(config("POLL_MAX_RESPONSE_BYTES", 1024 * 1024)))
        self.pool = urllib3.PoolManager(num_pools=64, maxsize=self.max_workers, block=False)
        self.cond = threading.Condition()
        self.queues: dict[int, deque[DueInstance]] = {}
        self.ring: list[int] = []
        self.turn = 0
        self.running: Counter[int] = Counter()
        self.caps: dict[int, int] = {}
        self.secrets: dict[int, dict[str, str]] = {}
        self.more: set[int] = set()
        self.results: list[Result] = []
        self.results_since = 0.0
        self.workers = 0
        self.pump: threading.Thread | None = None
        self.woken = False
        self.stopping = False
        self.storing = False
        #: Counts (claimed, stored, failed, yields) and seconds the pump spent (claim_s, store_s)
        #: or yielded (yield_s).
        self.stats: dict[str, float] = defaultdict(float)

    # --- the scheduled job's side ---------------------------------------------------------------

    def wake(self) -> dict[str, int]:
        """Ask for a scheduling round (sync the timers, claim what is due); returns at once."""
        with self.cond:
            self.stopping = False
            self.woken = True
            if self.pump is None or not self.pump.is_alive():
                self.pump = threading.Thread(target=self._pump, daemon=True,
                                             name=f"wfapp-poll-pump-{id(self):x}")
                self.pump.start()
            self.cond.notify_all()
            return {"queued": self._queued(), "running": sum(self.running.values()),
                    "workers": self.workers, "yielding": int(self.yielding.active)}

    def stop(self, timeout: float = 30.0) -> None:
        """Claim nothing more, give back the claims not started, let running polls finish and
        store their results (≤ `timeout`)."""
        with self.cond:
            self.stopping = True
            waiting = [item for queue in self.queues.values() for item in queue]
            for queue in self.queues.values():
                queue.clear()
            self.cond.notify_all()
            pump = self.pump
        if waiting:
            try:
                with self.app.app_context():
                    release_due(waiting)
            except Exception:  # the database is away: they are polled one interval later
                log.exception("could not give back %d claimed polls", len(waiting))
        if pump is not None and pump is not threading.current_thread():
            pump.join(timeout)

    def settled(self) -> bool:
        """True when nothing is queued, running, waiting to be stored or being stored."""
        with self.cond:
            return not (self._queued() or self.workers or self.results or self.woken or
                        self.storing)

    # --- request threads ------------------------------------------------------------------------

    def _queued(self) -> int:
        return sum(len(q) for q in self.queues.values())

    def _limit(self) -> int:
        """Requests at once in this process: all threads, or few (or none) while yielding."""
        since = self.yielding.since
        if since is None:
            return self.max_workers
        if self.yield_workers == 0 and time.monotonic() - since >= self.yield_max_seconds:
            return 1
        return self.yield_workers

    def _cap(self, integration_id: int, default: int = 1) -> int:
        """An integration's concurrency now: its setting, within the process's limit."""
        return min(self.caps.get(integration_id, default), self._limit())

    def _take(self) -> DueInstance | None:
        """The next item, integrations in turn, skipping those at their concurrency cap."""
        count = len(self.ring)
        if self.yielding.hint(time.monotonic()):
            # The engine here took a burst's batch: yield before the next look says so.
            self.yield_counted = False
        if sum(self.running.values()) >= self._limit():
            return None
        for step in range(count):
            integration_id = self.ring[(self.turn + step) % count]
            queue = self.queues.get(integration_id)
            if queue and self.running[integration_id] < self._cap(integration_id):
                self.turn = (self.turn + step + 1) % count
                self.running[integration_id] += 1
                return queue.popleft()
        return None

    def _submit(self, items: list[DueInstance]) -> None:
        with self.cond:
            stopping = self.stopping
        if stopping:  # stopped while this claim was on its way: give it back
            release_due(items)
            return
        with self.cond:
            for item in items:
                integration_id = item.integration.id
                if integration_id not in self.queues:
                    self.queues[integration_id] = deque()
                    self.ring.append(integration_id)
                self.queues[integration_id].append(item)
            self._spawn()
            self.cond.notify_all()

    def _spawn(self) -> None:
        """Start request threads for what is queued, up to the limit (the caller holds the lock)."""
        wanted = min(self._limit(), self._queued() + sum(self.running.values()))
        for _ in range(max(0, wanted - self.workers)):
            self.workers += 1
            threading.Thread(target=self._work, daemon=True, name="wfapp-poll-request").start()

    def _work(self) -> None:
        while True:
            with self.cond:
                item = self._take()
                while item is None:
                    # While yielding, the threads beyond the few allowed end (idle threads woken
                    # by every answer would cost the CPU the yield is for); `_spawn` starts them
                    # again when it ends.
                    if self.stopping or not self._queued() or self.workers > self._limit():
                        self.workers -= 1
                        self.cond.notify_all()
                        return
                    self.cond.wait(0.5)
                    item = self._take()
                secrets = self.secrets.get(item.integration.id, {})
            try:
                event, error = self.poll(item, secrets, self.pool, self.max_bytes)
            except Exception as exc:  # a bug must cost one poll, never the thread
                log.exception("poll of instance %s failed", item.instance_id)
                error = f"internal error: {type(exc).__name__}"
                event = NewEvent(self.trigger_type, "poll.failed", item.record_key,
                                 item.run_id, {"error": error}, None, error)
            with self.cond:
                self.running[item.integration.id] -= 1
                self._add_results([(item, event, error, 0)])

    # --- the pump -------------------------------------------------------------------------------

    def _add_results(self, results: list[Result]) -> None:
        """Queue results for storing (the caller holds the lock)."""
        if not self.results:
            self.results_since = time.monotonic()
        self.results.extend(results)
        self.cond.notify_all()

    def _room(self, integration_id: int) -> int:
        """How many more an integration's queue takes: up to two rounds waiting to start."""
        queue = self.queues.get(integration_id)
        return 2 * self._cap(integration_id, 0) - (len(queue) if queue else 0)

    def _startable(self) -> int:
        """Queued items that could start now: those of integrations under their cap.

        A slow integration's queue waits for its own threads; it must not keep the others from
        claiming (it is bounded by its own room).
        """
        return sum(min(len(q), max(0, self._cap(i) - self.running[i]))
                   for i, q in self.queues.items())

    def _wants_claim(self) -> bool:
        """More is due for an integration with at most one round left to start, and there is
        room overall (so a claim brings about a round: few, larger claims)."""
        if self.stopping or self._startable() >= self._limit():
            return False
        if self.yielding.active and time.monotonic() - self.claimed_at < YIELD_CHECK_SECONDS:
            # While yielding, one small claim per look at the inbox: claims in a tight loop for
            # a couple of polls each would cost the CPU the yield is for.
            return False
        return any(len(self.queues.get(i) or ()) <= self._cap(i, 0) for i in self.more)

    def _store_now(self) -> bool:
        """Whether to store the waiting results: a full batch, a while waited, or the end;
        while yielding, only when stopping or when held long or many enough (`_holding`)."""
        if not self.results:
            return False
        if self.stopping:
            return True
        if self._holding():
            return False
        if len(self.results) >= STORE_MIN or not (self._queued() or self.workers):
            return True
        return time.monotonic() - self.results_since >= STORE_DELAY

    def _holding(self) -> bool:
        """Whether answers wait in memory for the yield to end (the caller holds the lock).

        Each stored answer is one more event for this process's engine, applied in order with
        the burst the polls yield to: storing the answers of the requests that were running
        when the yield began would put them among the burst. They wait instead, as the
        claimed polls do, and are stored when the yield ends — but at most
        POLL_YIELD_MAX_SECONDS and at most STORE_BATCH of them (their timers already moved on:
        a process killed meanwhile loses them as it loses the polls it claimed, and those
        instances are polled one interval later).
        """
        since = self.yielding.since
        return (since is not None and len(self.results) < STORE_BATCH
                and time.monotonic() - since < self.yield_max_seconds)

    def _pump(self) -> None:
        idle_since = time.monotonic()
        while True:
            with self.cond:
                if not (self.woken or self._store_now() or self._wants_claim()):
                    self.cond.wait(STORE_DELAY / 2)
                check = self._check_due(self.woken)
            if check:
                # Before deciding what to store: the answers waiting now are held if a yield
                # begins with this look, not stored among the burst on the way.
                try:
                    with self.app.app_context():
                        self._check_yield()
                except Exception:  # the database is away: try again on the next round
                    log.exception("poll pump round failed")
                    time.sleep(1.0)
                    continue
            with self.cond:
                woken, self.woken = self.woken, False
                results: list[Result] = []
                if self._store_now():
                    results, self.results = self.results, []
                self.storing = bool(results)
                claim = not self.stopping and (woken or self._wants_claim())
                busy = bool(results or claim or self.results or self._queued() or self.workers)
                if busy:
                    idle_since = time.monotonic()
                elif self.stopping or time.monotonic() - idle_since > IDLE_SECONDS:
                    if self.yielding.active:
                        self._resume(self.yielding.end(time.monotonic()))
                    self.pump = None
                    return
            if not (results or claim):
                continue
            try:
                with self.app.app_context():
                    if results:
                        began = time.perf_counter()
                        self._store(results)
                        self.stats["store_s"] += time.perf_counter() - began
                    if claim:
                        began = time.perf_counter()
                        self._claim(sync=woken)
                        self.stats["claim_s"] += time.perf_counter() - began
            except Exception:  # the database is away: try again on the next round
                log.exception("poll pump round failed")
                time.sleep(1.0)
            finally:
                with self.cond:
                    self.storing = False

    # --- yielding to other events ---------------------------------------------------------------

    def _has_work(self) -> bool:
        """Polls waiting to start or running, or more due after the last claim."""
        return bool(self.more or self._queued() or self.workers)

    def _check_due(self, woken: bool) -> bool:
        """Whether to look at the inbox now: a scheduling round (so its first claim already
        knows), or poll work, and the last look is old enough (the caller holds the lock)."""
        if self.stopping:
            return False
        work = woken or self._has_work() or self.yielding.active
        return work and self.yielding.due(time.monotonic())

    def _check_yield(self) -> None:
        """Yield while POLL_YIELD_BACKLOG other events wait; resume below half of that.

        A yield is counted (and logged) once it holds back poll work: a scheduling round with
        nothing due that finds a backlog holds back nothing.
        """
        waiting = other_events_waiting(self.trigger_type, self.yielding.backlog)
        now = time.monotonic()
        held = 0
        with self.cond:
            began = self.yielding.since
            change = self.yielding.note(waiting, now)
            if change == "began":
                self.yield_counted = False
            elif change == "ended" and began is not None:
                self._resume(now - began)
            if self.yielding.active:
                self._spawn()  # a long yield lets one poll at a time through (`_limit`)
            count = self.yielding.active and not self.yield_counted and self._has_work()
            if count:
                self.yield_counted = True
                self.stats["yields"] += 1
                held = self._queued()
        if count:
            log.info("polls yield: %s+ other events wait in the inbox or are being applied; %s "
                     "until they are applied (%d claimed polls wait)", waiting,
                     f"at most {self.yield_workers} requests at once" if self.yield_workers
                     else "no new request starts", held)
            if self.yields is not None:
                self.yields.add((self.trigger_type,))

    def _resume(self, seconds: float) -> None:
        """Back to full concurrency after yielding `seconds` (the caller holds the lock)."""
        if self.yield_counted:
            self.stats["yield_s"] += seconds
            log.info("polls resume after yielding %.1f s to other events", seconds)
        self._spawn()
        self.cond.notify_all()

    def _refresh_caps(self) -> None:
        caps = {}
        for info in integrations():
            try:
                cap = int(info.setting(self.setting, 8))
            except (TypeError, ValueError):
                cap = 8
            caps[info.id] = max(1, min(cap, self.max_workers))
        with self.cond:
            self.caps = caps

    def _claim(self, sync: bool) -> None:
        if sync or not self.caps:
            self._refresh_caps()
            with self.cond:
                self.more = set(self.caps)
        with self.cond:
            asked = {i: max(0, self._room(i)) for i in self.caps if i in self.more}
            total = 2 * self._limit() - self._startable()
        if not sync and (total <= 0 or not any(asked.values())):
            return  # no room now: keep `more` as it is, the next round asks again
        # A scheduling round also brings the timers in step when there is no room to claim.
        self.claimed_at = time.monotonic()
        items = claim_due(self.trigger_type, max(0, total), per_integration=asked, sync=sync)
        got = Counter(item.integration.id for item in items)
        for integration_id in {item.integration.id for item in items}:
            sample = next(i for i in items if i.integration.id == integration_id)
            if any(self.needs_secrets(i) for i in items if i.integration.id == integration_id):
                self.secrets[integration_id] = sample.integration.named_secrets()
        with self.cond:
            # An integration that got all it asked for probably has more due; when the overall
            # limit cut the claim short, every integration asked for may have more. One that had
            # no room this time (its queue full) asked for nothing and keeps its place.
            cut_short = total > 0 and len(items) >= total
            self.more = {i for i, n in asked.items()
                         if n == 0 or cut_short or got[i] >= n}
        self.stats["claimed"] += len(items)
        if items:
            self._submit(items)

    def _store(self, results: list[Result]) -> None:
        by_integration: dict[int, list[Result]] = {}
        for result in results:
            by_integration.setdefault(result[0].integration.id, []).append(result)
        batches = [group[start:start + STORE_BATCH] for group in by_integration.values()
                   for start in range(0, len(group), STORE_BATCH)]
        for position, batch in enumerate(batches):
            try:
                self._store_batch(batch)
            except LookupError:  # the integration was deleted meanwhile
                continue
            except Exception:
                # Keep this batch (counting the attempt) and the ones not tried yet for later.
                retry = [(d, e, err, n + 1) for d, e, err, n in batch if n + 1 < STORE_ATTEMPTS]
                if len(retry) < len(batch):
                    log.error("dropping %d poll results after %d failed attempts to store them",
                              len(batch) - len(retry), STORE_ATTEMPTS)
                with self.cond:
                    self._add_results(retry + [r for later in batches[position + 1:]
                                               for r in later])
                raise

    def _store_batch(self, batch: list[Result]) -> None:
        info = batch[0][0].integration
        store_events(info, [event for _, event, _, _ in batch])
        finish_due_batch([(item, error) for item, _, error, _ in batch])
        failed = [error for _, _, error, _ in batch if error is not None]
        if len(failed) < len(batch):
            count_delivery(info, "poll", "accepted", by=len(batch) - len(failed))
        if failed:
            count_delivery(info, "poll", "failed", failed[-1], by=len(failed))
        self.stats["stored"] += len(batch)
        self.stats["failed"] += len(failed)


_executors: weakref.WeakKeyDictionary[Any, PollExecutor] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def executor_for(app: Any, factory: Callable[[], PollExecutor]) -> PollExecutor:
    """This process's executor for `app`, made on first use (and stopped gently at exit)."""
    with _lock:
        executor = _executors.get(app)
        if executor is None:
            executor = _executors[app] = factory()
            atexit.register(executor.stop, 30.0)
        return executor
