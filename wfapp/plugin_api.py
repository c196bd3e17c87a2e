"""The one module a wfapp plugin imports: everything a trigger plugin may use, and nothing more.

wfapp's services, models and database layout change between releases; this module does not
break without a deprecation. The built-in webhook, Business Central and poll plugins use only
it. A plugin *emits events* — it stores them in the inbox with `store_events` — and never
changes an instance: the engine decides what an event does.

See docs/plugins.md for the guide.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, TypeVar

from flask import Response, current_app, has_request_context, jsonify, request

from . import signing
from .actions import ActionContext, ActionResult, ActionType
from .formatting import span
from .hookspecs import hookimpl
from .inbound import inbound
from .inputs import MAX_DEPTH as _MAX_DEPTH
from .inputs import InputError, check_value, parse_json
from .metrics import MetricFamily, process_counter
from .models import DeliveryOutcome, Role, utcnow
from .paths import MISSING, resolve_path
from .security import actor_name, public, requires_role
from .services.schedule_summary import ScheduleSummary
from .triggers import Field, Panel, TriggerType, glob_match
from .yielding import InboxYield

__all__ = [
    "ActionContext", "ActionResult", "ActionType", "DatabaseCounter", "DeliveryOutcome",
    "DueInstance", "Field", "InboxYield",
    "InputError", "IntegrationChanged", "IntegrationInfo", "MAX_RECORD_KEY", "MISSING",
    "MetricFamily", "NewEvent",
    "Panel", "Role", "ScheduleSummary", "StorageUnavailable", "StoredEvents", "TriggerType",
    "actor_name", "claim_due", "config", "count_delivery", "counters", "csrf_exempt",
    "database_counter", "enqueue",
    "external_url", "find_integration", "finish_due", "finish_due_batch", "glob_match", "hookimpl",
    "inbound",
    "integrations", "job", "json_error", "other_events_waiting", "parse_json", "public",
    "recent_deliveries",
    "record_delivery", "release_due", "requires_role", "resolve_path", "roles", "schedule_summary",
    "set_secret", "signing", "span", "state_get", "state_items", "state_put", "state_remove",
    "state_update", "store_event_now", "store_events", "utcnow",
]

#: The longest record key an event may carry.
MAX_RECORD_KEY = 200


@contextmanager
def _writing() -> Iterator[None]:
    """Roll back when a write fails (so a job's next call still works); a database failure
    becomes StorageUnavailable."""
    from sqlalchemy.exc import SQLAlchemyError

    from .extensions import db

    try:
        yield
    except SQLAlchemyError as error:
        db.session.rollback()
        raise StorageUnavailable(str(error).splitlines()[0][:200]) from error
    except Exception:
        db.session.rollback()
        raise


# --- events -------------------------------------------------------------------------------------


class IntegrationChanged(RuntimeError):
    """`store_event_now` with a cached `IntegrationInfo`: the integration's settings or secrets
    changed since the copy was read (in any process); nothing was stored. Read it again with
    `find_integration(code)`, check the request again, and store with the fresh copy."""


class StorageUnavailable(RuntimeError):
    """The database failed (down, full, timed out); nothing was written. Answer 503 so the
    sender retries — it is not the sender's fault."""


@dataclass
class NewEvent:
    """An event a plugin wants stored.

    `source` is the trigger type's name; `type` the event name a transition may filter on;
    `record_key` (Per Record) or `run_id` (Per Run) says which instance it is for; `payload` is
    what conditions see as `event.*`; a second event with the same `dedupe_key` for the same
    integration is acknowledged and ignored (a random key is used when it is None).

    `failure`, when set, says the trigger could not get what it wanted (a poll that timed out,
    answered 500 or not JSON): the event is stored with status `failed` and this reason as its
    result, shown on its instance's page and the Events page, and not evaluated. It can be
    replayed like any failed event; the engine then evaluates it, and the trigger type's
    `matches` should say no to it (On Scheduled Poll does).
    """

    source: str
    type: str = ""
    record_key: str | None = None
    run_id: int | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    dedupe_key: str | None = None
    failure: str | None = None


@dataclass(frozen=True)
class StoredEvents:
    """What `store_events` did: the ids of the new events, in order, and how many were repeats."""

    ids: list[int]
    duplicates: int

    @property
    def stored(self) -> int:
        """How many new events were stored."""
        return len(self.ids)


def _check_event(index: int, event: Any) -> str:
    """Refuse, before anything is written, an event no database or engine could take; the
    payload as JSON text."""
    from .services.registry import get_registry

    where = f"events[{index}]"
    if not isinstance(event, NewEvent):
        raise ValueError(f"{where} must be a wfapp.plugin_api.NewEvent, not {event!r}")
    if event.source not in get_registry().trigger_types:
        raise ValueError(f"{where}.source {event.source!r} is not a registered trigger type")
    if not isinstance(event.type, str):
        raise ValueError(f"{where}.type must be a string")
    if event.record_key is not None and (
            not isinstance(event.record_key, str) or not event.record_key
            or len(event.record_key) > MAX_RECORD_KEY):
        raise ValueError(f"{where}.record_key must be a string of 1-{MAX_RECORD_KEY} characters")
    if event.run_id is not None and (isinstance(event.run_id, bool)
                                     or not isinstance(event.run_id, int)):
        raise ValueError(f"{where}.run_id must be an integer")
    if event.dedupe_key is not None and not isinstance(event.dedupe_key, str):
        raise ValueError(f"{where}.dedupe_key must be a string")
    if not isinstance(event.payload, dict):
        raise ValueError(f"{where}.payload must be a dict")
    try:
        # The payload is stored as JSON: refuse what JSON or the database cannot hold.
        text = json.dumps(event.payload, allow_nan=False)
        check_value({"type": event.type, "record_key": event.record_key or "",
                     "dedupe_key": event.dedupe_key or "", "payload": event.payload},
                    root=where, max_depth=_MAX_DEPTH + 1)
    except InputError as exc:
        raise ValueError(f"{exc.path}: {exc.message}") from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}.payload is not JSON: {exc}") from None
    return text


def store_events(integration: IntegrationInfo | str, events: Sequence[NewEvent]
                 ) -> StoredEvents:
    """Store events in the inbox in one transaction and queue their processing.

    Returns once they are committed. Raises ValueError, storing nothing, when an event is
    malformed (unknown source, record key over MAX_RECORD_KEY characters, NUL characters,
    a payload that is not JSON), LookupError for an unknown integration code, and
    StorageUnavailable when the database fails (nothing is stored then either).
    """
    from .services.events import NewEvent as CoreEvent
    from .services.events import store

    info = integration if isinstance(integration, IntegrationInfo) else \
        _require_integration(integration)
    for index, event in enumerate(events):
        _check_event(index, event)
    with _writing():
        ids, duplicates = store(info.id, [
            CoreEvent(e.source, e.type, e.record_key, e.run_id, e.payload, None, e.dedupe_key,
                      e.failure)
            for e in events])
    sources = {e.source for e in events}
    _count_inbound(sources.pop() if len(sources) == 1 else "mixed", len(ids), duplicates)
    return StoredEvents(ids, duplicates)


def other_events_waiting(source: str, at_least: int) -> int:
    """How many events of other sources than `source` wait, counted up to `at_least`: those
    pending in the inbox (an indexed look, cheap however many of `source`'s own events wait)
    and those a large ingest (50 events or more) announces while it is still writing them.

    For a plugin whose work is a pull it may time (polls) to yield to events someone waits for.
    """
    from .services.events import waiting_other_than

    return waiting_other_than(source, at_least)


class DatabaseCounter:
    """A counter kept in the database, so what worker processes count shows at every web
    process's /metrics (see `database_counter`)."""

    def __init__(self, name: str, help_text: str, labels: tuple[str, ...]) -> None:
        from .services import counters

        self.name = counters.define(name, help_text, labels)

    def add(self, values: tuple[str, ...] = (), by: int = 1) -> None:
        """Count `by` for these label values, in a transaction of its own (commits)."""
        from .extensions import db
        from .services import counters

        with _writing():
            counters.add(self.name, values, by)
            db.session.commit()


def database_counter(name: str, help_text: str, labels: tuple[str, ...] = ()
                     ) -> DatabaseCounter:
    """Declare a counter kept in the database (`wfapp_…_total`); call it at import, once."""
    return DatabaseCounter(name, help_text, labels)


def _count_inbound(source: str, stored: int, duplicates: int) -> None:
    """This process's count of events stored by inbound endpoints and jobs (per host)."""
    counter = process_counter("wfapp_inbound_events_total",
                              "Events handed to the inbox by plugins in this host's processes, "
                              "by source and outcome (stored, duplicate)", ("source", "outcome"))
    if stored:
        counter.labels(source, "stored").inc(stored)
    if duplicates:
        counter.labels(source, "duplicate").inc(duplicates)


# --- integrations -------------------------------------------------------------------------------


@dataclass(frozen=True)
class IntegrationInfo:
    """A read-only view of an integration: its fields and its non-secret plugin settings."""

    id: int
    code: str
    description: str
    enabled: bool
    workflow_code: str | None
    instance_mode: str
    settings: Mapping[str, Any]
    #: Bumped by every change of the integration's fields, settings or secrets.
    version: int = 0
    #: True for a copy `find_integration(code, cached=True)` kept from an earlier request.
    cached: bool = field(default=False, compare=False)
    # Secrets read through this snapshot, kept with it (a cached snapshot reads them once).
    _secrets: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def setting(self, name: str, default: Any = None) -> Any:
        """A plugin setting's value (its declared default when unset)."""
        value = self.settings.get(name)
        return default if value is None else value

    def secret(self, name: str) -> str | None:
        """A secret setting's value, decrypted (None when not set)."""
        from .services import secrets

        found = secrets.read(self.id, secrets.SETTING, name)
        return found.value if found is not None else None

    def secret_with_previous(self, name: str) -> tuple[str | None, str | None, datetime | None]:
        """(value, the value it replaced, when it was replaced) of a secret setting."""
        from .services import secrets

        if name not in self._secrets:
            with _writing():
                self._secrets[name] = secrets.read(self.id, secrets.SETTING, name)
        found = self._secrets[name]
        if found is None:
            return None, None, None
        return found.value, found.previous, found.rotated_at

    def named_secrets(self) -> dict[str, str]:
        """The author's named secrets, decrypted, for `{secret.<name>}` in templates."""
        from .services import secrets

        return secrets.read_all(self.id, secrets.NAMED)


def _info(integration: Any, workflow_code: Any = MISSING, version: int | None = None
          ) -> IntegrationInfo:
    from .services.registry import get_registry

    declared = get_registry().integration_settings
    stored = integration.settings or {}
    settings = {name: stored.get(name, f.default) for name, f in declared.items()
                if f.type != "secret"}
    if workflow_code is MISSING:
        workflow_code = integration.workflow.code if integration.workflow else None
    return IntegrationInfo(
        id=integration.id, code=integration.code, description=integration.description or "",
        enabled=bool(integration.enabled), workflow_code=workflow_code,
        instance_mode=integration.instance_mode, settings=settings,
        version=getattr(integration, "config_version", 0) if version is None else version)


def find_integration(code: str, max_age: float = 0.0, *, cached: bool = False
                     ) -> IntegrationInfo | None:
    """The integration with this code (any case), or None; StorageUnavailable if the database
    fails. One query, or none:

    - `cached=True`: this process's copy from an earlier call (with the secrets it read), read
      once and kept until the integration changes — for endpoints called on every request. It
      may be stale when another process changed the integration: `store_event_now` notices in
      the statement that stores (raising IntegrationChanged, storing nothing), and a caller that
      refuses a request on a cached copy should first compare `version` with a fresh
      `find_integration(code)`. A change made in this process drops every copy at once.
    - `max_age` > 0 (older, superseded by `cached`): a copy up to that many seconds old.
    """
    from .services import config_cache
    from .services.integrations import find_integration_row

    if not isinstance(code, str) or len(code) > 100:
        return None
    key = ("integration", code.strip().upper())
    if cached:
        found = config_cache.peek(key)
        if found is not None:
            return found

    def load() -> IntegrationInfo | None:
        with _writing():
            row = find_integration_row(code)
        return None if row is None else _info(row, row.workflow_code, row.config_version)

    if max_age > 0:
        return config_cache.get(key, max_age, load)
    generation = config_cache.generation()
    info = load()
    # Every fresh read refreshes the copy; unknown codes are not kept (a flood of made-up
    # codes must not fill the cache), and a copy of one that is gone is dropped.
    config_cache.put(key, None if info is None else replace(info, cached=True), generation)
    return info


def store_event_now(integration: IntegrationInfo, event: NewEvent) -> StoredEvents:
    """Store one event in its own transaction, at once, whatever else this request did.

    The hot path for inbound endpoints (one event per request): on PostgreSQL a single
    round trip on a connection kept for it. Checks the event like `store_events`; raises
    StorageUnavailable when the database fails (nothing stored). `duplicates` is 1 for a
    repeated dedupe key. With a cached `integration` (`find_integration(code, cached=True)`)
    the same statement checks that the integration has not changed since, and raises
    IntegrationChanged (nothing stored) when it has.
    """
    from .services.events import IntegrationChanged as Changed
    from .services.events import NewEvent as CoreEvent
    from .services.inbox_writer import WriteFailed, store_one

    payload_json = _check_event(0, event)
    if event.failure is not None:
        return store_events(integration, [event])
    try:
        with _writing():  # SQLite takes the regular path, whose errors arrive as SQLAlchemy's
            new_id = store_one(integration.id, CoreEvent(
                event.source, event.type, event.record_key, event.run_id, event.payload, None,
                event.dedupe_key), expect_version=integration.version if integration.cached
                else None, payload_json=payload_json)
    except WriteFailed as error:
        raise StorageUnavailable(str(error)) from error
    except Changed as error:
        raise IntegrationChanged(str(error)) from None
    _count_inbound(event.source, int(new_id is not None), int(new_id is None))
    return StoredEvents([new_id], 0) if new_id is not None else StoredEvents([], 1)


def _require_integration(code: str) -> IntegrationInfo:
    info = find_integration(code)
    if info is None:
        raise LookupError(f"integration {code!r} does not exist")
    return info


def integrations() -> list[IntegrationInfo]:
    """Every integration, by code."""
    from .services.integrations import list_integrations

    return [_info(i) for i in list_integrations()]


def set_secret(integration: IntegrationInfo, name: str, value: str | None) -> None:
    """Store (or, with None, remove) a secret setting of the integration; commits.

    Storing a new value keeps the old one as the previous value (see `secret_with_previous`).
    """
    from .extensions import db
    from .services import secrets
    from .services.registry import get_registry

    declared = get_registry().integration_settings.get(name)
    if declared is None or declared.type != "secret":
        raise ValueError(f"{name!r} is not a registered secret setting (Field type 'secret')")
    if value is not None and (not isinstance(value, str) or "\x00" in value):
        raise ValueError(f"the value of {name!r} must be a string without NUL characters")
    with _writing():
        if value is None:
            secrets.remove(integration.id, secrets.SETTING, [name])
        else:
            secrets.put(integration.id, secrets.SETTING, name, value)
        db.session.commit()


# --- the delivery log ---------------------------------------------------------------------------


def record_delivery(integration: IntegrationInfo, channel: str, outcome: DeliveryOutcome | str,
                    reason: str = "", *, status_code: int | None = None,
                    event_id: int | None = None, key: str = "") -> None:
    """Log a delivery that did not become a new event (duplicate, refused, failed) and count it.

    Accepted deliveries need no call: they are the stored events (see `recent_deliveries`).
    """
    from .services import deliveries

    # Scheduled jobs log deliveries too, outside any request.
    remote = (request.remote_addr or "") if has_request_context() else ""
    with _writing():
        deliveries.record(integration.id, channel, outcome, reason, status_code=status_code,
                          event_id=event_id, remote_addr=remote,
                          detail={"key": key} if key else {})


def count_delivery(integration: IntegrationInfo, channel: str, outcome: DeliveryOutcome | str,
                   reason: str = "", by: int = 1) -> None:
    """Count deliveries without logging a row each (items dropped from one notification)."""
    from .services import deliveries

    with _writing():
        deliveries.count(integration.id, channel, DeliveryOutcome(outcome).value, reason, by=by)


def recent_deliveries(integration: IntegrationInfo, channel: str, source: str | None = None,
                      limit: int = 20) -> list[Any]:
    """The newest deliveries of a channel: its log merged with the events of trigger `source`.

    Each row has `at`, `outcome`, `reason`, `event_id`, `event_status`, `status_code`,
    `remote_addr` and `key`.
    """
    from .services import deliveries

    return deliveries.recent(integration.id, channel, source, limit)


def counters(integration: IntegrationInfo, channel: str) -> dict[str, Any]:
    """The delivery counters of a channel by outcome (`count`, `last_at`, `last_reason`)."""
    from .services import deliveries

    return deliveries.counters(integration.id, channel)


# --- plugin state -------------------------------------------------------------------------------


def state_get(integration: IntegrationInfo, namespace: str, key: str) -> dict[str, Any] | None:
    """A JSON value the plugin stored for this integration under (namespace, key), or None."""
    from .services import plugin_state

    return plugin_state.get(integration.id, namespace, key)


def state_put(integration: IntegrationInfo, namespace: str, key: str, value: dict[str, Any]
              ) -> None:
    """Store (replace) a JSON value for this integration; commits."""
    from .services import plugin_state

    with _writing():
        plugin_state.put(integration.id, namespace, key, value)


def state_update(integration: IntegrationInfo, namespace: str, key: str,
                 changes: dict[str, Any]) -> dict[str, Any]:
    """Merge changes into a stored value and return it; commits."""
    from .services import plugin_state

    with _writing():
        return plugin_state.update(integration.id, namespace, key, changes)


def state_remove(integration: IntegrationInfo, namespace: str, key: str) -> None:
    """Forget a stored value; commits."""
    from .services import plugin_state

    with _writing():
        plugin_state.remove(integration.id, namespace, key)


def state_items(namespace: str, integration: IntegrationInfo | None = None
                ) -> list[tuple[IntegrationInfo, str, dict[str, Any]]]:
    """(integration, key, value) of a namespace, for one integration or every one."""
    from .extensions import db
    from .models import Integration
    from .services import plugin_state

    rows = plugin_state.items(namespace, integration.id if integration else None)
    infos: dict[int, IntegrationInfo] = {}
    out = []
    for integration_id, key, value in rows:
        if integration_id not in infos:
            row = db.session.get(Integration, integration_id)
            if row is None:
                continue
            infos[integration_id] = _info(row)
        out.append((infos[integration_id], key, value))
    return out


# --- scheduled triggers (polls) -----------------------------------------------------------------


@dataclass(frozen=True)
class DueInstance:
    """One instance whose scheduled trigger is due: what a poll needs to build its request.

    `due_at` is the due time that was claimed (with `timer_id`, a stable dedupe key for the
    run); `interval_seconds` the transition's interval; `failures` the failed runs in a row
    before this one.
    """

    timer_id: int
    instance_id: int
    integration: IntegrationInfo
    transition: str
    config: Mapping[str, Any]
    record_key: str | None
    run_id: int | None
    state: str
    vars: Mapping[str, Any]
    data: Mapping[str, Any]
    failures: int
    due_at: datetime | None = None
    interval_seconds: float = 0.0


def claim_due(trigger_type: str, limit: int, *, per_integration: Mapping[int, int] | None = None,
              sync: bool = False) -> list[DueInstance]:
    """Claim up to `limit` due timers of a scheduled trigger type; commits.

    Claiming moves each timer's due time one interval ahead in the same transaction, so two
    schedulers never claim one instance twice per interval. `per_integration`, when given, caps
    how many are claimed per integration id this time (integrations it does not name are not
    claimed).
    `sync` first brings the timers in step with the instances (new instances get a timer,
    instances that moved on lose theirs) — do it once per scheduling round, not per refill.
    """
    from sqlalchemy import select
    from sqlalchemy.orm import joinedload

    from .extensions import db
    from .models import Integration
    from .services import schedules

    claimed = schedules.claim_due(trigger_type, limit, per_integration=per_integration,
                                  sync_first=sync)
    infos: dict[int, IntegrationInfo] = {}
    ids = {c.integration_id for c in claimed}
    if ids:
        rows = db.session.scalars(select(Integration).where(Integration.id.in_(ids))
                                  .options(joinedload(Integration.workflow)))
        infos = {row.id: _info(row) for row in rows}
        db.session.commit()
    return [DueInstance(c.timer_id, c.instance_id, infos[c.integration_id], c.transition,
                        c.config, c.record_key, c.run_id, c.state, c.vars, c.data, c.failures,
                        c.due_at, c.interval)
            for c in claimed if c.integration_id in infos]


def finish_due(item: DueInstance, error: str | None = None) -> None:
    """Report how a claimed run went: None resets the failure count, an error backs off."""
    finish_due_batch([(item, error)])


def finish_due_batch(results: Sequence[tuple[DueInstance, str | None]]) -> None:
    """Report many claimed runs in one transaction (see `finish_due`).

    A failing timer backs off: interval × 2^failures, at most 10 intervals and at most 1 hour
    (never less than its interval).
    """
    from .services import schedules

    schedules.finish_many([
        schedules.Finished(item.timer_id, item.interval_seconds or 60.0, item.failures, error)
        for item, error in results])


def release_due(items: Sequence[DueInstance]) -> None:
    """Give back claimed runs that were never started: they are due again at once (commits).

    Call it when stopping with claims still waiting, so a restart loses none of them.
    """
    from .services import schedules

    schedules.release([(item.timer_id, item.due_at) for item in items
                       if item.due_at is not None])


def schedule_summary(integration: IntegrationInfo, trigger_type: str) -> list[ScheduleSummary]:
    """Per scheduled transition of the integration: instances waiting, next due, failing timers
    and the latest error (for a card panel)."""
    from .services import schedule_summary

    return schedule_summary.summary(integration.id, trigger_type)


# --- the web side -------------------------------------------------------------------------------


def json_error(status: int, code: str, message: str, details: Any = None) -> Response:
    """A JSON error response in wfapp's shape `{"error": {"code", "message", "details"}}`."""
    response = jsonify({"error": {"code": code, "message": message, "details": details}})
    response.status_code = status
    return response


def csrf_exempt(view: Any) -> Any:
    """Exempt a view (or a whole blueprint) from CSRF checks: for POSTs that machines send.

    Forms of logged-in people keep their CSRF token; a webhook-style endpoint has no session
    to protect and authenticates each request itself (a signature, a shared secret).
    """
    from .extensions import csrf

    return csrf.exempt(view)


def external_url(path: str) -> str:
    """The absolute URL of `path` as senders reach this app (EXTERNAL_URL, else the request's)."""
    base = (current_app.config.get("EXTERNAL_URL") or "").rstrip("/")
    if not base and has_request_context():
        base = request.host_url.rstrip("/")
    return f"{base}{path}" if base else path


def config(name: str, default: Any = None) -> Any:
    """A value of the app's configuration (`WFAPP_<NAME>` in the environment)."""
    return current_app.config.get(name, default)


def enqueue(path: str, *args: Any) -> None:
    """Run a module-level job function (by dotted path, with JSON-able args) on the queue."""
    from .queue import get_queue

    get_queue().enqueue(path, *args)


_J = TypeVar("_J", bound=Callable[..., Any])


def job(function: _J) -> _J:
    """Decorate a plugin's job function: its database session is released when it returns.

    An RQ worker keeps one app context for its whole life, so without this a job's session (and
    an open transaction, with its locks) would stay around until the next job.
    """
    @functools.wraps(function)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        from .extensions import db

        try:
            return function(*args, **kwargs)
        finally:
            db.session.remove()
    return wrapped  # type: ignore[return-value]


def roles() -> Iterable[str]:
    """The role names, lowest first (for `requires_role(Role(...))`)."""
    return [r.value for r in Role]
