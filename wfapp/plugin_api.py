"""The one module a wfapp plugin imports: everything a trigger plugin may use, and nothing more.

wfapp's services, models and database layout change between releases; this module does not
break without a deprecation. The built-in webhook, Business Central and poll plugins use only
it. A plugin *emits events* — it stores them in the inbox with `store_events` — and never
changes an instance: the engine decides what an event does.

See docs/plugins.md for the guide.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flask import current_app, has_request_context, jsonify, request
from werkzeug.wrappers import Response

from .hookspecs import hookimpl
from .inputs import InputError, parse_json
from .models import DeliveryOutcome, Role, utcnow
from .paths import MISSING, resolve_path
from .security import public, requires_role
from .services.schedule_summary import ScheduleSummary
from .triggers import Field, Panel, TriggerType, glob_match

__all__ = [
    "MISSING", "DeliveryOutcome", "DueInstance", "Field", "InputError", "IntegrationInfo",
    "NewEvent", "Panel", "Role", "ScheduleSummary", "StoredEvents", "TriggerType", "claim_due",
    "config", "counters", "enqueue", "external_url", "finish_due", "finish_due_batch",
    "find_integration", "glob_match", "release_due", "schedule_summary",
    "hookimpl", "integrations", "json_error", "parse_json", "public", "recent_deliveries",
    "record_delivery", "count_delivery", "requires_role", "resolve_path", "set_secret",
    "state_get", "state_items", "state_put", "state_remove", "state_update", "store_events",
    "utcnow",
]


# --- events -------------------------------------------------------------------------------------


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


def store_events(integration: IntegrationInfo | str, events: Sequence[NewEvent]
                 ) -> StoredEvents:
    """Store events in the inbox in one transaction and queue their processing.

    Returns once they are committed; raises on a database failure (nothing is stored then).
    """
    from .services.events import NewEvent as CoreEvent
    from .services.events import store

    info = integration if isinstance(integration, IntegrationInfo) else \
        _require_integration(integration)
    ids, duplicates = store(info.id, [
        CoreEvent(e.source, e.type, e.record_key, e.run_id, e.payload, None, e.dedupe_key,
                  e.failure)
        for e in events])
    return StoredEvents(ids, duplicates)


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

        found = secrets.read(self.id, secrets.SETTING, name)
        if found is None:
            return None, None, None
        return found.value, found.previous, found.rotated_at

    def named_secrets(self) -> dict[str, str]:
        """The author's named secrets, decrypted, for `{secret.<name>}` in templates."""
        from .services import secrets

        return secrets.read_all(self.id, secrets.NAMED)


def _info(integration: Any) -> IntegrationInfo:
    from .services.registry import get_registry

    declared = get_registry().integration_settings
    stored = integration.settings or {}
    settings = {name: stored.get(name, f.default) for name, f in declared.items()
                if f.type != "secret"}
    return IntegrationInfo(
        id=integration.id, code=integration.code, description=integration.description or "",
        enabled=bool(integration.enabled),
        workflow_code=integration.workflow.code if integration.workflow else None,
        instance_mode=integration.instance_mode, settings=settings)


def find_integration(code: str) -> IntegrationInfo | None:
    """The integration with this code (any case), or None."""
    from .services.errors import NotFound
    from .services.integrations import get_integration

    if not isinstance(code, str) or len(code) > 100:
        return None
    try:
        return _info(get_integration(code))
    except NotFound:
        return None


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

    remote = request.remote_addr or "" if has_request_context() else ""
    deliveries.record(integration.id, channel, outcome, reason, status_code=status_code,
                      event_id=event_id, remote_addr=remote, detail={"key": key} if key else {})


def count_delivery(integration: IntegrationInfo, channel: str, outcome: DeliveryOutcome | str,
                   reason: str = "", by: int = 1) -> None:
    """Count deliveries without logging a row each (items dropped from one notification)."""
    from .services import deliveries

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

    plugin_state.put(integration.id, namespace, key, value)


def state_update(integration: IntegrationInfo, namespace: str, key: str,
                 changes: dict[str, Any]) -> dict[str, Any]:
    """Merge changes into a stored value and return it; commits."""
    from .services import plugin_state

    return plugin_state.update(integration.id, namespace, key, changes)


def state_remove(integration: IntegrationInfo, namespace: str, key: str) -> None:
    """Forget a stored value; commits."""
    from .services import plugin_state

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


def roles() -> Iterable[str]:
    """The role names, lowest first (for `requires_role(Role(...))`)."""
    return [r.value for r in Role]
