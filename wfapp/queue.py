"""The job queue: RQ on Redis for many machines, or an embedded in-process queue for one.

Both run the same module-level job functions of `wfapp.jobs`; only the transport differs.
With `REDIS_URL` unset, jobs wait in memory and a daemon thread of the web process hands them to
one worker process it supervises (with `EMBEDDED_WORKER` on, as `make run` does; see
`wfapp.embedded_worker`) — a queue for a demo or a single small machine: nothing survives a
restart but the events, which live in the database and are picked up again by the sweep.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from functools import cached_property
from typing import Any

from flask import Flask, current_app

log = logging.getLogger(__name__)

try:  # the exception RQ raises inside a job that ran past its timeout
    from rq.timeouts import JobTimeoutException

    TIMEOUTS: tuple[type[BaseException], ...] = (JobTimeoutException,)
except ImportError:  # pragma: no cover - rq is a dependency
    TIMEOUTS = ()

QUEUE_NAME = "wfapp"
PROCESS_JOB = "wfapp.jobs.process_events"
KICK_KEY = "wfapp:kick"
#: Large ingests under way (not committed yet): a sorted set of announcements by expiry time.
INCOMING_KEY = "wfapp:inbox:incoming"
#: How long a queue goes without announcements after Redis failed one (see RedisQueue).
ANNOUNCE_PAUSE_SECONDS = 30.0


def _announcement(counts: dict[str, int]) -> str:
    """One announcement's member: unique, and carrying its events by source."""
    return f"{os.urandom(8).hex()}|{json.dumps(counts, separators=(',', ':'))}"


def _others(members: Any, source: str) -> int:
    """The events of sources other than `source` in these announcements."""
    total = 0
    for member in members:
        text = member.decode() if isinstance(member, bytes) else str(member)
        try:
            counts = json.loads(text.split("|", 1)[1])
            total += sum(int(n) for name, n in counts.items() if name != source)
        except (IndexError, ValueError, TypeError, AttributeError):
            continue  # not one of ours: ignored
    return total


def resolve(path: str) -> Callable[..., Any]:
    """Import a job function from its dotted path."""
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


class RedisQueue:
    """RQ on a real Redis: any number of `flask --app wfapp worker` processes on any hosts."""

    embedded = False

    def __init__(self, url: str, job_timeout: float = 120) -> None:
        # Connected on first use: a web process starts (and answers, storing events) even while
        # Redis is away or misconfigured; `check()` says what is wrong in one line.
        self.url = url
        self.job_timeout = max(1, int(job_timeout))

    @cached_property
    def connection(self) -> Any:
        """The Redis client (raises ValueError for a URL that is not redis://, rediss://...)."""
        import redis

        # A Redis that stops answering must not hang a web request: commands time out (RQ's
        # worker raises the timeout for its own long BLPOP).
        return redis.Redis.from_url(self.url, socket_connect_timeout=5, socket_timeout=10)

    @cached_property
    def queue(self) -> Any:
        """The RQ queue jobs go to."""
        return self.queue_on(self.connection)

    def queue_on(self, connection: Any) -> Any:
        """The RQ queue on a given Redis connection."""
        from rq import Queue

        return Queue(QUEUE_NAME, connection=connection)

    def worker_connection(self) -> Any:
        """A fresh client for an RQ worker, whose read timeout RQ sets itself."""
        import redis

        return redis.Redis.from_url(self.url, socket_connect_timeout=5)

    def check(self) -> str | None:
        """None when Redis answers; else one line saying what is wrong."""
        try:
            self.connection.ping()
        except ValueError as exc:
            return f"REDIS_URL {self.url!r} is not usable: {exc}"
        except Exception as exc:  # noqa: BLE001 — any failure to reach it is reported alike
            return f"cannot reach Redis at {self.url}: {exc}"
        return None

    def enqueue(self, path: str, *args: Any, job_id: str | None = None) -> None:
        """Queue a job by the dotted path of its function (RQ stops it after JOB_TIMEOUT)."""
        self.queue.enqueue(path, *args, job_id=job_id, result_ttl=60, failure_ttl=86400,
                           job_timeout=self.job_timeout)

    def kick(self, force: bool = False) -> None:
        """Make sure a processing job is queued; at most one waits at a time.

        `force` (the sweep, when events have waited too long) queues one even if the mark says
        one is waiting: the job the mark stands for may have been lost (a flushed Redis, a job
        that failed while the database was away).
        """
        if self.connection.set(KICK_KEY, "1", nx=True, ex=300) or force:
            if force:
                self.connection.set(KICK_KEY, "1", ex=300)
            self.enqueue(PROCESS_JOB)

    def take_kick(self) -> None:
        """A processing job has started: the next kick may queue another one."""
        self.connection.delete(KICK_KEY)

    def kick_soon(self) -> None:
        """Kick from this process's kicker thread, after the caller's commit, without waiting.

        Inbound endpoints store an event per request; a Redis round trip per request would cost
        as much as the insert. The kicker thread coalesces them: every call made before a kick
        starts is covered by it, so no stored event is left without one (the kick always happens
        after the commit that asked for it), and at most one kick runs at a time per process.
        """
        kicker = self._kicker
        if kicker is None or kicker.pid != os.getpid():  # none yet, or forked (gunicorn)
            with _KICKER_LOCK:
                kicker = self._kicker
                if kicker is None or kicker.pid != os.getpid():
                    kicker = self._kicker = _Kicker(self)
        kicker.wanted.set()

    _kicker: _Kicker | None = None

    def once(self, name: str, seconds: float) -> bool:
        """True for exactly one caller per `seconds` across every process and host."""
        return bool(self.connection.set(f"wfapp:once:{name}", "1", nx=True,
                                        px=max(1, int(seconds * 1000))))

    #: After Redis failed an announcement call: when (monotonic) this queue tries again. A
    #: Redis that does not answer must not add its timeout to every large ingest and to every
    #: look of a yielding executor; the inbox alone still says what waits.
    announcements_paused_until = 0.0

    def _announcements_failed(self, what: str, exc: Exception) -> None:
        self.announcements_paused_until = time.monotonic() + ANNOUNCE_PAUSE_SECONDS
        log.warning("could not %s (%s: %s); no announcements of large ingests for %.0f s",
                    what, type(exc).__name__, exc, ANNOUNCE_PAUSE_SECONDS)

    def _announcing(self) -> bool:
        return time.monotonic() >= self.announcements_paused_until

    def announce(self, counts: dict[str, int], seconds: float) -> str:
        """Say that these events (by source) are being stored, for at most `seconds`; returns
        the handle `retract` takes ("" when Redis failed). Seen by `incoming` in every process
        on every host."""
        if not self._announcing():
            return ""
        member = _announcement(counts)
        expires = time.time() + seconds
        try:
            with self.connection.pipeline(transaction=False) as pipe:
                pipe.zadd(INCOMING_KEY, {member: expires})
                # Readers drop expired announcements (one left by an announcer that died before
                # retracting); the key itself goes an hour after the last one.
                pipe.expire(INCOMING_KEY, 3600)
                pipe.execute()
        except Exception as exc:  # noqa: BLE001 — an announcement is a hint, never a failure
            self._announcements_failed("announce an ingest", exc)
            return ""
        return member

    def retract(self, handle: str) -> None:
        """The announced events are committed (or were not stored after all)."""
        if not handle or not self._announcing():
            return  # it expires by itself
        try:
            self.connection.zrem(INCOMING_KEY, handle)
        except Exception as exc:  # noqa: BLE001 — it expires by itself
            self._announcements_failed("retract an announcement", exc)

    def incoming(self, source: str) -> int:
        """Events of sources other than `source` that announcements say are being stored."""
        if not self._announcing():
            return 0
        try:
            with self.connection.pipeline(transaction=False) as pipe:
                pipe.zremrangebyscore(INCOMING_KEY, "-inf", time.time())
                pipe.zrange(INCOMING_KEY, 0, -1)
                members = pipe.execute()[1]
        except Exception as exc:  # noqa: BLE001 — without it, the inbox alone says
            self._announcements_failed("read announcements", exc)
            return 0
        return _others(members, source)


_KICKER_LOCK = threading.Lock()
COALESCE_SECONDS = 0.02


class _Kicker:
    """The per-process thread behind `RedisQueue.kick_soon`."""

    def __init__(self, queue: RedisQueue) -> None:
        self.queue = queue
        self.pid = os.getpid()
        self.wanted = threading.Event()
        self.failing_since: float | None = None
        threading.Thread(target=self._loop, daemon=True, name="wfapp-kicker").start()

    def _loop(self) -> None:
        while True:
            self.wanted.wait()
            # Gather the calls of the next few milliseconds into this kick: under load one
            # Redis round trip covers many requests; a quiet system pays 20 ms of latency.
            time.sleep(COALESCE_SECONDS)
            self.wanted.clear()  # calls from now on need the next kick
            try:
                self.queue.kick()
                self.failing_since = None
            except Exception as exc:  # noqa: BLE001 — the sweep re-queues; say so once a minute
                now = time.monotonic()
                if self.failing_since is None or now - self.failing_since > 60:
                    self.failing_since = now
                    log.warning("events stored, but the queue is unreachable (%s: %s); the "
                                "sweep will pick them up", type(exc).__name__, exc)
                time.sleep(0.5)


class EmbeddedQueue:
    """Jobs in memory, in this process; run by the embedded worker (or drained by hand in tests).

    The deque, the kick mark and the `once` marks live here even when the jobs run in the
    worker process: that process's queue calls come back here over a pipe, so there is one state.
    """

    embedded = True

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.jobs: deque[tuple[str, tuple[Any, ...]]] = deque()
        self.kicked = False
        self.lock = threading.Lock()
        self.wakeup = threading.Event()
        self.marks: dict[str, float] = {}
        self.incoming_until: dict[str, float] = {}  # announcement → when it expires (monotonic)
        self.thread: threading.Thread | None = None

    def enqueue(self, path: str, *args: Any, job_id: str | None = None) -> None:
        """Queue a job by the dotted path of its function."""
        with self.lock:
            self.jobs.append((path, args))
        self.wakeup.set()

    def kick(self, force: bool = False) -> None:
        """Make sure a processing job is queued; at most one waits at a time."""
        with self.lock:
            if self.kicked and not force:
                return
            self.kicked = True
        self.enqueue(PROCESS_JOB)

    def take_kick(self) -> None:
        """A processing job has started: the next kick may queue another one."""
        with self.lock:
            self.kicked = False

    def kick_soon(self) -> None:
        """The same as `kick` here: it costs nothing (no network)."""
        self.kick()

    def once(self, name: str, seconds: float) -> bool:
        """True at most once per `seconds` in this process."""
        now = time.monotonic()
        with self.lock:
            if self.marks.get(name, 0) > now:
                return False
            self.marks[name] = now + seconds
            return True

    def announce(self, counts: dict[str, int], seconds: float) -> str:
        """Say that these events (by source) are being stored, for at most `seconds`."""
        member = _announcement(counts)
        with self.lock:
            self.incoming_until[member] = time.monotonic() + seconds
        return member

    def retract(self, handle: str) -> None:
        """The announced events are committed (or were not stored after all)."""
        with self.lock:
            self.incoming_until.pop(handle, None)

    def incoming(self, source: str) -> int:
        """Events of sources other than `source` that announcements say are being stored."""
        now = time.monotonic()
        with self.lock:
            for member in [m for m, until in self.incoming_until.items() if until <= now]:
                del self.incoming_until[member]
            members = list(self.incoming_until)
        return _others(members, source)

    def take(self) -> tuple[str, tuple[Any, ...]] | None:
        """The next job (taken off the queue), or None."""
        with self.lock:
            return self.jobs.popleft() if self.jobs else None

    def put_back(self, path: str, args: tuple[Any, ...]) -> None:
        """Queue a job at the front: it runs next."""
        with self.lock:
            self.jobs.appendleft((path, args))
        self.wakeup.set()

    def drain(self, limit: int = 1000) -> int:
        """Run queued jobs in this thread until none are left; return how many ran."""
        ran = 0
        while ran < limit:
            job = self.take()
            if job is None:
                return ran
            run_job(self.app, *job)
            ran += 1
        return ran

    def start(self, schedules: list[tuple[str, float, str]]) -> None:
        """Start the daemon thread that runs jobs and the periodic schedules.

        With EMBEDDED_ISOLATION on (the default) the thread only supervises: the jobs run in a
        worker process it can kill (`wfapp.embedded_worker`). An in-memory SQLite database
        cannot be shared with another process, so there the jobs run in the thread itself.
        """
        if self.thread is not None:
            return
        from .embedded_worker import Supervisor, shareable_database
        from .plugins import config_flag

        run: Callable[[list[tuple[str, float, str]]], None] = self._loop
        if not config_flag(self.app.config.get("EMBEDDED_ISOLATION", True),
                           "EMBEDDED_ISOLATION"):
            log.info("embedded queue: jobs run in a thread of the web process "
                     "(EMBEDDED_ISOLATION is off)")
        elif not shareable_database(self.app.config["SQLALCHEMY_DATABASE_URI"]):
            log.warning("embedded queue: jobs run in a thread of the web process, without a "
                        "job timeout: an in-memory SQLite database cannot be shared with a "
                        "worker process")
        else:
            run = Supervisor(self).run
        self.thread = threading.Thread(target=run, args=(schedules,), daemon=True,
                                       name="wfapp-embedded-worker")
        self.thread.start()

    def enqueue_due(self, schedules: list[tuple[str, float, str]], due: dict[str, float]
                    ) -> None:
        """Queue the scheduled jobs whose time has come (`due`: name → next monotonic time)."""
        now = time.monotonic()
        for name, interval, path in schedules:
            if due.get(name, 0.0) <= now:
                due[name] = now + interval
                self.enqueue(path)

    def idle(self, seconds: float = 1.0) -> None:
        """Wait until a job is queued, or `seconds` (the schedules' resolution)."""
        self.wakeup.wait(timeout=seconds)
        self.wakeup.clear()

    def _loop(self, schedules: list[tuple[str, float, str]]) -> None:
        due: dict[str, float] = {}
        while True:
            self.enqueue_due(schedules, due)
            self.drain()
            self.idle()


def run_job(app: Flask, path: str, args: tuple[Any, ...]) -> None:
    """Run one job in the app context as the worker; log (and survive) its failure."""
    from flask import g

    with app.app_context():
        g.actor = "worker"
        try:
            resolve(path)(*args)
        except Exception:  # one failing job must not stop the embedded worker
            log.exception("embedded job %s failed", path)


def make_queue(app: Flask) -> RedisQueue | EmbeddedQueue:
    """RQ when REDIS_URL is set, the embedded queue otherwise."""
    url = app.config.get("REDIS_URL")
    return RedisQueue(url, float(app.config.get("JOB_TIMEOUT", 120))) if url else \
        EmbeddedQueue(app)


def get_queue() -> RedisQueue | EmbeddedQueue:
    """This app's queue."""
    return current_app.extensions["wfapp"]["queue"]
