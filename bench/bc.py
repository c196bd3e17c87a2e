"""Business Central notification benchmark on PostgreSQL: a 1,000-item notification, stored.

    python bench/bc.py [--database-url URL] [--items 1000] [--repeat 7]

The app runs under gunicorn (one sync worker, no Redis: the events stay pending, so only
storing is measured). Each round POSTs a notification of N fresh items to
/bc/<integration>/notifications and times it until the 202, which the endpoint sends once the
N events are committed in one transaction (target ≤ 1 s for 1,000). The baseline, in the same
run: the same N event rows written by one plain multi-row INSERT and a commit, straight through
psycopg. It resets the database it is given (default: wfapp_bench).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CLIENT_STATE = "bench-client-state"
COMPANY = "f64eba74-dacd-4854-a584-1834f68cfc3a"


def make_app(db_url: str):
    """The app the benchmark prepares the database with."""
    from wfapp import create_app

    return create_app({"TESTING": True, "SECRET_KEY": "bench", "SQLALCHEMY_DATABASE_URI": db_url,
                       "INSTANCE_PATH": "/tmp/wfapp-bench-bc", "LOAD_ENTRY_POINTS": False})


def prepare(app) -> int:
    """Fresh schema through the migrations; one integration; its id."""
    from flask_migrate import upgrade
    from sqlalchemy import text

    from wfapp.extensions import db
    from wfapp.services.integrations import create_integration

    with app.app_context():
        with db.engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        upgrade()
        integration = create_integration({"code": "BC_BENCH", "bc_client_state": CLIENT_STATE})
        return integration.id


def items(count: int, round_no: int) -> list[dict]:
    """A notification's items: `count` created sales orders, new each round."""
    at = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=round_no)
    return [{"subscriptionId": "bench-subscription", "clientState": CLIENT_STATE,
             "expirationDateTime": "2026-01-04T00:00:00Z",
             "resource": f"api/v2.0/companies({COMPANY})/salesOrders({uuid.uuid4()})",
             "changeType": "created",
             "lastModifiedDateTime": (at + timedelta(milliseconds=i)).isoformat()}
            for i in range(count)]


def serve(db_url: str, port: int) -> subprocess.Popen:
    """gunicorn with one sync worker on the benchmark database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WFAPP_")}
    env.update({"WFAPP_SECRET_KEY": "bench", "WFAPP_SQLALCHEMY_DATABASE_URI": db_url,
                "WFAPP_LOAD_ENTRY_POINTS": "false"})
    proc = subprocess.Popen([str(Path(sys.executable).parent / "gunicorn"), "-w", "1", "-b",
                             f"127.0.0.1:{port}", "wsgi:app"], cwd=str(ROOT), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            requests.get(f"http://127.0.0.1:{port}/auth/login", timeout=1)
            return proc
        except requests.RequestException:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("gunicorn did not start")


def bench_endpoint(port: int, count: int, repeat: int) -> tuple[list[float], float]:
    """Seconds per notification of `count` new items, and one repeat of the last (duplicates)."""
    session = requests.Session()
    url = f"http://127.0.0.1:{port}/bc/BC_BENCH/notifications"
    session.post(url, json={"value": items(10, 9999)}, timeout=60)  # warm up the worker
    times = []
    body = b""
    for round_no in range(repeat):
        body = json.dumps({"value": items(count, round_no)}).encode()
        started = time.perf_counter()
        response = session.post(url, data=body, headers={"Content-Type": "application/json"},
                                timeout=60)
        times.append(time.perf_counter() - started)
        assert response.status_code == 202, response.text
        assert response.json()["stored"] == count, response.text
    started = time.perf_counter()
    again = session.post(url, data=body, headers={"Content-Type": "application/json"},
                         timeout=60)
    duplicate = time.perf_counter() - started
    assert again.json()["duplicates"] == count, again.text
    return times, duplicate


def bench_plain_insert(db_url: str, integration_id: int, count: int, repeat: int) -> list[float]:
    """The same event rows through one plain multi-row INSERT and a commit (psycopg)."""
    import psycopg
    from wfapp.builtin_plugins._bc_resource import notification_dedupe_key, record_id

    from wfapp.services.events import partition_of

    dsn = db_url.replace("postgresql+psycopg://", "postgresql://")
    columns = ("integration_id, source, type, record_key, payload, dedupe_key, partition, "
               "received_at, status, result, attempts")
    times = []
    with psycopg.connect(dsn) as conn:
        for round_no in range(repeat):
            rows = []
            for item in items(count, 1000 + round_no):
                key = record_id(item["resource"])
                rows.append((integration_id, "on_bc_event", item["changeType"], key,
                             json.dumps(item), notification_dedupe_key(item),
                             partition_of(integration_id, key, None), datetime.now(UTC),
                             "pending", "", 0))
            values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"] * len(rows))
            params = [value for row in rows for value in row]
            started = time.perf_counter()
            conn.execute(f"INSERT INTO event ({columns}) VALUES {values}", params)
            conn.commit()
            times.append(time.perf_counter() - started)
    return times


def main() -> None:
    """Run the rounds and print the figures side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get(
        "WFAPP_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1/wfapp_bench"))
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--port", type=int, default=8791)
    args = parser.parse_args()
    if not args.database_url.startswith("postgresql"):
        raise SystemExit("this benchmark runs on PostgreSQL (--database-url postgresql+psycopg://…)")
    integration_id = prepare(make_app(args.database_url))
    proc = serve(args.database_url, args.port)
    try:
        endpoint, duplicate = bench_endpoint(args.port, args.items, args.repeat)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    with make_app(args.database_url).app_context():
        plain = bench_plain_insert(args.database_url, integration_id, args.items, args.repeat)

    def ms(values: list[float]) -> str:
        return (f"median {statistics.median(values) * 1000:7.1f} ms   best "
                f"{min(values) * 1000:7.1f} ms   worst {max(values) * 1000:7.1f} ms")

    n = f"{args.items:,}"
    print(f"BC notification benchmark — PostgreSQL, gunicorn 1 sync worker, {args.repeat} rounds")
    print(f"notification of {n} items, HTTP → 202 (stored):  {ms(endpoint)}   (target ≤ 1 s)")
    print(f"the same again, all {n} duplicates:           {duplicate * 1000:7.1f} ms")
    print(f"baseline: {n} rows, one plain multi-row INSERT: {ms(plain)}")
    ratio = statistics.median(endpoint) / statistics.median(plain)
    verdict = "met" if statistics.median(endpoint) <= 1.0 else "NOT met"
    print(f"endpoint / plain INSERT = {ratio:.1f} ×; target {verdict}")


if __name__ == "__main__":
    main()
