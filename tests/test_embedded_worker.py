"""The embedded queue runs its jobs in a worker process: a job that never returns is killed and
replaced, its event fails after MAX_EVENT_ATTEMPTS, and the web process never waits for it."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import func, select

from tests.poison_flows import poison_setup, poisoned_events, same_partition_keys
from tests.services import start_server, stop
from wfapp.embedded_worker import shareable_database
from wfapp.extensions import db
from wfapp.models import Event, Instance
from wfapp.services.events import ingest
from wfapp.services.integrations import get_integration

JOB_TIMEOUT = 4
SERVER_ENV = {"WFAPP_PLUGINS": "tests.plugins.poison", "WFAPP_JOB_TIMEOUT": str(JOB_TIMEOUT),
              "WFAPP_MAX_EVENT_ATTEMPTS": "2", "WFAPP_JOB_TIME_BUDGET": "1"}


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    app_config.update({"PLUGINS": ["tests.plugins.poison"]})
    return app_config


def _counts() -> dict[str, int]:
    db.session.rollback()
    return dict(db.session.execute(select(Event.status, func.count()).group_by(Event.status))
                .all())


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # "pid (comm) state ppid …": comm may hold spaces and parentheses.
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie nobody reaped yet counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _timed(call: Any, *args: Any, **kwargs: Any) -> tuple[int, float]:
    """The status of `call(*args, **kwargs)` (an HTTP request) and the seconds it took."""
    started = time.perf_counter()
    response = call(*args, timeout=30, **kwargs)
    return response.status_code, time.perf_counter() - started


@pytest.mark.slow
def test_poison_events_fail_and_the_web_process_keeps_answering(app, tokens, tmp_path):
    """A plugin that sleeps forever, one that spins forever and one that kills the process:
    each poisoned event ends failed with its reason after two tries, every other event of the
    inbox is processed, and pages and API writes answer promptly all along."""
    poison_setup()
    integration = get_integration("POISON")
    keys = same_partition_keys(integration.id, 4)
    ingest(integration, poisoned_events(keys, {0: "hang", 5: "spin", 9: "exit"}), kick=False)
    log = tmp_path / "server.log"
    url, proc = start_server(app.config, log, **SERVER_ENV)
    api = requests.Session()
    api.headers.update(tokens["admin"])
    answers: list[tuple[str, int, float]] = []
    try:
        deadline = time.monotonic() + 240
        n = 0
        while time.monotonic() < deadline and _counts().get("pending", 0):
            n += 1
            answers.append(("page", *_timed(requests.get, f"{url}/auth/login")))
            answers.append(("write", *_timed(api.post, f"{url}/api/v1/integrations",
                                             json={"code": f"W{n}"})))
            time.sleep(0.5)
    finally:
        stop(proc)
    output = log.read_text()
    counts = _counts()
    assert counts == {"processed": 12, "failed": 3}, (counts, output)
    failed = {e.payload["poison"]: e.result for e in db.session.scalars(
        select(Event).where(Event.status == "failed"))}
    assert set(failed) == {"hang", "spin", "exit"}
    assert all(r.startswith("gave up after 2 attempts") for r in failed.values()), failed
    states = dict(db.session.execute(select(Instance.record_key, Instance.state)).all())
    assert states == dict.fromkeys(keys, "B")
    # The supervisor said what it did for each lost worker, and nothing crashed.
    assert f"job wfapp.jobs.process_events ran past JOB_TIMEOUT ({JOB_TIMEOUT} s)" in output
    assert "died (exit code 3) in job wfapp.jobs.process_events" in output, output
    assert "Traceback" not in output, output
    # The web process answered every request promptly, writes included: pages never wait for
    # a stuck job, and on SQLite a batch decides its events before its first write, so a
    # plugin stuck on one holds no lock (the batches here create the instances of first
    # events, the write that used to take SQLite's one write lock before deciding).
    assert len(answers) > 10
    assert {status for kind, status, _ in answers if kind == "page"} == {200}, answers
    assert {status for kind, status, _ in answers if kind == "write"} == {201}, answers
    assert max(seconds for kind, _, seconds in answers if kind == "page") < 2, answers
    assert max(seconds for kind, _, seconds in answers if kind == "write") < 2, answers


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("poison", ["spin", "hang"])
def test_killing_the_web_process_leaves_no_worker_process(app, tmp_path, poison):
    """SIGKILL the web process while its worker process is stuck in a job: the worker (and
    multiprocessing's resource tracker) go with it."""
    poison_setup()
    integration = get_integration("POISON")
    ingest(integration, poisoned_events(["K0", "K1", "K2", "K3"], {0: poison}), kick=False)
    url, proc = start_server(app.config, tmp_path / "server.log",
                             **dict(SERVER_ENV, WFAPP_JOB_TIMEOUT="600"))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            db.session.rollback()
            stuck = db.session.scalar(select(Event.attempts).where(Event.type == "bad"))
            if stuck:
                break
            time.sleep(0.2)
        assert stuck, (tmp_path / "server.log").read_text()
        children = _children(proc.pid)
        assert children, "the web process has no worker process"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_alive(pid) for pid in children):
            time.sleep(0.2)
        assert not [pid for pid in children if _alive(pid)]
    finally:
        stop(proc)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_with_isolation_off_the_jobs_run_in_the_web_process(app, tmp_path):
    poison_setup()
    ingest(get_integration("POISON"), poisoned_events(["K0", "K1", "K2", "K3"], {}), kick=False)
    url, proc = start_server(app.config, tmp_path / "server.log",
                             **dict(SERVER_ENV, WFAPP_EMBEDDED_ISOLATION="false"))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _counts().get("pending", 0):
            time.sleep(0.2)
        assert _counts() == {"processed": 12}
        assert _children(proc.pid) == []
    finally:
        stop(proc)


def test_only_an_in_memory_sqlite_database_keeps_the_jobs_in_the_web_process():
    assert shareable_database("sqlite:////tmp/wfapp.sqlite")
    assert shareable_database("postgresql+psycopg://postgres@127.0.0.1/wfapp")
    assert not shareable_database("sqlite://")
    assert not shareable_database("sqlite:///:memory:")
    assert not shareable_database("sqlite:///file:db?mode=memory&uri=true")


def test_on_sqlite_a_stuck_job_is_killed_within_the_busy_timeout():
    """A write waiting on a stuck batch's lock is served: the kill comes before SQLite's 30 s."""
    from wfapp.embedded_worker import SQLITE_JOB_SECONDS, job_deadline

    sqlite = "sqlite:////tmp/wfapp.db"
    assert job_deadline({"SQLALCHEMY_DATABASE_URI": sqlite, "JOB_TIMEOUT": 120}) == \
        SQLITE_JOB_SECONDS < 30
    assert job_deadline({"SQLALCHEMY_DATABASE_URI": sqlite, "JOB_TIMEOUT": 4}) == 4
    assert job_deadline({"SQLALCHEMY_DATABASE_URI": "postgresql+psycopg://h/db",
                         "JOB_TIMEOUT": 120}) == 120
