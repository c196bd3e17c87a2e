"""Operations figures: the card's per-edge counts from the tally versus a history scan, and a
/metrics scrape, on a database with many instances and much history.

    .venv/bin/python bench/operate.py [--instances 200000] [--db postgresql+psycopg://…]

Default database: PostgreSQL `wfapp_bench_operate` on 127.0.0.1 (created, emptied). The
baseline for the counts is the query the tally replaces: GROUP BY over the last 7 days of
history. Each figure is the median of several runs, measured in this run, side by side.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_DB = "postgresql+psycopg://postgres@127.0.0.1:5432/wfapp_bench_operate"
WORKFLOW = {"format": "wfapp.workflow/v1", "workflow": {
    "code": "OPS", "initial_state": "A",
    "states": [{"code": "A", "is_initial": True}, {"code": "B"}, {"code": "C"},
               {"code": "D", "is_final": True}],
    "transitions": [
        {"code": "AB", "from_state": "A", "to_state": "B", "trigger_type": "on_webhook"},
        {"code": "BC", "from_state": "B", "to_state": "C", "trigger_type": "on_webhook"},
        {"code": "CD", "from_state": "C", "to_state": "D", "trigger_type": "on_webhook"}]}}


def _median_ms(fn, runs: int = 7) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=200_000)
    parser.add_argument("--db", default=DEFAULT_DB)
    args = parser.parse_args()
    if args.db == DEFAULT_DB:
        subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres",
                        "wfapp_bench_operate"], capture_output=True)
    from flask_migrate import upgrade
    from sqlalchemy import func, insert, select, text

    from wfapp import create_app
    from wfapp.extensions import db
    from wfapp.metrics import collect
    from wfapp.models import HistoryEntry, Instance, Integration, Workflow, utcnow
    from wfapp.services import tally
    from wfapp.services.definitions import import_document
    from wfapp.services.metrics import CORE_COLLECTORS

    app = create_app({"TESTING": True, "SECRET_KEY": "bench", "SQLALCHEMY_DATABASE_URI": args.db,
                      "INSTANCE_PATH": "/tmp/wfapp-bench-operate", "METRICS_CACHE_SECONDS": 0,
                      "LOAD_ENTRY_POINTS": False})
    with app.app_context():
        if db.engine.dialect.name == "postgresql":
            with db.engine.begin() as conn:
                conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        upgrade()
        import_document(WORKFLOW)
        workflow_id = db.session.scalar(select(Workflow.id))
        db.session.add(Integration(code="OPS", workflow_id=workflow_id, settings={}))
        db.session.commit()
        integration_id = db.session.scalar(select(Integration.id))
        now = utcnow()
        start = time.perf_counter()
        chunk = 20_000
        states = ["A", "B", "C", "D"]
        for base in range(0, args.instances, chunk):
            rows = [{"workflow_id": workflow_id, "integration_id": integration_id,
                     "record_key": f"R{i}", "state": states[i % 4], "active": i % 4 != 3,
                     "entered_state_at": now, "data": {}, "vars": {}, "version": 1,
                     "created_at": now} for i in range(base, min(base + chunk, args.instances))]
            ids = db.session.scalars(insert(Instance).returning(Instance.id), rows).all()
            history = []
            for n, instance_id in enumerate(ids):
                step = (base + n) % 4
                for k, (code, a, b) in enumerate([("AB", "A", "B"), ("BC", "B", "C"),
                                                  ("CD", "C", "D")][:step]):
                    at = now - timedelta(days=(base + n + k) % 30, minutes=k)
                    history.append({"instance_id": instance_id, "at": at, "from_state": a,
                                    "to_state": b, "transition": code,
                                    "trigger_type": "on_webhook", "actor": "bench",
                                    "notes": ""})
                    tally.note(workflow_id, code, "on_webhook", at)
            if history:
                db.session.execute(insert(HistoryEntry), history)
            db.session.commit()  # the tally rows go in with the history, as in production
        loaded = time.perf_counter() - start
        histories = db.session.scalar(select(func.count()).select_from(HistoryEntry))
        tallies = db.session.scalar(text("SELECT count(*) FROM transition_tally"))
        compacted = tally.compact(now + timedelta(days=1))
        since = tally.day_of(now) - timedelta(days=6)

        def history_scan() -> dict:
            return dict(db.session.execute(
                select(HistoryEntry.transition, func.count())
                .join(Instance, Instance.id == HistoryEntry.instance_id)
                .where(Instance.workflow_id == workflow_id, HistoryEntry.at >= since,
                       HistoryEntry.transition.is_not(None))
                .group_by(HistoryEntry.transition)).all())

        assert tally.edge_counts(workflow_id) == history_scan(), "tally and history disagree"
        from wfapp.services.workflows import active_counts_by_state

        workflow = db.session.get(Workflow, workflow_id)
        print(f"database: {db.engine.dialect.name}; {args.instances:,} instances, "
              f"{histories:,} history rows loaded in {loaded:.0f} s; tally {tallies:,} rows, "
              f"{compacted:,} rolled up by compact()")
        print("(a 2-core machine shared with other jobs: absolute figures are low)")
        print(f"{'query':<48}{'median ms':>10}")
        for name, fn in [
            ("edge counts, 7 days: history scan (baseline)", history_scan),
            ("edge counts, 7 days: tally (the card)", lambda: tally.edge_counts(workflow_id)),
            ("active per state (index-only count)", lambda: active_counts_by_state(workflow)),
        ]:
            print(f"{name:<48}{_median_ms(fn):>10.1f}")
        with app.test_request_context():
            scrape = _median_ms(lambda: collect(CORE_COLLECTORS), runs=5)
        print(f"{'/metrics: every core collector, uncached':<48}{scrape:>10.1f}")


if __name__ == "__main__":
    main()
