"""Factories for poll tests: a workflow whose WAIT state is left by a poll, and its instances."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from html.parser import HTMLParser
from typing import Any

from sqlalchemy import func, select, update

from wfapp.extensions import db
from wfapp.models import Event, Instance, InstanceTimer, utcnow
from wfapp.services.definitions import FORMAT, import_document
from wfapp.services.events import NewEvent, ingest
from wfapp.services.integrations import create_integration, get_integration
from wfapp.services.processing import process_pending

POLL = "on_scheduled_poll"


def poll_workflow(code: str = "SHIP", *, url: str = "http://127.0.0.1:9/orders/{record_key}",
                  extra: Iterable[dict[str, Any]] = (), **config: Any) -> dict[str, Any]:
    """NEW --START (webhook)--> WAIT --CHECK (poll)--> DONE; `config` is CHECK's trigger config."""
    trigger = {"url": url, "interval_minutes": 1, "response_path": "status",
               "expected_value": "shipped", **config}
    wf = {
        "code": code, "description": "poll test", "initial_state": "NEW",
        "states": [{"code": "NEW", "is_initial": True}, {"code": "WAIT"},
                   {"code": "DONE", "is_final": True}],
        "transitions": [
            {"code": "START", "from_state": "NEW", "to_state": "WAIT",
             "trigger_type": "on_webhook", "trigger_config": {"event_filter": "start"}},
            {"code": "BACK", "from_state": "WAIT", "to_state": "NEW",
             "trigger_type": "on_webhook", "trigger_config": {"event_filter": "back"}},
            {"code": "CHECK", "from_state": "WAIT", "to_state": "DONE", "trigger_type": POLL,
             "trigger_config": trigger, "capture": {"carrier": "event.carrier"}},
            *extra,
        ],
    }
    import_document({"format": FORMAT, "workflow": wf}, replace=True)
    return wf


def edit_poll(workflow: str = "SHIP", code: str = "CHECK", *, migrate: bool = True,
              **fields: Any) -> int:
    """Save transition `code` with `fields` (a new version; `trigger_config` is merged) and, when
    `migrate`, move the workflow's active instances onto that version. Returns its number."""
    from wfapp.services.definitions import get_workflow
    from wfapp.services.workflows import save_transition

    if "trigger_config" in fields:
        wf = get_workflow(workflow)
        current = next(t for t in wf.transitions if t.code == code)
        fields["trigger_config"] = {**(current.trigger_config or {}), **fields["trigger_config"]}
    number = save_transition(workflow, code, fields).latest_version
    if migrate:
        rows = db.session.execute(
            select(Instance.id).join(Instance.workflow)
            .where(Instance.active.is_(True), Instance.workflow_version != number)).all()
        move_to_version([instance_id for (instance_id,) in rows], number)
    return number


def move_to_version(ids: Iterable[int], number: int) -> None:
    """Migrate these instances onto version `number` of their workflow (committed)."""
    from wfapp.services.migrations import move_many

    refused = move_many(list(ids), number, {}, "tester")
    db.session.commit()
    assert not refused, refused


def integration(code: str = "FEED", workflow: str = "SHIP", **fields: Any) -> Any:
    """Create an integration attached to `workflow`."""
    return create_integration({"code": code, "workflow_code": workflow, **fields})


def send(code: str, keys: Iterable[str], kind: str = "start",
         payload: dict[str, Any] | None = None) -> None:
    """Webhook-style events for `keys`, processed at once (creates instances, moves them)."""
    ingest(get_integration(code), [NewEvent("on_webhook", kind, key, None, payload or {})
                                   for key in keys], kick=False)
    process_pending(time_budget=60)


def waiting(code: str, keys: Iterable[str], payload: dict[str, Any] | None = None) -> None:
    """Instances for `keys` in WAIT (created by a `start` event, with `payload` as record)."""
    send(code, keys, "start", payload)


def make_due(when: Any = None) -> None:
    """Every timer due now (or at `when`), the missing ones made first."""
    from wfapp.services.schedules import sync

    sync(POLL)
    db.session.execute(update(InstanceTimer).values(due_at=when or utcnow()))
    db.session.commit()


def poll_events(status: str | None = None) -> list[Event]:
    """The events stored by polls, oldest first."""
    db.session.rollback()
    query = select(Event).where(Event.source == POLL).order_by(Event.id)
    if status:
        query = query.where(Event.status == status)
    return list(db.session.scalars(query))


def count_poll_events() -> int:
    """How many poll events are stored."""
    db.session.rollback()
    return db.session.scalar(select(func.count()).select_from(Event)
                             .where(Event.source == POLL)) or 0


def states() -> dict[str | None, str]:
    """record key -> state of every instance."""
    db.session.rollback()
    return dict(db.session.execute(select(Instance.record_key, Instance.state)).all())


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, step: float = 0.05) -> Any:
    """Poll `predicate` until it is truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {predicate}"
                                 f"{_executor_state()}")
        time.sleep(step)


VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
                  "source", "track", "wbr"})


class _Tables(HTMLParser):
    """Collects the text of each cell of each table row, by the table's id."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.ids: dict[str, str] = {}
        self._stack: list[str | None] = []
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._capture: list[tuple[str, int, list[str]]] = []
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag in VOID:
            return
        self._depth += 1
        if found.get("id"):
            self._capture.append((found["id"] or "", self._depth, []))
        if tag == "table":
            self._table = found.get("id") or ""
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._table is not None and self._row is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
        while self._capture and self._capture[-1][1] >= self._depth:
            name, _, parts = self._capture.pop()
            self.ids[name] = " ".join("".join(parts).split())
        self._depth -= 1

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        for _, _, parts in self._capture:
            parts.append(data)


def parse_page(html: str) -> _Tables:
    """The page's tables (`.tables[id]`: rows of cell texts) and the text of each element by id."""
    parser = _Tables()
    parser.feed(html)
    parser.close()
    return parser


def _executor_state() -> str:
    """What the poll executors of this process hold (for a timeout's message)."""
    from wfapp.builtin_plugins._poll_executor import _executors

    out = []
    for executor in list(_executors.values()):
        with executor.cond:
            out.append(f"queued={ {i: len(q) for i, q in executor.queues.items()} } "
                       f"running={dict(executor.running)} more={executor.more} "
                       f"caps={executor.caps} workers={executor.workers} "
                       f"results={len(executor.results)} pump={executor.pump} "
                       f"stats={dict(executor.stats)}")
    return "; executors: " + " | ".join(out) if out else ""
