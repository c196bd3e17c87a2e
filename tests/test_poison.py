"""Untrusted patterns and poison events: nothing an author or a sender does stops processing."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.poison_flows import poison_setup, poisoned_events, same_partition_keys
from tests.services import start_worker
from wfapp.extensions import db
from wfapp.models import Event, Instance
from wfapp.services.definitions import FORMAT, import_document
from wfapp.services.events import ingest
from wfapp.services.integrations import create_integration, get_integration
from wfapp.services.runs import start_run


def _regex_workflow() -> None:
    import_document({"format": FORMAT, "workflow": {
        "code": "NAMES", "initial_state": "NEW", "states": [
            {"code": "NEW", "is_initial": True}, {"code": "OK", "is_final": True}],
        "transitions": [{"code": "MATCHED", "from_state": "NEW", "to_state": "OK",
                         "trigger_type": "on_import",
                         "conditions": [{"field": "record.name", "operator": "matches",
                                         "value": "(a+)+$"}]}]}})
    create_integration({"code": "NAMES", "workflow_code": "NAMES"})


def test_catastrophic_pattern_in_a_workflow_processes_in_milliseconds(app):
    """`(a+)+$` against "a" * 34 + "!" once stopped the site; on RE2 it is instant."""
    _regex_workflow()
    records = [{"key": "EVIL", "data": {"name": "a" * 34 + "!"}},
               {"key": "GOOD", "data": {"name": "aaaa"}},
               {"key": "LONG", "data": {"name": "a" * 50_000 + "!"}}]
    start_run(get_integration("NAMES"), "import", records, "tester")
    started = time.perf_counter()
    app.extensions["wfapp"]["queue"].drain()
    elapsed = time.perf_counter() - started
    states = dict(db.session.execute(select(Instance.record_key, Instance.state)).all())
    assert states == {"EVIL": "NEW", "GOOD": "OK", "LONG": "NEW"}
    assert db.session.scalar(select(func.count()).select_from(Event)
                             .where(Event.status != "processed")) == 0
    assert elapsed < 10  # generous: Python's backtracking re needed hours here


def _counts() -> dict[str, int]:
    db.session.rollback()
    return dict(db.session.execute(select(Event.status, func.count()).group_by(Event.status))
                .all())


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    app_config.update({"PLUGINS": ["tests.plugins.poison"], "JOB_TIMEOUT": 2,
                       "MAX_EVENT_ATTEMPTS": 3})
    return app_config


@pytest.mark.redis
@pytest.mark.slow
def test_poison_events_fail_and_everything_else_is_processed(rq_app):
    """A worker killed by an event, an event that hangs, one that raises: each is marked
    failed with its reason after at most MAX_EVENT_ATTEMPTS tries; the rest are processed."""
    from wfapp.queue import PROCESS_JOB, get_queue

    poison_setup()
    integration = get_integration("POISON")
    keys = same_partition_keys(integration.id, 4)
    ingest(integration, poisoned_events(keys, {3: "exit", 6: "hang", 9: "raise"}), kick=False)
    env = {"WFAPP_PLUGINS": "tests.plugins.poison", "WFAPP_JOB_TIMEOUT": "2",
           "WFAPP_MAX_EVENT_ATTEMPTS": "3"}
    for _ in range(15):
        if _counts().get("pending", 0) == 0:
            break
        time.sleep(2.1)  # a killed worker's partition lease (2 s in these tests) runs out
        get_queue().enqueue(PROCESS_JOB)
        worker = start_worker(rq_app.config, burst=True, **env)
        worker.communicate(timeout=120)
    counts = _counts()
    assert counts == {"processed": 12, "failed": 3}, counts
    failed = {e.payload["poison"]: e.result for e in db.session.scalars(
        select(Event).where(Event.status == "failed"))}
    assert failed["exit"].startswith("gave up after 3 attempts")
    assert failed["hang"].startswith("gave up after 3 attempts")
    assert failed["raise"] == "error: plugin bug"
    # Every good event was applied: each key toggled once per good event.
    states = dict(db.session.execute(select(Instance.record_key, Instance.state)).all())
    assert states == {keys[0]: "B", keys[1]: "B", keys[2]: "B", keys[3]: "B"}
