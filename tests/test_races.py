"""Requests racing each other: one wins, the others get a clear 4xx, nothing is written twice."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from sqlalchemy import func, select

from wfapp.extensions import db
from wfapp.models import AuditEntry
from wfapp.services.definitions import FORMAT

API = "/api/v1"
DOC = {"format": FORMAT, "workflow": {
    "code": "RACE", "initial_state": "A",
    "states": [{"code": "A", "is_initial": True}, {"code": "B", "is_final": True}],
    "transitions": [{"code": "GO", "from_state": "A", "to_state": "B",
                     "trigger_type": "manual"}]}}


def _at_once(app: Any, count: int, call: Any) -> Counter[int]:
    """Run `call(client)` in `count` threads released together; count the status codes."""
    barrier = threading.Barrier(count)
    codes: list[int] = []

    def run() -> None:
        client = app.test_client()
        barrier.wait()
        codes.append(call(client))

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return Counter(codes)


def test_parallel_imports_of_one_new_code(app, tokens):
    codes = _at_once(app, 10, lambda c: c.post(f"{API}/workflows/import", json=DOC,
                                               headers=tokens["author"]).status_code)
    assert codes == Counter({201: 1, 409: 9})


def test_parallel_copies_to_one_new_code(app, tokens):
    app.test_client().post(f"{API}/workflows/import", json=DOC, headers=tokens["author"])
    codes = _at_once(app, 10, lambda c: c.post(f"{API}/workflows/RACE/copy",
                                               json={"new_code": "RACE2"},
                                               headers=tokens["author"]).status_code)
    assert codes == Counter({201: 1, 409: 9})


def test_parallel_deletes_of_one_workflow(app, tokens):
    app.test_client().post(f"{API}/workflows/import", json=DOC, headers=tokens["author"])
    codes = _at_once(app, 10, lambda c: c.delete(f"{API}/workflows/RACE",
                                                 headers=tokens["author"]).status_code)
    assert codes == Counter({200: 1, 404: 9})
    db.session.rollback()
    assert db.session.scalar(select(func.count()).select_from(AuditEntry)
                             .where(AuditEntry.action == "delete")) == 1


def test_parallel_deletes_of_one_instance(app, tokens):
    from wfapp.services.integrations import create_integration, get_integration
    from wfapp.services.runs import start_run

    client = app.test_client()
    client.post(f"{API}/workflows/import", json=DOC, headers=tokens["author"])
    create_integration({"code": "FEED", "workflow_code": "RACE"})
    start_run(get_integration("FEED"), "import", [{"key": "K", "data": {}}], "tester")
    app.extensions["wfapp"]["queue"].drain()
    instance_id = client.get(f"{API}/instances", headers=tokens["viewer"]).get_json()[
        "items"][0]["id"]
    codes = _at_once(app, 10, lambda c: c.delete(f"{API}/instances/{instance_id}",
                                                 headers=tokens["operator"]).status_code)
    assert codes == Counter({204: 1, 404: 9})
    db.session.rollback()
    assert db.session.scalar(select(func.count()).select_from(AuditEntry)
                             .where(AuditEntry.action == "delete")) == 1
