"""Webhook ingest benchmark: gunicorn (4 sync workers) on PostgreSQL + Redis; prints a table.

    python bench/webhooks.py [--seconds 10] [--connections 8] [--burst 60] [--workers 2]

Measured one after the other in the same run, each under the same gunicorn settings and the same
load generator (`--connections` processes, each one HTTP/1.1 connection reused where the server
allows it, signing every request):

(1) a Flask endpoint that does nothing (bench/webhook_apps.py:noop);
(2) a minimal endpoint that verifies a Standard Webhooks signature and inserts one row into
    PostgreSQL with ON CONFLICT DO NOTHING, one commit per request (webhook_apps.py:minimal);
(3) wfapp's POST /hooks/<integration> (wsgi:app), every request a new signed event.

Then the apply rate: wfapp again, with `flask --app wfapp worker` processes running, for a
`--burst`-second burst: events stored per second, transitions applied per second, and the
backlog of pending events when the burst ends (and how long the workers take to clear it).
Not a test: it prints figures. It drops and re-creates the schema of its database.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECRET = "whsec_" + "YmVuY2htYXJrLXNlY3JldC1mb3Itd2ViaG9va3MtMzI="  # 32 bytes, fixed
CODE = "BENCH_HOOKS"
KEYS = 2000


@dataclass
class Result:
    """One measured endpoint."""

    name: str
    accepted: int
    other: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        """Accepted requests per second."""
        return self.accepted / self.seconds


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(db_url: str, redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WFAPP_")}
    env.update({"WFAPP_SECRET_KEY": "bench", "WFAPP_SQLALCHEMY_DATABASE_URI": db_url,
                "WFAPP_REDIS_URL": redis_url, "WFAPP_LOAD_ENTRY_POINTS": "false",
                "PYTHONPATH": str(ROOT), "BENCH_SECRET": SECRET,
                "BENCH_DSN": db_url.replace("postgresql+psycopg://", "postgresql://")})
    return env


def serve(spec: str, env: dict[str, str], workers: int = 4) -> tuple[subprocess.Popen, int]:
    """Start gunicorn with sync workers on a free port and wait until it answers."""
    port = _free_port()
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    proc = subprocess.Popen([gunicorn, "-w", str(workers), "-k", "sync", "-b",
                             f"127.0.0.1:{port}", spec], cwd=str(ROOT), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # gunicorn listens before its workers have imported the app: wait for a first answer,
    # then as long again for the other workers, which boot at the same time.
    started = time.perf_counter()
    for _ in range(600):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", f"/hooks/{CODE}")
            conn.getresponse().read()
            conn.close()
            break
        except OSError:
            time.sleep(0.1)
    time.sleep(max(2.0, time.perf_counter() - started))
    return proc, port


def stop(proc: subprocess.Popen) -> None:
    """Stop a server or worker process."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def _client(port: int, start: float, warmup: float, seconds: float, seed: int, queue) -> None:
    """One connection: signed requests back to back; latencies of those after the warm-up."""
    from wfapp.signing import standard_headers

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies, other, n = [], 0, 0
    end = start + warmup + seconds
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        n += 1
        body = json.dumps({"type": "next", "id": f"K{(seed * 7919 + n) % KEYS}", "total": 5,
                           "status": "paid", "country": "DE", "n": n}).encode()
        headers = standard_headers(SECRET, f"msg_{seed}_{n}_{uuid.uuid4().hex[:8]}", body)
        headers["Content-Type"] = "application/json"
        try:
            conn.request("POST", f"/hooks/{CODE}", body, headers)
            response = conn.getresponse()
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException):
            conn.close()
            status = 0
        done = time.perf_counter()
        if now >= start + warmup:
            if status == 202:
                latencies.append(done - now)
            else:
                other += 1
    conn.close()
    queue.put((latencies, other))


def load(name: str, port: int, seconds: float, connections: int, warmup: float = 2.0) -> Result:
    """Drive one endpoint with `connections` processes for `seconds` after a warm-up."""
    queue: multiprocessing.Queue = multiprocessing.Queue()
    start = time.perf_counter() + 0.5
    procs = [multiprocessing.Process(target=_client, args=(port, start, warmup, seconds, i,
                                                            queue)) for i in range(connections)]
    for proc in procs:
        proc.start()
    latencies: list[float] = []
    other = 0
    for _ in procs:
        got, bad = queue.get()
        latencies += got
        other += bad
    for proc in procs:
        proc.join()
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 \
            if latencies else float("nan")

    return Result(name, len(latencies), other, seconds, pct(0.50), pct(0.99))


def prepare(db_url: str, redis_url: str) -> None:
    """Fresh schema, a ten-state ring workflow, the integration with webhooks on."""
    import redis
    from flask_migrate import upgrade
    from sqlalchemy import text

    from bench.engine import ring_workflow
    from wfapp import create_app
    from wfapp.extensions import db
    from wfapp.services.definitions import import_document
    from wfapp.services.integrations import create_integration

    redis.Redis.from_url(redis_url).flushdb()
    app = create_app({"TESTING": True, "SECRET_KEY": "bench", "SQLALCHEMY_DATABASE_URI": db_url,
                      "REDIS_URL": redis_url, "INSTANCE_PATH": "/tmp/wfapp-bench-webhooks",
                      "LOAD_ENTRY_POINTS": False})
    with app.app_context():
        with db.engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        upgrade()
        import_document(ring_workflow())
        create_integration({"code": CODE, "workflow_code": "BENCH", "webhook_enabled": True,
                            "webhook_secret": SECRET})
        from bench.webhook_apps import TABLE

        with db.engine.begin() as conn:
            conn.execute(text(TABLE))
        db.engine.dispose()


def _count(dsn: str, sql: str) -> int:
    import psycopg

    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchone()[0]


def burst(env: dict[str, str], seconds: float, connections: int, workers: int) -> str:
    """wfapp with worker processes: stored vs applied per second, backlog after the burst."""
    dsn = env["BENCH_DSN"]
    flask = str(Path(sys.executable).parent / "flask")
    procs = [subprocess.Popen([flask, "--app", "wfapp", "worker"], cwd=str(ROOT), env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(workers)]
    server, port = serve("wsgi:app", env)
    time.sleep(2)
    stored_before = _count(dsn, "SELECT count(*) FROM event")
    applied_before = _count(dsn, "SELECT count(*) FROM history WHERE transition IS NOT NULL")
    result = load("burst", port, seconds, connections, warmup=0.0)
    stored = _count(dsn, "SELECT count(*) FROM event") - stored_before
    applied = _count(dsn, "SELECT count(*) FROM history WHERE transition IS NOT NULL") - \
        applied_before
    backlog = _count(dsn, "SELECT count(*) FROM event WHERE status = 'pending'")
    # Timed from the burst's end: stopping the server takes a while, and the workers go on
    # applying meanwhile.
    started = time.perf_counter()
    stop(server)
    while backlog and _count(dsn, "SELECT count(*) FROM event WHERE status = 'pending'"):
        if time.perf_counter() - started > 600:
            break
        time.sleep(0.5)
    drained = time.perf_counter() - started
    for proc in procs:
        stop(proc)
    return (f"burst of {seconds:.0f} s with {workers} worker processes: "
            f"{stored / seconds:,.0f} events stored/s (p99 {result.p99_ms:.1f} ms), "
            f"{applied / seconds:,.0f} transitions applied/s; backlog after the burst: "
            f"{backlog:,} events, cleared {drained:.1f} s later")


def cpu_per_request(db_url: str, redis_url: str, env: dict[str, str], count: int = 400
                    ) -> dict[str, float]:
    """Milliseconds of CPU per accepted request of each app, in this process (Flask's test
    client, no HTTP): what the endpoints cost whatever else runs on the machine."""
    from wfapp import create_app
    from wfapp.signing import standard_headers

    os.environ.update({"BENCH_DSN": env["BENCH_DSN"], "BENCH_SECRET": SECRET})
    from bench.webhook_apps import minimal, noop

    wfapp = create_app({"SECRET_KEY": "bench", "SQLALCHEMY_DATABASE_URI": db_url,
                        "REDIS_URL": redis_url, "LOAD_ENTRY_POINTS": False,
                        "INSTANCE_PATH": "/tmp/wfapp-bench-webhooks"})
    out = {}
    for name, app in (("(1)", noop), ("(2)", minimal), ("(3)", wfapp)):
        client = app.test_client()

        def send(n: int, client=client, name=name) -> None:
            body = json.dumps({"type": "next", "id": f"K{n % KEYS}", "total": 5,
                               "status": "paid", "country": "DE", "n": n}).encode()
            headers = standard_headers(SECRET, f"msg_cpu{name}_{n}_{uuid.uuid4().hex}", body)
            assert client.post(f"/hooks/{CODE}", data=body, headers=headers).status_code == 202

        for n in range(50):
            send(n)
        started = time.process_time()
        for n in range(count):
            send(100 + n)
        out[name] = (time.process_time() - started) / count * 1000
    return out


def main() -> None:
    """Run the three endpoints and the burst; print the table."""
    from bench.engine import add_service_options

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_service_options(parser)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--burst", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-burst", action="store_true")
    args = parser.parse_args()

    if "/wfapp_bench" in args.database:
        subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", "wfapp_bench"],
                       stderr=subprocess.DEVNULL, check=False)
    prepare(args.database, args.redis)
    env = _env(args.database, args.redis)
    results = []
    for name, spec in (("(1) Flask, does nothing", "bench.webhook_apps:noop"),
                       ("(2) minimal: verify + insert + commit", "bench.webhook_apps:minimal"),
                       ("(3) wfapp POST /hooks/<integration>", "wsgi:app")):
        server, port = serve(spec, env)
        try:
            results.append(load(name, port, args.seconds, args.connections))
        finally:
            stop(server)
    print(f"webhook ingest — {os.cpu_count()} cores, gunicorn -w 4 sync, {args.connections} "
          f"connections, {args.seconds:.0f} s each, PostgreSQL + Redis")
    print(f"{'endpoint':42} {'accepted/s':>11} {'p50 ms':>8} {'p99 ms':>8} {'other':>7}")
    for r in results:
        print(f"{r.name:42} {r.rate:11,.0f} {r.p50_ms:8.1f} {r.p99_ms:8.1f} {r.other:7}")
    wfapp, minimal = results[2], results[1]
    ratio = wfapp.rate / minimal.rate if minimal.rate else float("nan")
    print(f"wfapp / minimal = {ratio:.2f} (goal ≥ 0.85); wfapp {wfapp.rate:,.0f}/s "
          f"(goal ≥ 1,000), p99 {wfapp.p99_ms:.1f} ms (goal ≤ 50)")
    cpu = cpu_per_request(args.database, args.redis, env)
    print("CPU per request in-process (ms): " + ", ".join(f"{k} {v:.2f}" for k, v in
                                                          cpu.items()))
    if not args.skip_burst:
        print(burst(env, args.burst, args.connections, args.workers))


if __name__ == "__main__":
    main()
