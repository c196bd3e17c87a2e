"""Fault figures: what wfapp does when things break, measured against the running app.

    .venv/bin/python bench/faults.py

Runs the app as it is deployed — gunicorn (2 workers) and `flask --app wfapp worker` processes on
PostgreSQL and Redis — with the database and Redis reached through TCP forwarders this script can
cut and restore. For each fault it prints what was stored, what was applied, what was applied
twice, what was lost, and what the user saw (status codes; a stack trace anywhere is counted).
It uses the database `wfapp_faults` (created, emptied) and Redis db 10, only on 127.0.0.1; the
processes' logs go to /tmp/wfapp-faults/.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.services import TcpProxy, _free_port  # noqa: E402

LOGS = Path("/tmp/wfapp-faults")
PG = "postgresql+psycopg://postgres@127.0.0.1:{port}/wfapp_faults"
BIN = Path(sys.executable).parent
PASSWORD = "faults-admin-pass"
WORKFLOW = {"format": "wfapp.workflow/v1", "workflow": {
    "code": "FAULTS", "initial_state": "NEW",
    "states": [{"code": "NEW", "is_initial": True}, {"code": "DONE", "is_final": True}],
    "transitions": [{"code": "GO", "from_state": "NEW", "to_state": "DONE",
                     "trigger_type": "on_import"}]}}


class Stack:
    """The app under test: proxies, gunicorn, workers, and an API token."""

    def __init__(self) -> None:
        self.pg = TcpProxy("127.0.0.1", 5432)
        self.redis = TcpProxy("127.0.0.1", 6379)
        self.pg.start()
        self.redis.start()
        self.port = _free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("WFAPP_")}
        self.env.update({
            "WFAPP_SECRET_KEY": "faults", "WFAPP_LOAD_ENTRY_POINTS": "false",
            "WFAPP_SQLALCHEMY_DATABASE_URI": PG.format(port=self.pg.port),
            "WFAPP_SQLALCHEMY_ENGINE_OPTIONS": json.dumps(
                {"pool_pre_ping": True, "connect_args": {"connect_timeout": 2}}),
            "WFAPP_REDIS_URL": f"redis://127.0.0.1:{self.redis.port}/10",
            "WFAPP_SWEEP_INTERVAL": "1", "WFAPP_LEASE_SECONDS": "3",
        })
        self.web: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.token = ""
        self.cookie = ""

    def flask(self, *args: str) -> str:
        out = subprocess.run([str(BIN / "flask"), "--app", "wfapp", *args], cwd=ROOT,
                             env=self.env, capture_output=True, text=True, check=True)
        return out.stdout.strip()

    def prepare(self) -> None:
        import psycopg

        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres",
                             autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS wfapp_faults")
            conn.execute("CREATE DATABASE wfapp_faults")
        import redis

        redis.Redis(port=6379, db=10).flushdb()
        self.flask("db", "upgrade")
        self.flask("user", "create", "admin", "--password", PASSWORD, "--role", "admin")
        self.token = self.flask("token", "create", "admin")

    def start_web(self) -> None:
        self.web = subprocess.Popen(
            [str(BIN / "gunicorn"), "-w", "2", "-b", f"127.0.0.1:{self.port}", "--timeout", "60",
             "wsgi:app"], cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL,
            stderr=self.log("web"))
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{self.url}/auth/login", timeout=1)
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("gunicorn did not start")

    def start_worker(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([str(BIN / "flask"), "--app", "wfapp", "worker"], cwd=ROOT,
                                env=self.env, stdout=subprocess.DEVNULL,
                                stderr=self.log(f"worker-{len(self.workers) + 1}"))
        self.workers.append(proc)
        return proc

    def log(self, name: str) -> Any:
        """A log file for a process (a pipe nobody reads would block it once full)."""
        LOGS.mkdir(parents=True, exist_ok=True)
        return (LOGS / f"{name}.log").open("w")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, method: str, path: str, body: Any = None, page: bool = False
             ) -> tuple[int, str]:
        """One request; (status, body text)."""
        headers = {"Accept": "text/html"} if page else {
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        if page and self.cookie:
            headers["Cookie"] = self.cookie
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode("utf-8", "replace")
        except OSError as error:
            return 0, str(error)

    def login(self) -> None:
        import http.cookiejar

        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        page = opener.open(f"{self.url}/auth/login").read().decode()
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
        form = urllib.parse.urlencode({"username": "admin", "password": PASSWORD,
                                       "csrf_token": token.group(1) if token else ""}).encode()
        opener.open(f"{self.url}/auth/login", data=form)
        self.cookie = "; ".join(f"{c.name}={c.value}" for c in jar)

    def counts(self) -> dict[str, int]:
        """Events stored, processed, pending; transitions applied and applied twice."""
        import psycopg

        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/wfapp_faults") as conn:
            one = lambda sql: conn.execute(sql).fetchone()[0]  # noqa: E731
            return {
                "stored": one("SELECT count(*) FROM event"),
                "processed": one("SELECT count(*) FROM event WHERE status = 'processed'"),
                "pending": one("SELECT count(*) FROM event WHERE status = 'pending'"),
                "applied": one("SELECT count(*) FROM history WHERE event_id IS NOT NULL AND "
                               "from_state IS NOT NULL"),
                "twice": one("SELECT count(*) FROM (SELECT event_id FROM history WHERE "
                             "event_id IS NOT NULL AND from_state IS NOT NULL GROUP BY "
                             "event_id HAVING count(*) > 1) AS t"),
                "records": one("SELECT coalesce(sum(total), 0) FROM run"),
            }

    def drain(self, timeout: float = 120) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            counts = self.counts()
            if counts["pending"] == 0:
                return counts
            time.sleep(0.5)
        return self.counts()

    def stop(self) -> None:
        for proc in [*self.workers, self.web]:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [*self.workers, self.web]:
            if proc is not None:
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        self.pg.stop()
        self.redis.stop()


def run_records(stack: Stack, count: int, prefix: str) -> tuple[int, str]:
    records = [{"key": f"{prefix}{i}", "data": {"n": i}} for i in range(count)]
    return stack.call("POST", "/api/v1/integrations/FEED/runs",
                      {"direction": "import", "records": records})


def saw(statuses: Counter[int], bodies: list[str]) -> str:
    """What the user saw: the statuses, and whether any answer showed a stack trace."""
    traces = sum(1 for b in bodies if "Traceback" in b or "File \"/" in b)
    text = ", ".join(f"{n}×{code}" for code, n in sorted(statuses.items()))
    return text + (f"; {traces} stack traces" if traces else "; no stack trace")


def main() -> None:
    stack = Stack()
    rows: list[tuple[str, ...]] = []
    try:
        stack.prepare()
        stack.start_web()
        stack.call("POST", "/api/v1/workflows/import", WORKFLOW)
        stack.call("POST", "/api/v1/integrations", {"code": "FEED", "workflow_code": "FAULTS"})
        stack.login()

        # 1. A worker killed (SIGKILL) in the middle of its batches.
        statuses: Counter[int] = Counter()
        bodies = []
        for i in range(5):
            status, body = run_records(stack, 2000, f"K{i}-")
            statuses[status] += 1
            bodies.append(body)
        victim = stack.start_worker()
        deadline = time.monotonic() + 60
        while stack.counts()["processed"] < 500 and time.monotonic() < deadline:
            time.sleep(0.05)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        mid = stack.counts()
        stack.start_worker()
        after = stack.drain()
        rows.append(("worker SIGKILL mid-batch", "5 runs × 2,000 records",
                     f"{after['stored']:,}", f"{after['applied']:,}", str(after["twice"]),
                     str(after["records"] - after["processed"]),
                     saw(statuses, bodies) + f"; killed at {mid['processed']:,} processed"))

        # 2. PostgreSQL unreachable (connection refused), then back.
        stack.pg.stop()
        statuses, bodies = Counter(), []
        for i in range(10):
            status, body = run_records(stack, 10, f"P{i}-")
            statuses[status] += 1
            bodies.append(body)
            status, body = stack.call("GET", "/workflows/", page=True)
            statuses[status] += 1
            bodies.append(body)
        down = saw(statuses, bodies)
        stack.pg.start()
        time.sleep(0.5)
        statuses, bodies = Counter(), []
        for i in range(10):
            status, body = run_records(stack, 10, f"Q{i}-")
            statuses[status] += 1
            bodies.append(body)
        counts = stack.drain()
        rows.append(("PostgreSQL unreachable, then back", "20 while down, 10 after",
                     f"{counts['stored']:,}", f"{counts['applied']:,}", str(counts["twice"]),
                     str(counts["records"] - counts["processed"]),
                     f"down: {down}; back: {saw(statuses, bodies)}"))

        # 3. Redis unreachable: requests are committed, processing resumes when it is back.
        stack.redis.stop()
        statuses, bodies = Counter(), []
        for i in range(10):
            status, body = run_records(stack, 10, f"R{i}-")
            statuses[status] += 1
            bodies.append(body)
        pending = stack.counts()["pending"]
        stack.redis.start()
        counts = stack.drain()
        rows.append(("Redis unreachable, then back", "10 runs while down",
                     f"{counts['stored']:,}", f"{counts['applied']:,}", str(counts["twice"]),
                     str(counts["records"] - counts["processed"]),
                     f"{saw(statuses, bodies)}; {pending} events waited for Redis"))

        # 4. 100 concurrent imports of the same new workflow file.
        doc = json.loads(json.dumps(WORKFLOW))
        doc["workflow"]["code"] = "SAME"
        barrier = threading.Barrier(100)

        def import_once(_: int) -> tuple[int, str]:
            barrier.wait()
            return stack.call("POST", "/api/v1/workflows/import", doc)

        with ThreadPoolExecutor(100) as pool:
            answers = list(pool.map(import_once, range(100)))
        statuses = Counter(code for code, _ in answers)
        rows.append(("100 concurrent imports of one file", "100", "–", "–",
                     str(max(0, statuses.get(201, 0) - 1)), "0",
                     saw(statuses, [b for _, b in answers])))

        # 5. 50 concurrent page requests under gunicorn.
        pages = ["/integrations/", "/workflows/", "/instances/", "/events/", "/runs/",
                 "/workflows/FAULTS", "/integrations/FEED", "/audit/", "/search?q=FEED",
                 "/instances/?state=DONE"] * 5
        with ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(lambda p: stack.call("GET", p, page=True), pages))
        statuses = Counter(code for code, _ in answers)
        rows.append(("50 concurrent page requests", "50", "–", "–", "–", "–",
                     saw(statuses, [b for _, b in answers])))
    finally:
        stack.stop()

    head = ("Fault", "Requests", "Events stored", "Transitions applied", "Applied twice",
            "Lost", "What the user saw")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
