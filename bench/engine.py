"""wfapp engine benchmark on PostgreSQL + Redis; prints its figures and the baselines.

    python bench/engine.py [--events 20000] [--instances 2000] [--workers 2]
                           [--sweep-instances 1000000] [--sweep-due 100000]
                           [--only all|throughput|sweep] [--profile FILE]

(a) wfapp: N stored events for M instances, K `flask --app wfapp worker` processes, measured
    from the first job queued until the last transition is committed;
(b) baseline: one RQ job per event, same K workers;
(c) ceiling: the same dedupe + update + history transaction, issued as raw SQL by K processes;
plus the pure engine's decision rate and the timeout sweep over a large instance table.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STATES = [f"S{i}" for i in range(10)]


def ring_workflow(timeout_state: bool = False) -> dict:
    """Ten states in a ring; every `next` event moves an instance one step; 3 conditions each."""
    transitions = []
    for i, state in enumerate(STATES):
        transitions.append({
            "code": f"N{i}", "from_state": state, "to_state": STATES[(i + 1) % 10],
            "trigger_type": "on_webhook", "priority": 10,
            "trigger_config": {"event_filter": "next"},
            "conditions": [
                {"field": "event.total", "operator": "gt", "value": 0},
                {"field": "event.status", "operator": "in", "value": ["paid", "open"]},
                {"field": "event.country", "operator": "eq", "value": "DE"},
            ]})
        transitions.append({
            "code": f"X{i}", "from_state": state, "to_state": STATES[(i + 5) % 10],
            "trigger_type": "on_webhook", "priority": 20,
            "trigger_config": {"event_filter": "skip"},
            "conditions": [{"field": "event.total", "operator": "lt", "value": 0},
                           {"field": "event.status", "operator": "eq", "value": "x"},
                           {"field": "record.flag", "operator": "exists"}]})
    transitions.append({"code": "TIMEOUT", "from_state": "S0", "to_state": "S1",
                        "trigger_type": "manual"})
    states = [{"code": s, "is_initial": s == "S0"} for s in STATES]
    if timeout_state:
        states[0].update({"timeout_hours": 1, "on_timeout_transition": "TIMEOUT"})
    return {"format": "wfapp.workflow/v1", "workflow": {
        "code": "BENCH", "initial_state": "S0", "states": states, "transitions": transitions}}


def make_app(db_url: str, redis_url: str):
    """The app the benchmark drives, on its own database."""
    from wfapp import create_app

    return create_app({"TESTING": True, "SECRET_KEY": "bench", "SQLALCHEMY_DATABASE_URI": db_url,
                       "REDIS_URL": redis_url, "INSTANCE_PATH": "/tmp/wfapp-bench"})


def reset_database(app) -> None:
    """Fresh schema through the real migrations."""
    from flask_migrate import upgrade
    from sqlalchemy import text

    from wfapp.extensions import db

    with db.engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    upgrade()


def worker_env(db_url: str, redis_url: str) -> dict:
    """Environment for worker subprocesses."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WFAPP_")}
    env.update({"WFAPP_SECRET_KEY": "bench", "WFAPP_SQLALCHEMY_DATABASE_URI": db_url,
                "WFAPP_REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)})
    return env


def start_workers(count: int, env: dict, schedules: bool = True,
                  log_dir: str | None = None) -> list[subprocess.Popen]:
    """Start idle workers and give them time to connect (their output to `log_dir`/worker-N.log
    when given)."""
    flask = str(Path(sys.executable).parent / "flask")
    command = [flask, "--app", "wfapp", "worker"] + ([] if schedules else ["--no-schedules"])
    procs = []
    for number in range(count):
        out: Any = subprocess.DEVNULL
        if log_dir:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            out = (Path(log_dir) / f"worker-{number}.log").open("wb")
        procs.append(subprocess.Popen(command, cwd=str(ROOT), env=env, stdout=out,
                                      stderr=subprocess.STDOUT))
    time.sleep(3.0)
    return procs


def stop_workers(procs: list[subprocess.Popen]) -> None:
    """Stop workers (warm shutdown)."""
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def seed_instances(app, instances: int) -> None:
    """One instance per key, created through the engine (an init event each)."""
    from wfapp.queue import get_queue
    from wfapp.services.definitions import import_document
    from wfapp.services.events import NewEvent, ingest
    from wfapp.services.integrations import create_integration, get_integration
    from wfapp.services.processing import process_pending

    import_document(ring_workflow())
    create_integration({"code": "BENCH", "workflow_code": "BENCH"})
    integration = get_integration("BENCH")
    ingest(integration, [NewEvent("on_webhook", "init", f"K{i}", None, {})
                         for i in range(instances)], kick=False)
    process_pending(time_budget=600)
    get_queue().connection.flushdb()


def store_events(app, events: int, instances: int, seed: int) -> None:
    """N `next` events spread over the instances, stored without queueing anything."""
    from wfapp.services.events import NewEvent, ingest
    from wfapp.services.integrations import get_integration

    rng = random.Random(seed)
    integration = get_integration("BENCH")
    batch = []
    for i in range(events):
        batch.append(NewEvent("on_webhook", "next", f"K{rng.randrange(instances)}", None,
                              {"total": 10, "status": "paid", "country": "DE"},
                              dedupe_key=f"e{seed}-{i}"))
        if len(batch) == 5000:
            ingest(integration, batch, kick=False)
            batch = []
    if batch:
        ingest(integration, batch, kick=False)


def wait_processed(app, expected_pending: int = 0, timeout: float = 900) -> float:
    """Seconds until no event is pending."""
    from sqlalchemy import func, select

    from wfapp.extensions import db
    from wfapp.models import Event

    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        db.session.rollback()
        pending = db.session.scalar(select(func.count()).select_from(Event)
                                    .where(Event.status == "pending"))
        if pending <= expected_pending:
            return time.perf_counter() - start
        time.sleep(0.05)
    raise RuntimeError("events did not finish in time")


def transitions_in_history(app) -> int:
    """Transitions fired by events (history rows that moved an instance)."""
    from sqlalchemy import func, select

    from wfapp.extensions import db
    from wfapp.models import HistoryEntry

    return db.session.scalar(select(func.count()).select_from(HistoryEntry)
                             .where(HistoryEntry.from_state.is_not(None)))


def bench_wfapp(app, args, env) -> float:
    """(a): batched processing by K workers."""
    from wfapp.queue import get_queue

    get_queue().connection.flushdb()
    store_events(app, args.events, args.instances, seed=1)
    before = transitions_in_history(app)
    # No schedules: the sweep, queued as a worker starts, would kick processing during the
    # warm-up, before the clock starts (the kick below starts it; jobs fan out by themselves).
    procs = start_workers(args.workers, env, schedules=False)
    try:
        start = time.perf_counter()
        get_queue().kick()
        wait_processed(app)
        elapsed = time.perf_counter() - start
    finally:
        stop_workers(procs)
    fired = transitions_in_history(app) - before
    return fired / elapsed


def bench_one_job_per_event(app, args, env) -> float:
    """(b): the same events, one RQ job each."""
    from sqlalchemy import select

    from wfapp.extensions import db
    from wfapp.models import Event
    from wfapp.queue import get_queue

    # Nothing left from (a) — no queued batch job, no kick mark — may take this run's work.
    get_queue().connection.flushdb()
    store_events(app, args.events, args.instances, seed=2)
    ids = list(db.session.scalars(select(Event.id).where(Event.status == "pending")
                                  .order_by(Event.id)))
    queue = get_queue().queue
    before = transitions_in_history(app)
    # No schedules: the sweep would queue the batched job and take the work over.
    procs = start_workers(args.workers, env, schedules=False)
    try:
        start = time.perf_counter()
        with queue.connection.pipeline() as pipe:
            for event_id in ids:
                queue.enqueue("bench.baseline_jobs.process_one", event_id, result_ttl=0,
                              pipeline=pipe)
            pipe.execute()
        wait_processed(app)
        elapsed = time.perf_counter() - start
    finally:
        stop_workers(procs)
    return (transitions_in_history(app) - before) / elapsed


def _raw_worker(dsn: str, items: list[tuple[int, int]], queue) -> None:
    import psycopg

    with psycopg.connect(dsn) as conn:
        for event_id, instance_id in items:
            with conn.transaction():
                cur = conn.execute("UPDATE event SET status = 'processed', result = 'raw', "
                                   "processed_at = now() WHERE id = %s AND status = 'pending'",
                                   (event_id,))
                if cur.rowcount != 1:
                    continue
                row = conn.execute("SELECT state, version FROM instance WHERE id = %s",
                                   (instance_id,)).fetchone()
                state = f"S{(int(row[0][1:]) + 1) % 10}"
                conn.execute("UPDATE instance SET state = %s, version = version + 1, "
                             "entered_state_at = now(), last_trigger = 'on_webhook', "
                             "last_transition = 'N' WHERE id = %s AND version = %s",
                             (state, instance_id, row[1]))
                conn.execute("INSERT INTO history (instance_id, at, from_state, to_state, "
                             "transition, trigger_type, actor, event_id, notes) VALUES "
                             "(%s, now(), %s, %s, 'N', 'on_webhook', 'raw', %s, '')",
                             (instance_id, row[0], state, event_id))
    queue.put(len(items))


def _pending_shards(app, args, seed: int) -> tuple[list, int]:
    """Store N events; split (event id, instance id) pairs so an instance stays in one shard."""
    from sqlalchemy import select

    from wfapp.extensions import db
    from wfapp.models import Event, Instance

    store_events(app, args.events, args.instances, seed=seed)
    rows = db.session.execute(select(Event.id, Instance.id).join(
        Instance, (Instance.integration_id == Event.integration_id)
        & (Instance.record_key == Event.record_key)).where(Event.status == "pending")
        .order_by(Event.id)).all()
    shards: list[list[tuple[int, int]]] = [[] for _ in range(args.workers)]
    for event_id, instance_id in rows:  # one instance always goes to the same process
        shards[instance_id % args.workers].append((event_id, instance_id))
    db.session.remove()
    db.engine.dispose()
    return shards, len(rows)


def _run_shards(target, args, shards: list) -> float:
    """Run `target(dsn, shard, queue)` in K forked processes; return the seconds it took."""
    dsn = args.database.replace("postgresql+psycopg://", "postgresql://")
    ctx = multiprocessing.get_context("fork")
    done = ctx.Queue()
    procs = [ctx.Process(target=target, args=(dsn, shard, done)) for shard in shards]
    start = time.perf_counter()
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    elapsed = time.perf_counter() - start
    failed = [proc.exitcode for proc in procs if proc.exitcode != 0]
    if failed:
        raise RuntimeError(f"{len(failed)} benchmark process(es) failed: no figure")
    return elapsed


def bench_raw_sql(app, args) -> float:
    """(c): per-event dedupe + update + history transactions in raw SQL, K processes."""
    shards, count = _pending_shards(app, args, seed=3)
    return count / _run_shards(_raw_worker, args, shards)


BATCH = 200


def _batch_worker(dsn: str, items: list[tuple[int, int]], queue) -> None:
    """(d): the statements of (c), one transaction per batch of 200 events."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        for start in range(0, len(items), BATCH):
            with conn.transaction():
                for event_id, instance_id in items[start:start + BATCH]:
                    cur = conn.execute("UPDATE event SET status = 'processed', result = 'raw', "
                                       "processed_at = now() WHERE id = %s AND "
                                       "status = 'pending'", (event_id,))
                    if cur.rowcount != 1:
                        continue
                    row = conn.execute("SELECT state, version FROM instance WHERE id = %s",
                                       (instance_id,)).fetchone()
                    state = f"S{(int(row[0][1:]) + 1) % 10}"
                    conn.execute("UPDATE instance SET state = %s, version = version + 1, "
                                 "entered_state_at = now(), last_trigger = 'on_webhook', "
                                 "last_transition = 'N' WHERE id = %s AND version = %s",
                                 (state, instance_id, row[1]))
                    conn.execute("INSERT INTO history (instance_id, at, from_state, to_state, "
                                 "transition, trigger_type, actor, event_id, notes) VALUES "
                                 "(%s, now(), %s, %s, 'N', 'on_webhook', 'raw', %s, '')",
                                 (instance_id, row[0], state, event_id))
    queue.put(len(items))


def _set_worker(dsn: str, items: list[tuple[int, int]], queue) -> None:
    """(e): set-based SQL per batch of 200: three statements, one transaction.

    One `UPDATE event … RETURNING` claims the batch, one `UPDATE instance … FROM (SELECT …
    FOR UPDATE)` moves every instance it touches by as many steps as it has events (with the
    version check), one multi-row INSERT writes every history row.
    """
    import psycopg

    with psycopg.connect(dsn) as conn:
        for start in range(0, len(items), BATCH):
            batch = items[start:start + BATCH]
            owner = dict(batch)
            with conn.transaction():
                claimed = [r[0] for r in conn.execute(
                    "UPDATE event SET status = 'processed', result = 'raw', processed_at = now() "
                    "WHERE id = ANY(%s) AND status = 'pending' RETURNING id",
                    ([e for e, _ in batch],))]
                steps: dict[int, list[int]] = {}
                for event_id in sorted(claimed):
                    steps.setdefault(owner[event_id], []).append(event_id)
                ids = sorted(steps)
                moved = conn.execute(
                    "UPDATE instance SET state = 'S' || ((substr(cur.state, 2)::int + n.k) %% 10), "
                    "version = cur.version + 1, entered_state_at = now(), "
                    "last_trigger = 'on_webhook', last_transition = 'N' "
                    "FROM (SELECT id, state, version FROM instance WHERE id = ANY(%s) "
                    "      ORDER BY id FOR UPDATE) cur, "
                    "     unnest(%s::bigint[], %s::int[]) AS n(id, k) "
                    "WHERE instance.id = cur.id AND n.id = cur.id "
                    "AND instance.version = cur.version RETURNING instance.id, cur.state",
                    (ids, ids, [len(steps[i]) for i in ids])).fetchall()
                rows: list[tuple] = []
                for instance_id, before in moved:
                    state = int(before[1:])
                    for event_id in steps[instance_id]:
                        rows.append((instance_id, f"S{state}", f"S{(state + 1) % 10}", event_id))
                        state = (state + 1) % 10
                conn.execute(
                    "INSERT INTO history (instance_id, at, from_state, to_state, transition, "
                    "trigger_type, actor, event_id, notes) SELECT i, now(), f, t, 'N', "
                    "'on_webhook', 'raw', e, '' FROM unnest(%s::bigint[], %s::text[], "
                    "%s::text[], %s::bigint[]) AS r(i, f, t, e)",
                    ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                     [r[3] for r in rows]))
    queue.put(len(items))


def bench_batch_sql(app, args) -> float:
    """(d): the statements of (c), one transaction per batch of 200, K processes."""
    shards, count = _pending_shards(app, args, seed=4)
    return count / _run_shards(_batch_worker, args, shards)


def bench_set_sql(app, args) -> float:
    """(e): set-based SQL, three statements per batch of 200, K processes."""
    shards, count = _pending_shards(app, args, seed=5)
    return count / _run_shards(_set_worker, args, shards)


def _receiver(delay: float):
    """A threaded HTTP server on 127.0.0.1 that answers every request after `delay` seconds."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            time.sleep(delay)
            body = json.dumps({"id": "R-1"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


ACTION_ENV = {"WFAPP_ACTION_INTERVAL": "0.2", "WFAPP_ACTION_CONCURRENCY_PER_INTEGRATION": "16",
              "WFAPP_ACTION_THREADS": "16"}


def _delivery_count(status: list[str]) -> int:
    from sqlalchemy import func, select

    from wfapp.extensions import db
    from wfapp.models import ActionDelivery

    db.session.rollback()
    return db.session.scalar(select(func.count()).select_from(ActionDelivery)
                             .where(ActionDelivery.status.in_(status)))


def _wait_drained(timeout: float = 600) -> int:
    """Wait until no delivery is pending or running; return the backlog left (0 = drained)."""
    deadline = time.monotonic() + timeout
    while _delivery_count(["pending", "running"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return _delivery_count(["pending", "running"])


def _follow_latest() -> None:
    """Move the bench instances onto the workflow's latest version (an import makes a new one;
    instances keep the version they started on, so without this no action would run)."""
    from sqlalchemy import text

    from wfapp.extensions import db

    with db.engine.begin() as conn:
        conn.execute(text("UPDATE instance SET workflow_version = w.latest_version "
                          "FROM workflow w WHERE w.id = instance.workflow_id "
                          "AND w.code = 'BENCH'"))


def bench_with_actions(app, args, env) -> tuple[float, float, int, float, int]:
    """(f): (a) with a set_variable and an http_request (10 ms receiver) on every transition.

    Returns transitions/s, deliveries/s (from the first job until the outbox is drained) and
    the backlog left after waiting for it; then the delivery capacity on its own: as many
    deliveries as (f) made, put back as due, drained by fresh workers (deliveries/s, backlog).
    """
    from sqlalchemy import text

    from wfapp.extensions import db
    from wfapp.queue import get_queue
    from wfapp.services.definitions import import_document

    server = _receiver(0.010)
    url = f"http://127.0.0.1:{server.server_address[1]}/orders/{{record_key}}"
    document = ring_workflow()
    for t in document["workflow"]["transitions"]:
        if t["code"].startswith("N"):
            t["actions"] = [
                {"type": "set_variable", "config": {"values": {"last": "{record_key}"}}},
                {"id": "call", "type": "http_request",
                 "config": {"url": url, "body": {"key": "{record_key}"}, "max_attempts": 3}}]
    import_document(document, replace=True)
    _follow_latest()
    get_queue().connection.flushdb()
    store_events(app, args.events, args.instances, seed=6)
    before = transitions_in_history(app)
    delivered_before = _delivery_count(["succeeded", "failed"])
    procs = start_workers(args.workers, {**env, **ACTION_ENV})
    try:
        start = time.perf_counter()
        get_queue().kick()
        wait_processed(app)
        moved = time.perf_counter() - start
        fired = transitions_in_history(app) - before
        backlog = _wait_drained()
        drained = time.perf_counter() - start
        delivered = _delivery_count(["succeeded", "failed"]) - delivered_before
    finally:
        stop_workers(procs)
    try:
        # The same deliveries again, all due at once: how fast the outbox drains by itself.
        columns = ("instance_id, workflow_id, integration_id, alert_id, transition, position, "
                   "action_id, type, config, context, max_attempts, request, event_id")
        with db.engine.begin() as conn:
            again = conn.execute(text(
                f"INSERT INTO action_delivery ({columns}, status, attempts, next_attempt_at, "
                "leased_by, idempotency_key, last_error, created_at, updated_at) "
                f"SELECT {columns}, 'pending', 0, now(), '', md5(random()::text || id::text), "
                "'', now(), now() FROM action_delivery WHERE status = 'succeeded'")).rowcount
        get_queue().connection.flushdb()
        procs = start_workers(args.workers, {**env, **ACTION_ENV})
        try:
            start = time.perf_counter()
            get_queue().enqueue("wfapp.jobs.deliver_actions")
            drain_backlog = _wait_drained()
            drain_rate = again / (time.perf_counter() - start)
            wait_processed(app)  # their outcome events, so the next part starts clean
        finally:
            stop_workers(procs)
    finally:
        server.shutdown()
        import_document(ring_workflow(), replace=True)
        _follow_latest()
    return fired / moved, delivered / drained, backlog, drain_rate, drain_backlog


def bench_decisions(seconds: float = 3.0) -> float:
    """The pure engine: decisions per second on the 10-state, 3-condition workflow."""
    from wfapp.engine import build_context, compile_workflow, select_transition
    from wfapp.plugins import build_registry, get_plugin_manager

    triggers = build_registry(get_plugin_manager()).trigger_types
    workflow = compile_workflow(ring_workflow()["workflow"])
    rng = random.Random(5)
    samples = []
    for _ in range(1000):
        payload = {"total": rng.randint(-5, 50), "status": rng.choice(["paid", "open", "x"]),
                   "country": rng.choice(["DE", "DE", "FR"])}
        event = {"source": "on_webhook", "type": rng.choice(["next", "skip"]),
                 "payload": payload}
        samples.append((rng.choice(STATES), event, payload))
    count = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for state, event, payload in samples:
            context = build_context(payload, {}, {"state": state, "record_key": "k",
                                                  "run_id": None, "vars": {}})
            select_transition(workflow, state, "on_webhook", event, context, triggers)
        count += len(samples)
    return count / (time.perf_counter() - start)


def bench_sweep(app, args) -> tuple[float, int, float]:
    """Fill the instance table and time the sweep: all due timeouts, then one with none due."""
    import psycopg

    from wfapp.extensions import db
    from wfapp.models import utcnow
    from wfapp.services.definitions import import_document
    from wfapp.services.integrations import create_integration
    from wfapp.services.timeouts import fire_due_timeouts

    reset_database(app)
    document = ring_workflow(timeout_state=True)
    document["workflow"]["code"] = "SWEEP"
    import_document(document)
    create_integration({"code": "SWEEP", "workflow_code": "SWEEP"})
    db.session.remove()
    dsn = args.database.replace("postgresql+psycopg://", "postgresql://")
    now = utcnow()
    with psycopg.connect(dsn) as conn:
        wf_id = conn.execute("SELECT id FROM workflow WHERE code = 'SWEEP'").fetchone()[0]
        int_id = conn.execute("SELECT id FROM integration WHERE code = 'SWEEP'").fetchone()[0]
        columns = ("workflow_id, integration_id, record_key, state, active, entered_state_at, "
                   "timeout_due_at, data, vars, version, created_at")
        with conn.cursor().copy(f"COPY instance ({columns}) FROM STDIN") as copy:
            for i in range(args.sweep_instances):
                due = i < args.sweep_due
                entered = now - timedelta(hours=2 if due else 0.5)
                copy.write_row((wf_id, int_id, f"R{i}", "S0", True, entered,
                                entered + timedelta(hours=1), "{}", "{}", 1, entered))
        conn.execute("ANALYZE instance")
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    start = time.perf_counter()
    fired = fire_due_timeouts(time_budget=600)
    elapsed = time.perf_counter() - start
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.profile)
    samples = []
    for _ in range(20):
        t0 = time.perf_counter()
        fire_due_timeouts()
        samples.append(time.perf_counter() - t0)
    samples.sort()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ANALYZE instance")  # as autovacuum would after the sweep's 100,000 moves
    return elapsed, fired, samples[len(samples) // 2] * 1000


def bench_instance_list() -> dict[str, float]:
    """The Workflow Instances page's query on the big table: median ms per page of 50."""
    from wfapp.services.instances import InstanceFilters, list_instances

    cases = {
        "first page, workflow filter": (InstanceFilters(workflow="SWEEP"), 0),
        "page 200 (cursor), workflow filter": (InstanceFilters(workflow="SWEEP"), 200),
        "state + active filters": (InstanceFilters(workflow="SWEEP", state="S1", active=True), 0),
        "record key": (InstanceFilters(record_key="R777777"), 0),
    }
    figures = {}
    for name, (filters, skip) in cases.items():
        cursor = None
        for _ in range(skip):
            _, cursor = list_instances(filters, 50, cursor)
        samples = []
        for _ in range(9):
            start = time.perf_counter()
            list_instances(filters, 50, cursor)
            samples.append((time.perf_counter() - start) * 1000)
        figures[name] = sorted(samples)[4]
    return figures


def add_service_options(parser: argparse.ArgumentParser) -> None:
    """--database and --redis of every bench script (environment overrides, then defaults)."""
    parser.add_argument("--database", default=os.environ.get(
        "WFAPP_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1/wfapp_bench"))
    parser.add_argument("--redis", default=os.environ.get("WFAPP_BENCH_REDIS_URL",
                                                          "redis://127.0.0.1:6379/14"))


def main() -> None:
    """Run every part and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_service_options(parser)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--baseline-events", type=int, default=5000)
    parser.add_argument("--sweep-instances", type=int, default=1_000_000)
    parser.add_argument("--sweep-due", type=int, default=100_000)
    parser.add_argument("--profile", metavar="FILE",
                        help="write cProfile stats of the sweep (all due) to FILE")
    parser.add_argument("--only", choices=["all", "throughput", "actions", "sweep"],
                        default="all", help="actions: (a) and (f) only")
    args = parser.parse_args()

    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres",
                    args.database.rsplit("/", 1)[-1]], stderr=subprocess.DEVNULL, check=False)
    app = make_app(args.database, args.redis)
    env = worker_env(args.database, args.redis)
    print(f"wfapp engine benchmark — {os.cpu_count()} cores, K={args.workers} workers, "
          f"N={args.events} events, M={args.instances} instances")
    with app.app_context():
        decisions = bench_decisions()
        print(f"pure engine decisions:            {decisions:12,.0f} /s  (target ≥ 200,000)")
        if args.only in ("all", "throughput"):
            throughput(app, args, env)
        if args.only == "actions":
            reset_database(app)
            seed_instances(app, args.instances)
            a = bench_wfapp(app, args, env)
            print(f"(a) wfapp batched workers:        {a:12,.0f} transitions/s")
            actions(app, args, env, a)
        if args.only in ("all", "sweep"):
            elapsed, fired, idle_ms = bench_sweep(app, args)
            print(f"timeout sweep: {fired:,} due of {args.sweep_instances:,} fired in "
                  f"{elapsed:.1f} s (target ≤ 20 s); sweep with none due: {idle_ms:.1f} ms "
                  "(median of 20, target ≤ 10 ms)")
            for name, ms in bench_instance_list().items():
                print(f"instances list on {args.sweep_instances:,} rows, {name}: {ms:.1f} ms")


def throughput(app, args, env) -> None:
    """(a), (b) and (c) on the same data shape."""
    reset_database(app)
    seed_instances(app, args.instances)
    a = bench_wfapp(app, args, env)
    print(f"(a) wfapp batched workers:        {a:12,.0f} transitions/s  (target ≥ 2,000)")
    events = args.events
    args.events = args.baseline_events
    b = bench_one_job_per_event(app, args, env)
    print(f"(b) one RQ job per event:         {b:12,.0f} transitions/s  "
          f"({args.baseline_events} events)")
    args.events = events
    c = bench_raw_sql(app, args)
    print(f"(c) raw SQL, one txn per event:   {c:12,.0f} transitions/s")
    print(f"    a / c = {a / c:.2f} (target ≥ 0.5)   a / b = {a / b:.1f} (target ≥ 10)")
    d = bench_batch_sql(app, args)
    print(f"(d) raw SQL, one txn per 200:     {d:12,.0f} transitions/s")
    e = bench_set_sql(app, args)
    print(f"(e) set-based SQL per 200:        {e:12,.0f} transitions/s")
    print(f"    a / d = {a / d:.2f}   a / e = {a / e:.2f} (goal ≥ 0.5)")
    actions(app, args, env, a)


def actions(app, args, env, a: float) -> None:
    """(f) beside the (a) of the same run."""
    f_rate, deliveries, backlog, drain_rate, drain_backlog = bench_with_actions(app, args, env)
    print(f"(f) with set_variable + http_request (10 ms receiver): {f_rate:,.0f} transitions/s "
          f"(f / a = {f_rate / a:.2f}, goal ≥ 0.7); {deliveries:,.0f} deliveries/s "
          f"(goal ≥ 300); outbox backlog after the run: {backlog}")
    print(f"    outbox drain, the same deliveries all due at once: {drain_rate:,.0f} "
          f"deliveries/s; backlog after it: {drain_backlog}")


if __name__ == "__main__":
    main()
