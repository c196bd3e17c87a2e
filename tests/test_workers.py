"""Real Redis, real `flask --app wfapp worker` processes: processing, sweep, crashes, loss."""

from __future__ import annotations

import os
import random
import signal
import time
from collections import defaultdict
from typing import Any

import pytest
import redis
from flask import current_app
from sqlalchemy import func, select

from tests.replay import check_history_paths, serial_replay
from tests.services import run_workers, start_worker
from wfapp.extensions import db
from wfapp.models import Event, HistoryEntry, Instance
from wfapp.services.definitions import FORMAT, import_document
from wfapp.services.events import NewEvent, ingest
from wfapp.services.integrations import create_integration, get_integration
from wfapp.services.runs import start_run

pytestmark = pytest.mark.redis

COUNTER = {
    "code": "COUNTER", "description": "Order-sensitive test workflow", "initial_state": "A",
    "enabled": True,
    "states": [
        {"code": "A", "is_initial": True},
        {"code": "B", "timeout_hours": 0.0002, "on_timeout_transition": "B_TIMEOUT"},
        {"code": "C"}, {"code": "D"}, {"code": "E", "is_final": True},
    ],
    "transitions": [
        {"code": "A_NEXT", "from_state": "A", "to_state": "B", "trigger_type": "on_webhook",
         "trigger_config": {"event_filter": "next"}},
        {"code": "A_JUMP", "from_state": "A", "to_state": "C", "trigger_type": "on_webhook",
         "trigger_config": {"event_filter": "jump"},
         "conditions": [{"field": "event.n", "operator": "gt", "value": 5}],
         "capture": {"last_n": "event.n"}},
        {"code": "B_NEXT", "from_state": "B", "to_state": "C", "trigger_type": "on_webhook",
         "trigger_config": {"event_filter": "next"}},
        {"code": "B_BACK", "from_state": "B", "to_state": "A", "trigger_type": "on_webhook",
         "trigger_config": {"event_filter": "back"}},
        {"code": "B_TIMEOUT", "from_state": "B", "to_state": "A", "trigger_type": "manual"},
        {"code": "C_NEXT", "from_state": "C", "to_state": "D", "trigger_type": "on_webhook",
         "trigger_config": {"event_filter": "next"}},
        {"code": "C_BACK", "from_state": "C", "to_state": "B", "trigger_type": "on_webhook",
         "trigger_config": {"event_filter": "back"}, "priority": 5},
        {"code": "D_BACK", "from_state": "D", "to_state": "A", "trigger_type": "on_webhook",
         "trigger_config": {"event_filter": "back"}},
        {"code": "D_FINISH", "from_state": "D", "to_state": "E", "trigger_type": "on_webhook",
         "trigger_config": {"event_filter": "finish"}},
    ],
}


def _setup(timeouts: bool = False) -> Any:
    wf = {**COUNTER, "states": [dict(s) for s in COUNTER["states"]]}
    if not timeouts:
        wf["states"][1] = {"code": "B"}
        wf["transitions"] = [t for t in wf["transitions"] if t["code"] != "B_TIMEOUT"]
    import_document({"format": FORMAT, "workflow": wf})
    create_integration({"code": "FEED", "workflow_code": "COUNTER"})
    return wf


def _events(keys: int, per_key: int, seed: int = 7) -> list[NewEvent]:
    rng = random.Random(seed)
    by_key = [[NewEvent("on_webhook", rng.choice(["next", "next", "back", "jump", "finish"]),
                        f"R{k:04d}", None, {"n": rng.randint(0, 10)},
                        dedupe_key=f"R{k:04d}-{i}")
               for i in range(per_key)] for k in range(keys)]
    # Interleave the keys at random, keeping each key's own order: that is the received order.
    stream = []
    cursors = [0] * keys
    live = list(range(keys))
    while live:
        k = rng.choice(live)
        stream.append(by_key[k][cursors[k]])
        cursors[k] += 1
        if cursors[k] == per_key:
            live.remove(k)
    # Duplicates: some events are delivered again a little later.
    for i in rng.sample(range(len(stream)), len(stream) // 10):
        stream.insert(min(len(stream), i + rng.randint(1, 50)), stream[i])
    return stream


def _assert_exactly_once(wf: dict[str, Any], unique: int) -> None:
    events = db.session.scalars(select(Event).order_by(Event.id)).all()
    assert len(events) == unique
    assert [e.status for e in events if e.status != "processed"] == []
    applied = db.session.execute(
        select(HistoryEntry.event_id, func.count())
        .where(HistoryEntry.event_id.is_not(None), HistoryEntry.from_state.is_not(None))
        .group_by(HistoryEntry.event_id).having(func.count() > 1)).all()
    assert applied == [], "an event was applied twice"
    histories: dict[int, list[Any]] = defaultdict(list)
    for row in db.session.scalars(select(HistoryEntry).order_by(HistoryEntry.id)):
        histories[row.instance_id].append(row)
    check_history_paths(wf, histories)
    registry = current_app.extensions["wfapp"]["registry"]
    expected = serial_replay(wf, events, registry.trigger_types)
    actual = dict(db.session.execute(select(Instance.record_key, Instance.state)).all())
    assert actual == expected


def _wait_until(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("timed out waiting")


def _pending() -> int:
    db.session.rollback()
    return db.session.scalar(select(func.count()).select_from(Event)
                             .where(Event.status == "pending"))


def test_burst_worker_processes_an_import(rq_app):
    _setup()
    from wfapp.demo import ORDER_SYNC, SHOP_ORDERS

    import_document(ORDER_SYNC)
    create_integration(dict(SHOP_ORDERS))
    start_run(get_integration("SHOP_ORDERS"), "import",
              [{"key": f"O{i}", "data": {"number": f"O{i}", "total": i}} for i in range(30)],
              "tester")
    run_workers(rq_app.config, 1)
    db.session.rollback()
    states = dict(db.session.execute(select(Instance.record_key, Instance.state)).all())
    assert states["O0"] == "NEW" and states["O1"] == "PENDING" and len(states) == 30
    assert _pending() == 0


def test_sweep_job_fires_timeouts_in_a_worker(rq_app):
    _setup(timeouts=True)
    ingest(get_integration("FEED"), [NewEvent("on_webhook", "next", "T1", None, {})])
    run_workers(rq_app.config, 1)
    db.session.rollback()
    assert db.session.scalar(select(Instance.state)) == "B"
    time.sleep(0.8)  # B times out after 0.0002 h = 0.72 s
    from wfapp.queue import get_queue

    get_queue().enqueue("wfapp.jobs.sweep")
    run_workers(rq_app.config, 1)
    db.session.rollback()
    instance = db.session.scalar(select(Instance))
    assert (instance.state, instance.last_trigger) == ("A", "timeout")


def test_redis_flushed_with_events_pending(rq_app):
    wf = _setup()
    stream = _events(40, 5)
    ingest(get_integration("FEED"), stream)
    redis.Redis.from_url(rq_app.config["REDIS_URL"]).flushdb()  # the queued job is gone
    run_workers(rq_app.config, 1)
    assert _pending() == 200
    from wfapp.queue import get_queue

    get_queue().enqueue("wfapp.jobs.sweep")
    run_workers(rq_app.config, 1)
    assert _pending() == 0
    _assert_exactly_once(wf, 200)


def test_worker_killed_mid_batch(rq_app):
    wf = _setup()
    stream = _events(300, 20, seed=3)
    ingest(get_integration("FEED"), stream, kick=False)
    from wfapp.queue import get_queue

    get_queue().kick()
    worker = start_worker(rq_app.config, burst=True)
    # Kill as soon as the first batch has committed: on a slow machine the worker may hold its
    # lease for a while before anything is applied, so a fixed sleep can land too early.
    deadline = time.monotonic() + 60
    while _pending() == 6000 and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)
    left = _pending()
    assert 0 < left < 6000, f"the kill should land while work remains ({left} pending)"
    get_queue().enqueue("wfapp.jobs.sweep")  # re-queues the orphaned pending events
    run_workers(rq_app.config, 1)
    assert _pending() == 0
    _assert_exactly_once(wf, 6000)


@pytest.mark.postgres
def test_exactly_once_with_four_workers(rq_app):
    wf = _setup()
    stream = _events(500, 10, seed=11)
    workers = [start_worker(rq_app.config, burst=False) for _ in range(4)]
    try:
        integration = get_integration("FEED")
        for start in range(0, len(stream), 250):
            ingest(integration, stream[start:start + 250])
        _wait_until(lambda: _pending() == 0, timeout=180)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=30)
    _assert_exactly_once(wf, 5000)


def test_sweeps_at_once_fire_each_timeout_once(rq_app):
    _setup(timeouts=True)
    integration = get_integration("FEED")
    ingest(integration, [NewEvent("on_webhook", "next", f"S{i}", None, {})
                         for i in range(1500)], kick=False)
    from wfapp.services.processing import process_pending

    process_pending(time_budget=120)
    assert db.session.scalar(select(func.count()).select_from(Instance)
                             .where(Instance.state == "B")) == 1500
    time.sleep(0.8)  # every B timer (0.72 s) is now due
    import threading

    from wfapp.services.timeouts import fire_due_timeouts

    barrier = threading.Barrier(3)
    counts: list[int] = []

    def sweep() -> None:
        with rq_app.app_context():
            barrier.wait()
            counts.append(fire_due_timeouts(batch_size=40, time_budget=60))
            db.session.remove()

    threads = [threading.Thread(target=sweep) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(counts) == 1500 and len(counts) == 3
    db.session.rollback()
    fired = db.session.execute(
        select(HistoryEntry.instance_id, func.count()).where(HistoryEntry.trigger_type ==
                                                             "timeout")
        .group_by(HistoryEntry.instance_id)).all()
    assert len(fired) == 1500 and {count for _, count in fired} == {1}
    assert db.session.scalar(select(func.count()).select_from(Instance)
                             .where(Instance.state == "A")) == 1500


def test_sigterm_finishes_the_batch_and_releases_the_lease(rq_app):
    """A worker told to stop mid-backlog ends after its batch, says so, and leaves no lease."""
    wf = _setup()
    ingest(get_integration("FEED"), _events(300, 20, seed=5), kick=False)
    from wfapp.models import Lease
    from wfapp.queue import get_queue

    get_queue().kick()
    # A budget far longer than the backlog takes: only the signal can end the job early.
    worker = start_worker(rq_app.config, burst=False, WFAPP_JOB_TIME_BUDGET="600",
                          WFAPP_EVENT_BATCH_SIZE="50")
    try:
        deadline = time.monotonic() + 60
        while _pending() == 6000 and time.monotonic() < deadline:
            time.sleep(0.005)
        worker.send_signal(signal.SIGTERM)
        out, _ = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=10)
    assert worker.returncode == 0, out
    lines = [line for line in out.splitlines() if "stopped on SIGTERM" in line]
    assert len(lines) == 1 and "partition leases released" in lines[0], out
    left = _pending()
    assert 0 < left < 6000, f"the worker should stop with work left ({left} pending)"
    db.session.rollback()
    held = db.session.scalars(select(Lease.name).where(Lease.owner != "")).all()
    assert held == [], f"leases still held after a graceful stop: {held}"
    # Nothing half-done: every event is either applied once or still pending.
    run_workers(rq_app.config, 1)
    assert _pending() == 0
    _assert_exactly_once(wf, 6000)


@pytest.mark.slow
def test_a_worker_that_loses_redis_under_a_job_carries_on_once_it_is_back(rq_app, tmp_path):
    """RQ ends its loop when Redis goes away while a job runs; the worker process waits for
    Redis and takes jobs again, so events stored meanwhile do not wait for a restart."""
    import subprocess
    import sys
    from pathlib import Path
    from urllib.parse import urlsplit

    from rq import Queue

    from tests.services import ROOT, TcpProxy, worker_env

    url = urlsplit(rq_app.config["REDIS_URL"])
    proxy = TcpProxy(url.hostname or "127.0.0.1", url.port or 6379)
    proxy.start()
    through = url._replace(netloc=f"127.0.0.1:{proxy.port}").geturl()
    flask = str(Path(sys.executable).parent / "flask")
    worker = subprocess.Popen(
        [flask, "--app", "wfapp", "worker", "--no-schedules"], cwd=str(ROOT),
        env=worker_env({**rq_app.config, "REDIS_URL": through}), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    direct = Queue("wfapp", connection=redis.Redis.from_url(rq_app.config["REDIS_URL"]))
    marker, source = tmp_path / "after", tmp_path / "source"
    source.write_text("x")
    try:
        job = direct.enqueue("time.sleep", 3)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and job.get_status(refresh=True) != "started":
            time.sleep(0.1)
        proxy.stop()  # Redis goes away while the job sleeps
        time.sleep(5)
        proxy.start()
        direct.enqueue("shutil.copyfile", str(source), str(marker))
        while time.monotonic() < deadline and not marker.exists() and worker.poll() is None:
            time.sleep(0.2)
        alive = worker.poll() is None
    finally:
        proxy.stop()
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=60)
    assert alive and marker.exists(), output
    assert "carrying on once Redis answers" in output
