"""On Scheduled Poll with real Redis and `flask --app wfapp worker` processes, against a real
local HTTP server: transitions fire, two workers never poll one instance twice per interval,
a restart keeps the schedule, and a slow endpoint stalls neither event processing nor the sweep.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from sqlalchemy import func, select

from tests.poll_server import PollServer
from tests.polls import integration, poll_events, poll_workflow, states, wait_until, waiting
from tests.services import ROOT, worker_env
from wfapp.extensions import db
from wfapp.models import Event, HistoryEntry, Instance, InstanceTimer
from wfapp.services.definitions import FORMAT, import_document
from wfapp.services.events import NewEvent, ingest
from wfapp.services.integrations import get_integration

pytestmark = pytest.mark.redis


class Workers:
    """Long-running worker processes with their output in files; stopped at the end."""

    def __init__(self, config: dict[str, Any], tmp: Path) -> None:
        self.config, self.tmp = config, tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, **extra: str) -> subprocess.Popen[bytes]:
        """Start one `flask --app wfapp worker` (with the scheduler)."""
        flask = str(Path(sys.executable).parent / "flask")
        log = (self.tmp / f"worker-{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen([flask, "--app", "wfapp", "worker"], cwd=str(ROOT),
                                env=worker_env(self.config, **extra), stdout=log,
                                stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
        """Stop one worker (SIGTERM: RQ's warm shutdown) and wait for it."""
        proc.send_signal(sig)
        proc.wait(timeout=60)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)

    def output(self) -> str:
        return "\n".join(p.read_text(errors="replace")
                         for p in sorted(self.tmp.glob("worker-*.log")))


@pytest.fixture
def workers(rq_app, tmp_path: Path) -> Iterator[Workers]:
    """Start workers with `workers.start()`; they are all stopped after the test."""
    pool = Workers(rq_app.config, tmp_path)
    yield pool
    pool.close()


@pytest.fixture
def server() -> Iterator[PollServer]:
    """The local endpoint the polls call."""
    with PollServer() as srv:
        yield srv


def _due_times(event: Event) -> tuple[str, datetime]:
    """(record key, claimed due time) from a poll event's dedupe key."""
    due = event.dedupe_key.split(":", 3)[3]
    return event.record_key, datetime.fromisoformat(due)


def _assert_once_per_interval(interval: float) -> dict[str, list[datetime]]:
    """Each instance's polls were claimed for due times at least one interval apart."""
    by_key: dict[str, list[datetime]] = defaultdict(list)
    for event in poll_events():
        key, due = _due_times(event)
        by_key[key].append(due)
    for key, dues in by_key.items():
        dues.sort()
        gaps = [(b - a).total_seconds() for a, b in zip(dues, dues[1:], strict=False)]
        assert all(gap >= interval - 0.01 for gap in gaps), (key, gaps)
    return by_key


def test_polls_fire_transitions_through_worker_processes(rq_app, workers, server):
    poll_workflow(url=server.url + "/orders/{record_key}", interval_minutes=0.02)
    integration()
    keys = [f"K{i:02d}" for i in range(30)]
    waiting("FEED", keys)
    for key in keys[::2]:
        server.answers[key] = {"status": "shipped", "carrier": "UPS"}
    workers.start()
    workers.start()
    wait_until(lambda: sum(1 for s in states().values() if s == "DONE") == 15, 60)
    assert states() == {k: "DONE" if i % 2 == 0 else "WAIT" for i, k in enumerate(keys)}
    fired = db.session.scalars(select(HistoryEntry).where(HistoryEntry.transition == "CHECK"))
    assert {h.actor for h in fired} == {"worker"}
    vars_ = db.session.execute(select(Instance.record_key, Instance.vars)).all()
    assert all(v == {"carrier": "UPS"} for k, v in vars_ if keys.index(k) % 2 == 0)
    assert "Traceback" not in workers.output()


def test_two_workers_never_poll_one_instance_twice_per_interval(rq_app, workers, server):
    interval = 3.0
    poll_workflow(url=server.url + "/orders/{record_key}", interval_minutes=interval / 60)
    integration()
    keys = [f"K{i:02d}" for i in range(60)]
    waiting("FEED", keys)
    server.delay = 0.2  # 60 polls × 0.2 s over 4 threads: one worker needs 3 s for a round
    for _ in range(2):
        workers.start(WFAPP_POLL_CONCURRENCY="4")
    # Besides the scheduler's wake every 2 s, wake the executors every 0.3 s: the wakes go to
    # both workers in turn, so both claim (and race for) the same due timers all the time.
    from wfapp.queue import get_queue

    started = time.monotonic()
    while time.monotonic() - started < 12:
        get_queue().enqueue("wfapp.builtin_plugins.on_scheduled_poll.run_polls")
        time.sleep(0.3)
    for proc in list(workers.procs):
        workers.stop(proc)
    elapsed = time.monotonic() - started
    assert server.max_active > 4, "both workers' executors polled at the same time"
    by_key = _assert_once_per_interval(interval)
    requests = defaultdict(int)
    for seen in server.requests():
        requests[unquote(seen.path).rsplit("/", 1)[1]] += 1
    assert set(by_key) == set(keys)
    for key in keys:
        # Every request stored once (no poll lost or stored twice) ...
        assert requests[key] == len(by_key[key]), key
        # ... and no more polls than intervals in the window (first due 3 s after entering).
        assert 1 <= requests[key] <= int(elapsed / interval) + 1, (key, requests[key])
    assert "Traceback" not in workers.output()


def test_a_restart_keeps_the_schedule(rq_app, workers, server):
    interval = 6.0
    poll_workflow(url=server.url + "/orders/{record_key}", interval_minutes=interval / 60)
    integration()
    keys = [f"K{i}" for i in range(10)]
    waiting("FEED", keys)
    first = workers.start()
    wait_until(lambda: len(poll_events()) >= 10, 30)
    workers.stop(first)  # warm shutdown: running polls finish and are stored
    stored = len(poll_events())
    db.session.rollback()
    due = dict(db.session.execute(select(InstanceTimer.instance_id, InstanceTimer.due_at)).all())
    assert len(due) == 10 and stored == len(server.requests())
    time.sleep(1)
    assert len(server.requests()) == stored  # nobody polls while no worker runs
    workers.start()
    wait_until(lambda: len(poll_events()) >= 20, 40)
    by_key = _assert_once_per_interval(interval)
    assert all(len(dues) >= 2 for dues in by_key.values())
    # The second round was claimed at the due times the first worker left in the database.
    second = {k: dues[1] for k, dues in by_key.items()}
    by_instance = dict(db.session.execute(select(Instance.record_key, Instance.id)).all())
    assert all(abs((second[k] - due[by_instance[k]]).total_seconds()) < 0.01 for k in keys)


def test_a_killed_worker_loses_no_timer(rq_app, workers, server):
    interval = 4.0
    poll_workflow(url=server.url + "/slow/{record_key}?s=2", interval_minutes=interval / 60)
    integration()
    keys = [f"K{i}" for i in range(6)]
    waiting("FEED", keys)
    victim = workers.start()
    wait_until(lambda: len(server.requests()) >= 6, 30)
    workers.stop(victim, signal.SIGKILL)  # mid-request: those answers are lost
    lost = len(server.requests())
    assert len(poll_events()) < lost
    workers.start()
    # The timers survived: every instance is polled again within about an interval.
    wait_until(lambda: len({e.record_key for e in poll_events()}) == 6, 40)
    assert len(server.requests()) > lost
    _assert_once_per_interval(interval)


TIMED = {
    "code": "TIMED", "initial_state": "NEW",
    "states": [{"code": "NEW", "is_initial": True},
               {"code": "HOLD", "timeout_hours": 0.0003, "on_timeout_transition": "EXPIRE"},
               {"code": "DONE", "is_final": True}],
    "transitions": [
        {"code": "HOLD", "from_state": "NEW", "to_state": "HOLD", "trigger_type": "on_webhook",
         "trigger_config": {"event_filter": "hold"}},
        {"code": "FINISH", "from_state": "NEW", "to_state": "DONE",
         "trigger_type": "on_webhook", "trigger_config": {"event_filter": "finish"}},
        {"code": "EXPIRE", "from_state": "HOLD", "to_state": "DONE", "trigger_type": "manual"},
    ],
}


def test_a_slow_endpoint_stalls_neither_event_processing_nor_the_sweep(rq_app, workers,
                                                                        server):
    # 24 instances whose endpoint answers after 15 s (timeout 20 s): every poll thread hangs.
    poll_workflow(url=server.url + "/slow/{record_key}?s=15", interval_minutes=0.02,
                  timeout_seconds=20)
    integration()
    waiting("FEED", [f"P{i}" for i in range(24)])
    import_document({"format": FORMAT, "workflow": TIMED})
    integration("OTHER", "TIMED")
    workers.start(WFAPP_SWEEP_INTERVAL="1", WFAPP_POLL_CONCURRENCY="8")
    wait_until(lambda: server.active >= 8, 30)
    # Event processing: 100 events are applied while the polls hang.
    other = get_integration("OTHER")
    started = time.monotonic()
    ingest(other, [NewEvent("on_webhook", "finish", f"E{i}", None, {}) for i in range(100)])
    wait_until(lambda: _count("DONE", "E") == 100, 30)
    processing = time.monotonic() - started
    # The timeout sweep: a 1.08 s timeout (sweep every 1 s) fires within seconds.
    started = time.monotonic()
    ingest(other, [NewEvent("on_webhook", "hold", f"T{i}", None, {}) for i in range(20)])
    wait_until(lambda: _count("DONE", "T") == 20, 30)
    sweep = time.monotonic() - started
    # Measured while all 8 poll threads still wait for their answers.
    assert server.active >= 8 and _count("WAIT", "P") == 24
    # Here (2 shared cores) both take about 2 s with or without the hanging polls; a worker
    # stalled behind them would take 15 s or more. The bounds are generous on purpose.
    assert processing < 8.0, processing
    assert sweep < 10.0, sweep


def _count(state: str, prefix: str) -> int:
    db.session.rollback()
    return db.session.scalar(select(func.count()).select_from(Instance).where(
        Instance.state == state, Instance.record_key.like(f"{prefix}%"))) or 0


def _yields() -> int:
    from wfapp.models import MetricCount

    db.session.rollback()
    return db.session.scalar(select(func.coalesce(func.sum(MetricCount.count), 0)).where(
        MetricCount.name == "wfapp_poll_yields_total")) or 0


def test_polls_yield_to_a_backlog_of_other_events_and_resume_after(rq_app, workers, server):
    """While other events wait — held here by leasing every inbox partition away, as if every
    worker were busy with them — a worker polls one at a time; once they are applied it polls
    eight at once again, and each instance is polled exactly once."""
    from tests.polls import count_poll_events, make_due
    from wfapp.queue import get_queue
    from wfapp.services.events import PARTITIONS
    from wfapp.services.processing import acquire_leases, release_leases

    poll_workflow(url=server.url + "/orders/{record_key}", interval_minutes=60)
    integration()
    keys = [f"K{i:02d}" for i in range(40)]
    waiting("FEED", keys)
    names = [f"partition:{p}" for p in range(PARTITIONS)]
    assert len(acquire_leases(names, "test-holder", 300)) == PARTITIONS
    ingest(get_integration("FEED"), [NewEvent("on_webhook", "noop", key, None, {})
                                     for key in keys[:20]])
    make_due()
    server.delay = 0.2
    workers.start(WFAPP_POLL_CONCURRENCY="8", WFAPP_POLL_YIELD_BACKLOG="10",
                  WFAPP_POLL_YIELD_CONCURRENCY="1", WFAPP_SWEEP_INTERVAL="1")
    wait_until(lambda: len(server.requests()) >= 5, 60)
    assert server.max_active == 1 and _yields() == 1
    assert _pending_noops() == 20
    release_leases(names, "test-holder")
    get_queue().kick(force=True)
    wait_until(lambda: _pending_noops() == 0, 60)
    wait_until(lambda: count_poll_events() == 40, 60)
    assert server.max_active > 1  # resumed at full concurrency
    assert sorted(e.record_key for e in poll_events()) == keys
    assert len(server.requests()) == 40 and _yields() == 1
    assert "Traceback" not in workers.output()


def _pending_noops() -> int:
    db.session.rollback()
    return db.session.scalar(select(func.count()).select_from(Event).where(
        Event.type == "noop", Event.status == "pending")) or 0
