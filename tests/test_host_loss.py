"""Losing a host mid-load: two "hosts" on one PostgreSQL and Redis — host A runs a gunicorn web
process and two workers, host B a gunicorn web process and one worker, all separate processes.
Senders post signed webhooks to both; mid-load every process of host A is SIGKILLed and the
senders retry what failed on host B (as a load balancer would). Every event must be stored and
applied exactly once. The figures are printed (`pytest -s`) and quoted in README Deployment.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import func, select

from tests.services import start_gunicorn, start_worker, stop
from tests.test_workers import COUNTER, _assert_exactly_once
from wfapp import signing
from wfapp.extensions import db
from wfapp.models import Event
from wfapp.services.definitions import FORMAT, import_document
from wfapp.services.integrations import create_integration

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

SENDERS = 8
KEYS_PER_SENDER = 10
EVENTS_PER_KEY = 15
TOTAL = SENDERS * KEYS_PER_SENDER * EVENTS_PER_KEY


def _children(pid: int) -> list[int]:
    """The child processes of `pid` (gunicorn's workers), from /proc."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children = (task / "children").read_text().split() if (task / "children").exists() \
            else []
        found.extend(int(child) for child in children)
    return found


def _counted(status: str | None = None) -> int:
    db.session.rollback()
    query = select(func.count()).select_from(Event)
    if status:
        query = query.where(Event.status == status)
    return db.session.scalar(query)


def test_losing_one_host_mid_load_loses_nothing_and_applies_nothing_twice(
        rq_app: Any, app_config: dict[str, Any], tmp_path: Path) -> None:
    wf = {**COUNTER, "states": [dict(s) for s in COUNTER["states"]]}
    wf["states"][1] = {"code": "B"}
    wf["transitions"] = [t for t in wf["transitions"] if t["code"] != "B_TIMEOUT"]
    import_document({"format": FORMAT, "workflow": wf})
    secret = signing.generate_secret()
    create_integration({"code": "FEED", "workflow_code": "COUNTER", "webhook_enabled": True,
                        "webhook_secret": secret})
    fast = {"WFAPP_SWEEP_INTERVAL": "1", "WFAPP_LEASE_SECONDS": "3"}
    web_a, proc_a = start_gunicorn(app_config, tmp_path / "web-a.log", workers=1, **fast)
    web_b, proc_b = start_gunicorn(app_config, tmp_path / "web-b.log", workers=1, **fast)
    workers_a = [start_worker(app_config, burst=False, **fast) for _ in range(2)]
    worker_b = start_worker(app_config, burst=False, **fast)
    accepted = [0]
    retried = [0]
    lock = threading.Lock()
    errors: list[str] = []

    def send(sender: int) -> None:
        rng = random.Random(sender)
        keys = [f"H{sender:02d}{k:02d}" for k in range(KEYS_PER_SENDER)]
        plan = [(key, i) for key in keys for i in range(EVENTS_PER_KEY)]
        # Interleave this sender's keys, keeping each key's own order.
        order: list[tuple[str, int]] = []
        cursors = {key: 0 for key in keys}
        while cursors:
            key = rng.choice(sorted(cursors))
            order.append((key, cursors[key]))
            cursors[key] += 1
            if cursors[key] == EVENTS_PER_KEY:
                del cursors[key]
        assert len(order) == len(plan)
        session = requests.Session()
        for key, i in order:
            body = json.dumps({"type": rng.choice(["next", "next", "back", "jump", "finish"]),
                               "id": key, "n": rng.randint(0, 10)}).encode()
            headers = {"Content-Type": "application/json", **signing.standard_headers(
                secret, f"{key}-{i}", body, int(time.time()))}
            targets = [web_a, web_b] if (sender + i) % 2 == 0 else [web_b, web_a]
            for attempt in range(20):
                url = targets[min(attempt, 1)]  # the first failure moves to the other host
                try:
                    answer = session.post(f"{url}/hooks/FEED", data=body, headers=headers,
                                          timeout=10)
                except requests.RequestException:
                    with lock:
                        retried[0] += 1
                    session = requests.Session()
                    continue
                if answer.status_code in (200, 202):
                    with lock:
                        accepted[0] += 1
                    break
                with lock:
                    retried[0] += 1
                time.sleep(0.1)
            else:
                errors.append(f"{key}-{i} never accepted")

    started = time.monotonic()
    threads = [threading.Thread(target=send, args=(s,)) for s in range(SENDERS)]
    for thread in threads:
        thread.start()
    killed_at = None
    try:
        deadline = time.monotonic() + 120
        while accepted[0] < TOTAL // 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        # Host A goes away at once: its web process (master and worker) and both workers.
        host_a = [proc_a.pid, *_children(proc_a.pid), *(w.pid for w in workers_a)]
        for pid in host_a:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        killed_at = (time.monotonic() - started, accepted[0])
        for thread in threads:
            thread.join(timeout=300)
        sent_in = time.monotonic() - started
        assert errors == []
        assert _counted() == TOTAL, "an accepted webhook was not stored"
        drain = time.monotonic() + 180
        while _counted("pending") and time.monotonic() < drain:
            time.sleep(0.2)
        done_in = time.monotonic() - started
    finally:
        for proc in (proc_a, *workers_a):
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
        stop(proc_b, worker_b)
    assert _counted("pending") == 0
    _assert_exactly_once(wf, TOTAL)
    print(f"\nhost loss: {TOTAL} webhooks from {SENDERS} senders to 2 web processes, 3 workers; "
          f"host A (web + 2 workers) SIGKILLed at {killed_at[0]:.1f} s after {killed_at[1]} "
          f"accepted; {retried[0]} requests retried on host B; all accepted in {sent_in:.1f} s, "
          f"all applied in {done_in:.1f} s; 0 lost, 0 applied twice")
