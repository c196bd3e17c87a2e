"""Migration benchmark on PostgreSQL + Redis: N instances moved from version 1 to version 2.

    python bench/migrations.py [--instances 100000] [--db URL] [--redis URL]

The database is emptied and migrated first (default `wfapp_versions_bench`, create it once with
createdb). Printed side by side:
- wfapp: POST-equivalent `start_migration` (the dry run first, as a person would), then one
  `flask --app wfapp worker` process runs the chunked job; from queued until `completed`;
- baseline: the same move done by hand in one transaction — one set-based UPDATE of the
  instances and one INSERT … SELECT of their history rows — the floor a chunked job can approach.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.engine import (  # noqa: E402
    make_app,
    reset_database,
    start_workers,
    stop_workers,
    worker_env,
)

DOCUMENT = {"format": "wfapp.workflow/v1", "workflow": {
    "code": "BENCH", "initial_state": "NEW", "states": [
        {"code": "NEW", "is_initial": True}, {"code": "WAIT"}, {"code": "DONE", "is_final": True}],
    "transitions": [{"code": "GO", "from_state": "NEW", "to_state": "WAIT",
                     "trigger_type": "manual"},
                    {"code": "END", "from_state": "WAIT", "to_state": "DONE",
                     "trigger_type": "manual"}]}}


def populate(count: int) -> None:
    """Version 1 and 2 of BENCH (WAIT renamed HOLD), and `count` instances in WAIT on v1."""
    import copy
    import json

    from sqlalchemy import text

    from wfapp.extensions import db
    from wfapp.services.definitions import get_workflow, import_document
    from wfapp.services.integrations import create_integration

    import_document(copy.deepcopy(DOCUMENT))
    create_integration({"code": "BENCH_INT", "workflow_code": "BENCH",
                        "instance_mode": "per_record"})
    import_document(json.loads(json.dumps(DOCUMENT).replace('"WAIT"', '"HOLD"')), replace=True)
    workflow = get_workflow("BENCH")
    db.session.execute(text(
        "INSERT INTO instance (workflow_id, integration_id, record_key, state, active, "
        "entered_state_at, data, vars, version, workflow_version, created_at) "
        "SELECT :w, i.id, 'K' || g, 'WAIT', true, now(), '{}', '{}', 1, 1, now() "
        "FROM generate_series(1, :n) g, integration i WHERE i.code = 'BENCH_INT'"),
        {"w": workflow.id, "n": count})
    db.session.commit()


def baseline() -> float:
    """The same move in one transaction of two set-based statements; seconds taken."""
    from sqlalchemy import text

    from wfapp.extensions import db

    started = time.perf_counter()
    db.session.execute(text(
        "INSERT INTO history (instance_id, at, from_state, to_state, trigger_type, actor, notes) "
        "SELECT id, now(), state, 'HOLD', 'migration', 'bench', 'migrated v1 → v2' "
        "FROM instance WHERE workflow_version = 1 AND state = 'WAIT'"))
    db.session.execute(text(
        "UPDATE instance SET workflow_version = 2, state = 'HOLD', version = version + 1, "
        "entered_state_at = now() WHERE workflow_version = 1 AND state = 'WAIT'"))
    db.session.commit()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--db", default="postgresql+psycopg://postgres@127.0.0.1:5432/"
                                        "wfapp_versions_bench")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/10")
    args = parser.parse_args()
    app = make_app(args.db, args.redis)
    with app.app_context():
        from sqlalchemy import func, select, text

        from wfapp.extensions import db
        from wfapp.models import WorkflowMigration
        from wfapp.queue import get_queue
        from wfapp.services.migrations import plan_migration, start_migration

        get_queue().connection.flushdb()
        reset_database(app)
        populate(args.instances)
        request = {"from_version": 1, "to_version": 2, "state_map": {"WAIT": "HOLD"}}
        started = time.perf_counter()
        plan = plan_migration("BENCH", request)
        dry_run = time.perf_counter() - started
        workers = start_workers(1, worker_env(args.db, args.redis), schedules=False)
        try:
            started = time.perf_counter()
            migration = start_migration("BENCH", request, "bench")
            while True:
                db.session.expire_all()
                current = db.session.get(WorkflowMigration, migration.id)
                if current.status in ("completed", "failed"):
                    break
                time.sleep(0.2)
            took = time.perf_counter() - started
        finally:
            stop_workers(workers)
        assert current.status == "completed" and current.done == args.instances, current.error
        # Back to version 1 for the baseline, so it moves the same rows.
        db.session.execute(text("UPDATE instance SET workflow_version = 1, state = 'WAIT'"))
        db.session.commit()
        floor = baseline()
        rows = db.session.scalar(select(func.count()).select_from(db.metadata.tables["history"]))
    print(f"migration benchmark — {args.instances:,} instances, PostgreSQL, 1 RQ worker")
    print(f"dry run (count per state):       {dry_run * 1000:8.0f} ms  "
          f"({plan.movable:,} movable)")
    print(f"wfapp chunked job:               {took:8.1f} s   "
          f"({args.instances / took:,.0f} instances/s)")
    print(f"baseline, one set-based txn:     {floor:8.1f} s   "
          f"({args.instances / floor:,.0f} instances/s)")
    print(f"history rows written:            {rows:,}")


if __name__ == "__main__":
    main()
