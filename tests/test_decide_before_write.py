"""On SQLite a batch and the timeout sweep run plugin code only while they hold no write lock.

SQLite has one write lock for the whole database, taken by a transaction's first write and held
until it commits. Plugin code (trigger types, actions) that hangs while a batch holds it would
make every write of the web process wait until the stuck job is killed. A probe wrapped around
the plugins tries to take the write lock from another connection, without waiting, each time
they run.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from tests.test_ledger import ledger_workflow
from wfapp.extensions import db
from wfapp.models import Event, Instance, utcnow
from wfapp.services.definitions import FORMAT, import_document
from wfapp.services.events import NewEvent, ingest
from wfapp.services.integrations import get_integration
from wfapp.services.processing import process_pending
from wfapp.services.registry import get_registry
from wfapp.services.timeouts import fire_due_timeouts

pytestmark = pytest.mark.sqlite


def _write_lock_free() -> bool:
    """Whether another connection could begin writing to the database right now."""
    path = db.engine.url.database
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError as error:
        assert "locked" in str(error), error
        return False
    finally:
        other.close()


def _probe(monkeypatch: pytest.MonkeyPatch, plugin: Any, method: str
           ) -> list[tuple[Any, bool]]:
    """Wrap `plugin.method(config, x)`: each call notes which event or instance x is (its
    payload's `key`, or its record key) and whether the write lock was free."""
    seen: list[tuple[Any, bool]] = []
    real: Callable[..., Any] = getattr(plugin, method)

    def probed(config: Any, given: Any) -> Any:
        key = given["payload"]["key"] if isinstance(given, dict) else given.record_key
        seen.append((key, _write_lock_free()))
        return real(config, given)

    monkeypatch.setattr(plugin, method, probed)
    return seen


def _states() -> dict[str, str]:
    db.session.expire_all()
    return dict(db.session.execute(select(Instance.record_key, Instance.state)).all())


def test_a_batch_decides_before_its_first_write(app, monkeypatch):
    ledger_workflow()
    integration = get_integration("LEDGER_IN")
    ingest(integration, [NewEvent("on_webhook", "go", "OLD", None, {})], kick=False)
    process_pending(time_budget=30)
    seen = _probe(monkeypatch, get_registry().trigger_types["on_webhook"], "matches")
    # New instances (created by the batch) and an existing one, in one batch.
    ingest(integration, [NewEvent("on_webhook", kind, key, None, {"key": f"{key}:{kind}"})
                         for key, kind in (("N1", "go"), ("OLD", "back"), ("N2", "go"),
                                           ("N1", "back"))], kick=False)
    process_pending(time_budget=30)
    assert _states() == {"OLD": "NEW", "N1": "NEW", "N2": "WAIT"}
    # The batch decided every event before it wrote anything (the rehearsal), then decided
    # them again, the same way, once the new instances had their ids: a plugin that hangs
    # on an event hangs in the first pass, while the batch holds no lock.
    half = len(seen) // 2
    assert half >= 4 and seen[:half] == [(event, True) for event, _ in seen[half:]], seen
    assert {e.status for e in db.session.scalars(select(Event))} == {"processed"}


def test_the_sweep_runs_actions_before_its_first_write(app, monkeypatch):
    wf = ledger_workflow()
    expire = next(t for t in wf["transitions"] if t["code"] == "EXPIRE")
    expire["actions"] = [{"type": "set_variable",
                          "config": {"values": {"expired": "{record_key}"}}}]
    import_document({"format": FORMAT, "workflow": wf}, replace=True)
    integration = get_integration("LEDGER_IN")
    ingest(integration, [NewEvent("on_webhook", "go", f"T{i}", None, {}) for i in range(3)],
           kick=False)
    process_pending(time_budget=30)
    seen = _probe(monkeypatch, get_registry().action_types["set_variable"], "apply")
    assert fire_due_timeouts(now=utcnow() + timedelta(hours=2)) == 3
    assert _states() == {"T0": "LATE", "T1": "LATE", "T2": "LATE"}
    assert [i.vars for i in db.session.scalars(select(Instance).order_by(Instance.id))] == \
        [{"expired": f"T{i}"} for i in range(3)]
    # Timeouts are decided before the sweep writes: each action ran once, with the lock free.
    assert seen == [(f"T{i}", True) for i in range(3)], seen
