"""Lists that scale: the Workflow Instances and Events lists on 1,000,000 instances and
5,000,000 events (PostgreSQL), each query's server time next to the bare SQL of the same query.

    python bench/lists.py [--instances 1000000] [--events 5000000] [--runs 9] [--keep]
                          [--bulk 0]

It creates (and empties) the database `wfapp_bench_lists` unless `--database` says otherwise,
loads the rows with INSERT ... SELECT FROM generate_series (bounded by the counts given; the load
is skipped with --keep when the tables already hold them), runs ANALYZE, then for each list:

- page: `GET` of the page through the Flask test client (routing, session, the list and the
  count queries, template) — the server time a person waits for;
- service: the service calls the page makes (list_page + count), with the ORM;
- bare SQL: the very statements the service sent (captured from SQLAlchemy), re-executed on the
  raw psycopg cursor with the same parameters — the floor for those queries.

Median of `--runs` runs each, after one warm-up. Goal: page ≤ 100 ms.
`--bulk N` also runs a bulk Advance over N instances in this process (job slices back to back)
and prints its rate.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORKFLOW = {"format": "wfapp.workflow/v1", "workflow": {
    "code": "LISTS", "initial_state": "NEW",
    "states": [{"code": "NEW", "is_initial": True}, {"code": "HOLD"}, {"code": "WAIT"},
               {"code": "DONE", "is_final": True}],
    "transitions": [
        {"code": "HOLD", "from_state": "NEW", "to_state": "HOLD", "trigger_type": "on_import",
         "capture": {"ref": "record.ref"}},
        {"code": "RELEASE", "from_state": "HOLD", "to_state": "DONE",
         "trigger_type": "manual"},
        {"code": "WAITED", "from_state": "WAIT", "to_state": "DONE", "trigger_type": "manual"},
    ]}}


def make_app(db_url: str) -> Any:
    """The app the benchmark drives, on its own database (embedded queue: no Redis needed)."""
    from wfapp import create_app

    return create_app({"TESTING": True, "SECRET_KEY": "bench", "SQLALCHEMY_DATABASE_URI": db_url,
                       "WTF_CSRF_ENABLED": False, "PLUGINS": [], "LOAD_ENTRY_POINTS": False,
                       "INSTANCE_PATH": "/tmp/wfapp-bench-lists"})


def load(instances: int, events: int) -> None:
    """A fresh schema through the migrations, then the rows in bulk."""
    from flask_migrate import upgrade
    from sqlalchemy import text

    from wfapp.extensions import db
    from wfapp.services.definitions import import_document
    from wfapp.services.integrations import create_integration
    from wfapp.services.users import create_user

    with db.engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    upgrade()
    import_document(WORKFLOW)
    for code in ("SHOP", "ERP"):
        create_integration({"code": code, "workflow_code": "LISTS"})
    create_user("bench", "bench-password-123", "viewer")
    started = time.monotonic()
    with db.engine.begin() as conn:
        conn.execute(text("SET LOCAL synchronous_commit = off"))
        # 40% active (NEW 10%, HOLD 20%, WAIT 10%), 60% finished; two integrations.
        conn.execute(text("""
            INSERT INTO instance (workflow_id, integration_id, record_key, state, active,
                entered_state_at, data, vars, last_trigger, last_transition, version,
                created_at)
            SELECT w.id, CASE WHEN i % 3 = 0 THEN erp.id ELSE shop.id END,
                   'R' || lpad(i::text, 7, '0'),
                   (ARRAY['NEW','HOLD','HOLD','WAIT','DONE','DONE','DONE','DONE','DONE','DONE'])
                       [1 + i % 10],
                   i % 10 < 4,
                   now() - make_interval(secs => (i::bigint * 7919) % 8640000),
                   '{}'::json, json_build_object('ref', 'REF-' || i),
                   'on_import', CASE WHEN i % 10 = 0 THEN NULL ELSE 'HOLD' END, 1,
                   now() - interval '100 days'
            FROM generate_series(1, :n) AS i,
                 (SELECT id FROM workflow WHERE code = 'LISTS') AS w,
                 (SELECT id FROM integration WHERE code = 'SHOP') AS shop,
                 (SELECT id FROM integration WHERE code = 'ERP') AS erp
        """), {"n": instances})
    print(f"loaded {instances:,} instances in {time.monotonic() - started:.0f} s", flush=True)
    started = time.monotonic()
    step = 1_000_000
    for first in range(1, events + 1, step):
        with db.engine.begin() as conn:
            conn.execute(text("SET LOCAL synchronous_commit = off"))
            conn.execute(text("""
                INSERT INTO event (integration_id, source, type, record_key, payload,
                    dedupe_key, partition, received_at, status, result, instance_id, attempts)
                SELECT CASE WHEN i % 3 = 0 THEN erp.id ELSE shop.id END,
                       (ARRAY['on_import','on_webhook','manual','on_import'])[1 + i % 4],
                       'record', 'R' || lpad((1 + i % :m)::text, 7, '0'),
                       '{"n": 1}'::json, 'd' || i, i % 64,
                       now() - make_interval(secs => (:total - i)),
                       (ARRAY['processed','processed','processed','processed','processed',
                              'processed','processed','skipped','failed','processed'])
                           [1 + i % 10],
                       'fired HOLD', 1 + i % :m, 1
                FROM generate_series(:a, :b) AS i,
                     (SELECT id FROM integration WHERE code = 'SHOP') AS shop,
                     (SELECT id FROM integration WHERE code = 'ERP') AS erp
            """), {"a": first, "b": min(events, first + step - 1), "m": instances,
                   "total": events})
        print(f"  events {min(events, first + step - 1):,}", flush=True)
    print(f"loaded {events:,} events in {time.monotonic() - started:.0f} s", flush=True)
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE instance"))
        conn.execute(text("VACUUM ANALYZE event"))


class Capture:
    """The statements SQLAlchemy sends while active, with their parameters."""

    def __init__(self, engine: Any) -> None:
        from sqlalchemy import event

        self.engine, self.statements, self.on = engine, [], False
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
              executemany: bool) -> None:
        if self.on:
            self.statements.append((statement, parameters))


def _median_ms(fn: Any, runs: int) -> float:
    fn()  # warm-up (plans, caches)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def cases() -> list[tuple[str, str, Any]]:
    """(name, page URL, service calls) of every list measured."""
    from wfapp.services import events as ev
    from wfapp.services import instance_list as il

    def instances(url_args: str, sort: str | None = None, cursor_from: int = 0, **kw: Any
                  ) -> tuple[str, Any]:
        filters = il.InstanceFilters(**kw)

        def call() -> None:
            cursor = None
            for _ in range(cursor_from):
                cursor = il.list_page(filters, 50, cursor, sort).next
            il.list_page(filters, 50, cursor, sort)
            il.count(filters)
        return f"/instances/?{url_args}", call

    def events(url_args: str, **kw: Any) -> tuple[str, Any]:
        filters = ev.EventFilters(**kw)

        def call() -> None:
            ev.list_events_page(filters, 50)
            ev.count_events(filters)
        return f"/events/?{url_args}", call

    out = [
        ("instances: default (active, longest in state)", *instances("", active=True)),
        ("instances: all, sort record key desc", *instances(
            "active=all&sort=-record_key", sort="-record_key")),
        ("instances: active, sort state", *instances("sort=state", sort="state",
                                                     active=True)),
        ("instances: active, sort last transition", *instances(
            "sort=last_transition", sort="last_transition", active=True)),
        ("instances: workflow + state HOLD", *instances(
            "workflow=LISTS&state=HOLD", workflow="LISTS", state="HOLD", active=True)),
        ("instances: integration ERP, all", *instances(
            "integration=ERP&active=all", integration="ERP")),
        ("instances: key prefix R00012", *instances(
            "active=all&record_key_prefix=R00012", record_key_prefix="R00012")),
        ("instances: var.ref = REF-777777", *instances(
            "active=all&var_name=ref&var_value=REF-777777", vars={"ref": "REF-777777"})),
        ("events: newest first", *events("")),
        ("events: failed", *events("status=failed", status="failed")),
        ("events: integration ERP + source manual", *events(
            "integration=ERP&source=manual", integration="ERP", source="manual")),
    ]
    return out


def measure(app: Any, runs: int) -> list[tuple[str, float, float, float]]:
    """(name, page ms, service ms, bare SQL ms) per case."""
    from wfapp.extensions import db

    client = app.test_client()
    client.post("/auth/login", data={"username": "bench", "password": "bench-password-123"})
    capture = Capture(db.engine)
    rows = []
    for name, url, call in cases():
        def page(url: str = url) -> None:
            response = client.get(url)
            assert response.status_code == 200, (url, response.status_code)
        page_ms = _median_ms(page, runs)
        service_ms = _median_ms(call, runs)
        capture.statements.clear()
        capture.on = True
        call()
        capture.on = False
        statements = list(capture.statements)
        db.session.rollback()
        raw = db.engine.raw_connection()
        try:
            cursor = raw.cursor()

            def bare(statements: list[Any] = statements, cursor: Any = cursor) -> None:
                for statement, parameters in statements:
                    cursor.execute(statement, parameters)
                    cursor.fetchall()
            sql_ms = _median_ms(bare, runs)
            raw.rollback()
        finally:
            raw.close()
        rows.append((name, page_ms, service_ms, sql_ms))
        print(f"{name:<48} {page_ms:>8.1f} {service_ms:>9.1f} {sql_ms:>9.1f}", flush=True)
    return rows


def bulk_rate(app: Any, count: int) -> None:
    """A bulk Advance over the HOLD instances, run slice after slice in this process and
    stopped (cancelled) once `count` are handled: the rate of the operation's job."""
    from wfapp.extensions import db
    from wfapp.services import bulk
    from wfapp.services.instance_list import InstanceFilters

    plan = bulk.plan("instances", "advance", InstanceFilters(state="HOLD"),
                     {"transition": "RELEASE"}, False, "bench")
    op = plan.operation_id
    started = time.monotonic()
    slices = 0
    while True:
        operation = bulk.get_operation(op)
        db.session.refresh(operation)
        if operation.done + operation.failed >= count:
            bulk.cancel(op, "bench")
            break
        slices += 1
        if bulk.run(op, time_budget=5):
            break
    elapsed = time.monotonic() - started
    operation = bulk.get_operation(op)
    db.session.refresh(operation)
    print(f"bulk advance: {operation.done:,} done, {operation.failed:,} refused of "
          f"{plan.matched:,} matched in {elapsed:.0f} s ({operation.done / elapsed:,.0f} "
          f"instances/s, {slices} job slices of 5 s)")


def main() -> None:
    """Load (unless kept), measure, print the table."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default=os.environ.get(
        "WFAPP_BENCH_DATABASE_URL",
        "postgresql+psycopg://postgres@127.0.0.1:5432/wfapp_bench_lists"))
    parser.add_argument("--instances", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--keep", action="store_true", help="reuse the rows already loaded")
    parser.add_argument("--bulk", type=int, default=0, help="also bulk-advance N instances")
    args = parser.parse_args()
    if not args.database.startswith("postgresql"):
        sys.exit("bench/lists.py measures PostgreSQL: pass --database postgresql+psycopg://…")
    app = make_app(args.database)
    with app.app_context():
        if not args.keep:
            load(args.instances, args.events)
        print(f"\n{'list':<48} {'page ms':>8} {'service':>9} {'bare SQL':>9}")
        rows = measure(app, args.runs)
        over = [name for name, page, _, _ in rows if page > 100]
        print(f"\ngoal: page ≤ 100 ms — {'met' if not over else 'missed by: ' + ', '.join(over)}")
        if args.bulk:
            bulk_rate(app, args.bulk)


if __name__ == "__main__":
    main()
