"""Bulk operations by filter: instances/s of a bulk Advance, Reset and Delete on PostgreSQL,
each next to a baseline measured in the same run on the same rows.

    .venv/bin/python bench/bulk.py [--instances 100000] [--chunk 500]
                                   [--actions advance,reset,delete] [--db postgresql+psycopg://…]

Default database: PostgreSQL `wfapp_bench_bulk` on 127.0.0.1 (created, emptied). It loads
`--instances` instances held in HOLD (one workflow, RELEASE a Manual transition with a condition
on the record, so the dry run reads every instance), then for each action:

- dry run: `bulk.plan(..., dry_run=True)`, the request a person waits for;
- run: the operation's job slices (`bulk.run`, BULK_TIME_BUDGET 5 s each) back to back in this
  process until it has finished — what the queue worker does;
- baseline: the bare SQL of the same change on the same rows (one UPDATE, or DELETE, plus the
  history INSERT ... SELECT for moves), in one transaction rolled back afterwards: the floor no
  per-instance decision can beat.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_DB = "postgresql+psycopg://postgres@127.0.0.1:5432/wfapp_bench_bulk"
WORKFLOW = {"format": "wfapp.workflow/v1", "workflow": {
    "code": "BULK", "initial_state": "NEW",
    "states": [{"code": "NEW", "is_initial": True}, {"code": "HOLD"},
               {"code": "DONE", "is_final": True}],
    "transitions": [
        {"code": "HOLD", "from_state": "NEW", "to_state": "HOLD", "trigger_type": "on_import"},
        {"code": "RELEASE", "from_state": "HOLD", "to_state": "DONE", "trigger_type": "manual",
         "conditions": [{"field": "record.amount", "operator": "gt", "value": 0}]}]}}

MOVE_SQL = """
WITH moved AS (
  UPDATE instance SET state = :to_state, active = :active, entered_state_at = now(),
         version = version + 1, last_trigger = :trigger, last_transition = :transition
  WHERE workflow_id = :workflow_id AND state = :from_state RETURNING id)
INSERT INTO history (instance_id, at, from_state, to_state, transition, trigger_type,
                           actor, notes)
SELECT id, now(), :from_state, :to_state, :transition, :trigger, 'bench', '' FROM moved
"""


def load(count: int, workflow_id: int, integration_id: int) -> float:
    """`count` instances in HOLD, inserted in bulk; seconds taken."""
    from sqlalchemy import insert

    from wfapp.extensions import db
    from wfapp.models import Instance, utcnow

    now = utcnow()
    start = time.perf_counter()
    for base in range(0, count, 20_000):
        db.session.execute(insert(Instance), [
            {"workflow_id": workflow_id, "integration_id": integration_id,
             "record_key": f"R{i:07d}", "state": "HOLD", "active": True,
             "entered_state_at": now, "data": {"amount": 1 + i % 1000}, "vars": {},
             "version": 1, "workflow_version": 1, "created_at": now}
            for i in range(base, min(base + 20_000, count))])
        db.session.commit()
    return time.perf_counter() - start


def baseline(sql: str, params: dict[str, Any]) -> tuple[float, int]:
    """Seconds and rows of the bare statement, in a transaction rolled back afterwards."""
    from sqlalchemy import text

    from wfapp.extensions import db

    start = time.perf_counter()
    rows = db.session.execute(text(sql), params).rowcount
    elapsed = time.perf_counter() - start
    db.session.rollback()
    return elapsed, rows


def operate(target: str, action: str, filters: Any, params: dict[str, Any]
            ) -> tuple[float, float, Any]:
    """(dry-run seconds, run seconds, the finished operation) of one bulk operation."""
    from wfapp.extensions import db
    from wfapp.queue import get_queue
    from wfapp.services import bulk

    start = time.perf_counter()
    dry = bulk.plan(target, action, filters, params, True, "bench")
    dry_s = time.perf_counter() - start
    assert dry.refused_count == 0, dry.refused
    op = bulk.plan(target, action, filters, params, False, "bench").operation_id
    get_queue().jobs.clear()  # this process runs the slices itself
    start = time.perf_counter()
    while not bulk.run(op, time_budget=5):
        pass
    run_s = time.perf_counter() - start
    operation = bulk.get_operation(op)
    db.session.refresh(operation)
    return dry_s, run_s, operation


def main() -> None:
    """Load, measure each action and its baseline, print the table."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=500)
    parser.add_argument("--db", default=DEFAULT_DB)
    parser.add_argument("--actions", default="advance,reset,delete",
                        help="which of advance,reset,delete to run (in that order)")
    args = parser.parse_args()
    if not args.db.startswith("postgresql"):
        sys.exit("bench/bulk.py measures PostgreSQL: pass --db postgresql+psycopg://…")
    if args.db == DEFAULT_DB:
        subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", "wfapp_bench_bulk"],
                       capture_output=True)
    from flask_migrate import upgrade
    from sqlalchemy import select, text

    from wfapp import create_app
    from wfapp.extensions import db
    from wfapp.models import Integration, Workflow
    from wfapp.services.definitions import import_document
    from wfapp.services.instance_list import InstanceFilters

    app = create_app({"TESTING": True, "SECRET_KEY": "bench", "SQLALCHEMY_DATABASE_URI": args.db,
                      "INSTANCE_PATH": "/tmp/wfapp-bench-bulk", "LOAD_ENTRY_POINTS": False,
                      "PLUGINS": [], "BULK_CHUNK": args.chunk})
    with app.app_context():
        with db.engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        upgrade()
        import_document(WORKFLOW)
        workflow_id = db.session.scalar(select(Workflow.id))
        db.session.add(Integration(code="BULK", workflow_id=workflow_id, settings={}))
        db.session.commit()
        integration_id = db.session.scalar(select(Integration.id))
        loaded = load(args.instances, workflow_id, integration_id)
        db.session.execute(text("ANALYZE"))
        db.session.commit()
        n = args.instances
        print(f"PostgreSQL, {n:,} instances loaded in {loaded:.0f} s; chunk {args.chunk}; "
              "a 2-core machine shared with other engineers' jobs: absolute figures vary")
        print(f"{'action':<10}{'dry run s':>10}{'run s':>9}{'inst/s':>9}{'done':>9}"
              f"{'refused':>9}{'bare SQL s':>11}{'SQL inst/s':>11}")
        move = {"workflow_id": workflow_id, "active": True, "trigger": "manual"}
        cases = [
            ("advance", InstanceFilters(workflow="BULK", state="HOLD"),
             {"transition": "RELEASE", "comment": "bench"},
             MOVE_SQL, {**move, "from_state": "HOLD", "to_state": "DONE",
                        "transition": "RELEASE", "active": False}),
            ("reset", InstanceFilters(workflow="BULK", state="DONE"),
             {"state": "HOLD", "note": "bench"},
             MOVE_SQL, {**move, "from_state": "DONE", "to_state": "HOLD", "transition": None,
                        "trigger": "reset"}),
            ("delete", InstanceFilters(workflow="BULK"), {},
             "DELETE FROM instance WHERE workflow_id = :workflow_id", {"workflow_id": workflow_id}),
        ]
        wanted = set(args.actions.split(","))
        for action, filters, params, sql, sql_params in cases:
            if action not in wanted:
                continue
            sql_s, sql_rows = baseline(sql, sql_params)
            dry_s, run_s, operation = operate("instances", action, filters, params)
            assert sql_rows == n and operation.status == "done", (sql_rows, operation.status)
            print(f"{action:<10}{dry_s:>10.2f}{run_s:>9.1f}{operation.done / run_s:>9,.0f}"
                  f"{operation.done:>9,}{operation.failed:>9,}{sql_s:>11.2f}"
                  f"{sql_rows / sql_s:>11,.0f}", flush=True)


if __name__ == "__main__":
    main()
