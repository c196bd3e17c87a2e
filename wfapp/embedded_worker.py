"""The embedded queue's worker process: jobs run in a child that the web process can kill.

`EmbeddedQueue.start` (EMBEDDED_ISOLATION on, the default) keeps the job deque, the schedules
and the kick/once marks in the web process; its daemon thread — the `Supervisor` — hands the
jobs, one at a time, to one long-lived worker process. That process builds its own app from a
snapshot of the web process's configuration and sends every queue call its code makes
(`enqueue`, `kick`, `once` …, from any of its threads) back over a pipe, so there is one queue
state. A job that has not said "done" after JOB_TIMEOUT seconds gets the worker SIGKILLed — its
database connection, and on SQLite the write lock it may hold, die with it — and a new worker
takes over; one that dies on its own is replaced likewise. The worker exits with its parent.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection, wait
from typing import Any

from flask import Flask
from sqlalchemy.engine import make_url

from .queue import PROCESS_JOB, EmbeddedQueue, run_job
from .shutdown import request_stop, stopping

log = logging.getLogger(__name__)

#: Seconds a new worker process may take to import wfapp and build its app.
START_SECONDS = 120.0
#: Seconds between attempts to start a worker process that failed to start.
RESTART_PAUSE = 5.0
#: Seconds a worker asked to stop (the web process exits) may take to end its job.
STOP_SECONDS = 10.0
#: The job that frees the partition leases of a worker process known to be dead.
RELEASE_JOB = "wfapp.jobs.release_worker"
#: The queue calls a worker process may make on the web process's queue.
FORWARDED = frozenset({"enqueue", "kick", "take_kick", "kick_soon", "once", "announce",
                       "retract", "incoming"})
PR_SET_PDEATHSIG = 1


def shareable_database(uri: str) -> bool:
    """False for an in-memory SQLite database, which no other process can open."""
    url = make_url(uri)
    if url.get_backend_name() != "sqlite":
        return True
    database = url.database or ""
    return database not in ("", ":memory:") and "mode=memory" not in database and \
        url.query.get("mode") != "memory"


def snapshot(app: Flask) -> dict[str, Any]:
    """The web process's configuration as the worker process gets it (what pickles)."""
    config: dict[str, Any] = {}
    for key, value in app.config.items():
        try:
            pickle.dumps(value)
        except Exception:  # noqa: BLE001 — e.g. plugin objects a test put into PLUGINS
            log.warning("embedded worker process: setting %s cannot be passed on (it does not "
                        "pickle)", key)
            continue
        config[key] = value
    # Its app must not start a worker of its own; its instance folder is the parent's.
    config.update(EMBEDDED_WORKER=False, INSTANCE_PATH=app.instance_path)
    return config


class _Child:
    """The web process's handle on one worker process."""

    def __init__(self, process: Any, jobs: Connection, owner: str) -> None:
        self.process = process
        self.jobs = jobs
        self.owner = owner  # its name in partition leases (`processing.worker_id`)


#: On SQLite a stuck batch may hold the database's one write lock until its worker is killed, and
#: a write waits at most the busy timeout (30 s, see `wfapp/__init__.py`) before it answers 503:
#: the worker is killed before that. Every job works to a time budget (JOB_TIME_BUDGET, 20 s).
SQLITE_JOB_SECONDS = 25.0


def job_deadline(config: Any) -> float:
    """Seconds a job may run before its worker process is killed: JOB_TIMEOUT, and on SQLite
    at most SQLITE_JOB_SECONDS, so a write waiting on a stuck batch is served, not refused."""
    seconds = max(1.0, float(config.get("JOB_TIMEOUT", 120)))
    if str(config.get("SQLALCHEMY_DATABASE_URI", "")).startswith("sqlite"):
        seconds = min(seconds, SQLITE_JOB_SECONDS)
    return seconds


class Supervisor:
    """The embedded worker thread of the web process: runs the schedules, feeds the worker
    process one job at a time, and replaces it when a job runs past JOB_TIMEOUT or it dies."""

    def __init__(self, queue: EmbeddedQueue) -> None:
        self.queue = queue
        self.config = snapshot(queue.app)
        self.timeout = job_deadline(queue.app.config)
        self.child: _Child | None = None
        self.closing = False
        self.stop_registered = False

    def run(self, schedules: list[tuple[str, float, str]]) -> None:
        """The thread's loop: queue what the schedules say is due, run jobs, wait for more."""
        due: dict[str, float] = {}
        while not self.closing:
            self.queue.enqueue_due(schedules, due)
            job = self.queue.take()
            if job is None:
                self.queue.idle()
                continue
            try:
                self._run(*job)
            except Exception:  # noqa: BLE001 — the supervisor must outlive anything a job does
                log.exception("embedded queue: job %s could not be run", job[0])

    def close(self) -> None:
        """Stop the worker process: its job ends after its batch, or it is killed."""
        self.closing = True
        child = self.child
        if child is None:
            return
        with contextlib.suppress(Exception):
            child.process.terminate()
            child.process.join(STOP_SECONDS)
        if child.process.is_alive():
            child.process.kill()
            child.process.join(5)

    def _run(self, path: str, args: tuple[Any, ...]) -> None:
        child = self.child
        if child is not None and not child.process.is_alive():
            self._lost(child, None, f"worker process {child.process.pid} died while idle "
                                    f"(exit code {child.process.exitcode})")
            child = None
        if child is None:
            child = self.child = self._start()
            if child is None:
                self.queue.put_back(path, args)
                time.sleep(RESTART_PAUSE)
                return
        try:
            child.jobs.send((path, args))
        except OSError:
            self.queue.put_back(path, args)
            self._lost(child, None, f"worker process {child.process.pid} is gone")
            return
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            ready = wait([child.jobs, child.process.sentinel], timeout=max(0.0, left))
            if child.jobs in ready:
                try:
                    if child.jobs.recv() == ("done",):
                        return
                    continue
                except (EOFError, OSError):
                    pass  # it died: its sentinel says so too
            if child.jobs in ready or child.process.sentinel in ready:
                child.process.join(5)
                self._lost(child, path, f"worker process {child.process.pid} died (exit code "
                                        f"{child.process.exitcode}) in job {path}")
                return
            if time.monotonic() >= deadline:
                child.process.kill()
                child.process.join(5)
                self._lost(child, path, f"job {path} ran past JOB_TIMEOUT ({self.timeout:g} s): "
                                        f"worker process {child.process.pid} killed")
                return

    def _lost(self, child: _Child, path: str | None, what: str) -> None:
        """A worker process is gone: say so, free its leases, and get processing going again."""
        self.child = None
        with contextlib.suppress(OSError):
            child.jobs.close()
        if self.closing:
            return
        log.error("embedded queue: %s; a new worker process takes over", what)
        # Its partition leases would block their events for LEASE_SECONDS: it is dead for sure.
        self.queue.put_back(RELEASE_JOB, (child.owner,))
        if path == PROCESS_JOB:
            self.queue.take_kick()
            self.queue.kick()

    def _start(self) -> _Child | None:
        """Start a worker process and wait until its app is built; None when it fails."""
        # "spawn", not fork: a forked copy of this threaded process would inherit locks held
        # by threads that do not exist in it.
        ctx = multiprocessing.get_context("spawn")
        jobs, child_jobs = ctx.Pipe()
        calls, child_calls = ctx.Pipe()
        process = ctx.Process(target=child_main, args=(self.config, child_jobs, child_calls),
                              name="wfapp-embedded-worker")
        try:
            process.start()
        except Exception:  # noqa: BLE001 — said once per try; the jobs wait
            log.exception("embedded queue: cannot start a worker process")
            return None
        finally:
            child_jobs.close()
            child_calls.close()
        if not self.stop_registered:
            # Registered after multiprocessing's own exit handler, so it runs before it: that
            # one would wait without limit for a worker stuck in a job.
            atexit.register(self.close)
            self.stop_registered = True
        threading.Thread(target=self._serve, args=(calls,), daemon=True,
                         name="wfapp-embedded-calls").start()
        message: Any = None
        if wait([jobs, process.sentinel], timeout=START_SECONDS) and jobs.poll():
            with contextlib.suppress(EOFError, OSError):
                message = jobs.recv()
        if not (isinstance(message, tuple) and message[0] == "ready"):
            if process.is_alive():
                process.kill()
            process.join(5)
            jobs.close()
            if not self.closing:
                log.error("embedded queue: the worker process did not start (exit code %s); "
                          "trying again in %g s", process.exitcode, RESTART_PAUSE)
            return None
        log.info("embedded queue: worker process %s runs the jobs", process.pid)
        return _Child(process, jobs, str(message[1]))

    def _serve(self, calls: Connection) -> None:
        """Answer one worker process's queue calls until it is gone."""
        with calls:
            while True:
                try:
                    name, args = calls.recv()
                except (EOFError, OSError):
                    return
                result = None
                try:
                    if name in FORWARDED:
                        result = getattr(self.queue, name)(*args)
                except Exception:  # noqa: BLE001 — a bad call must not end the others
                    log.exception("embedded queue: call %s from the worker process failed",
                                  name)
                try:
                    calls.send(result)
                except OSError:
                    return


class ParentQueue(EmbeddedQueue):
    """The worker process's queue: every call is made on the web process's queue, over a pipe.

    Its own deque stays empty: the jobs wait in the web process.
    """

    def __init__(self, app: Flask, conn: Connection) -> None:
        super().__init__(app)
        self.conn = conn
        self.call_lock = threading.Lock()  # the action and poll threads call it too

    def _call(self, name: str, *args: Any) -> Any:
        with self.call_lock:
            self.conn.send((name, args))
            return self.conn.recv()

    def enqueue(self, path: str, *args: Any, job_id: str | None = None) -> None:
        """Queue a job in the web process."""
        self._call("enqueue", path, *args)

    def kick(self, force: bool = False) -> None:
        """Make sure a processing job is queued in the web process."""
        self._call("kick", force)

    def take_kick(self) -> None:
        """A processing job has started: the next kick may queue another one."""
        self._call("take_kick")

    def kick_soon(self) -> None:
        """The same as `kick`."""
        self._call("kick_soon")

    def once(self, name: str, seconds: float) -> bool:
        """True at most once per `seconds` (the web process keeps the marks)."""
        return bool(self._call("once", name, seconds))

    def announce(self, counts: dict[str, int], seconds: float) -> str:
        """Announce in the web process (it keeps the announcements)."""
        return str(self._call("announce", counts, seconds) or "")

    def retract(self, handle: str) -> None:
        """Retract in the web process."""
        self._call("retract", handle)

    def incoming(self, source: str) -> int:
        """What the web process's announcements say is being stored."""
        return int(self._call("incoming", source) or 0)


def child_main(config: dict[str, Any], jobs: Connection, calls: Connection) -> None:
    """The worker process: build the app, then run the jobs the web process sends, in turn."""
    _die_with_parent()
    # Ctrl+C in a terminal reaches the whole process group: the web process decides for us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    busy = [False]

    def on_term(signum: int, frame: Any) -> None:
        request_stop()  # a job ends after its batch, as on an RQ worker
        if not busy[0]:
            raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    from . import create_app
    from .services.processing import worker_id

    app = create_app(config)
    app.logger  # noqa: B018 — installs Flask's log handler, as in the web process
    app.extensions["wfapp"]["queue"] = ParentQueue(app, calls)
    jobs.send(("ready", worker_id()))
    while not stopping():
        try:
            path, args = jobs.recv()
        except (EOFError, OSError):
            return
        busy[0] = True
        run_job(app, path, args)
        busy[0] = False
        try:
            jobs.send(("done",))
        except OSError:
            return  # the web process is gone


def _die_with_parent() -> None:
    """Exit as soon as the web process is gone, however it went (no orphaned worker)."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    if sys.platform.startswith("linux"):
        # The kernel's guarantee also holds while a job keeps the GIL inside C code, where the
        # watching thread below could not run.
        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    def watch() -> None:
        parent.join()
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="wfapp-parent-watch").start()
