"""The audit log: who changed what, when — written in the same transaction as the change.

Every change of a workflow definition (with its differences), an integration (secrets only as
"changed"), a user, a role or a token, and every reset, delete and replay is recorded. The log
is append-only: nothing in wfapp updates or deletes a row (on PostgreSQL a trigger refuses it).
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import g, has_app_context, has_request_context
from sqlalchemy import select

from ..extensions import db
from ..models import AuditEntry, utcnow

MAX_CHANGES = 200


def actor() -> str:
    """Who is acting: the request's user, else what the CLI or a job set, else the OS user."""
    if has_app_context():
        name = g.get("actor")
        if name:
            return str(name)
    if has_request_context():
        return "anonymous"
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # noqa: BLE001 — no user name in this environment
        return "cli"


def set_actor(name: str) -> None:
    """Name the actor of this app context (a request's user, `worker`, `cli:<user>`)."""
    g.actor = name


def record(action: str, object_type: str, object_key: str, details: dict[str, Any] | None = None,
           *, who: str | None = None) -> None:
    """Add an audit row to the current transaction (the caller commits it with the change)."""
    details = dict(details or {})
    changes = details.get("changes")
    if isinstance(changes, list) and len(changes) > MAX_CHANGES:
        details["changes"] = changes[:MAX_CHANGES] + [f"… and {len(changes) - MAX_CHANGES} more"]
    db.session.add(AuditEntry(at=utcnow(), actor=(who or actor())[:64], action=action[:40],
                              object_type=object_type[:40], object_key=str(object_key)[:200],
                              details=details))


def field_changes(before: dict[str, Any], after: dict[str, Any],
                  secret: frozenset[str] = frozenset()) -> list[str]:
    """Lines such as `description: 'a' → 'b'`; a secret only ever shows as changed."""
    lines = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if key in secret or key.startswith("secret."):
            lines.append(f"{key}: changed" if new else f"{key}: removed")
        else:
            lines.append(f"{key}: {_short(old)} → {_short(new)}")
    return lines


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class AuditFilters:
    """Filters of the audit page and API."""

    actor: str | None = None
    action: str | None = None
    object_type: str | None = None
    object_key: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def list_entries(filters: AuditFilters, limit: int = 50, cursor: int | None = None
                 ) -> tuple[list[AuditEntry], int | None]:
    """A page of audit rows, newest first; the cursor is the id to continue below."""
    size = max(1, min(limit, 500))
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(size + 1)
    if filters.actor:
        query = query.where(AuditEntry.actor == filters.actor)
    if filters.action:
        query = query.where(AuditEntry.action == filters.action)
    if filters.object_type:
        query = query.where(AuditEntry.object_type == filters.object_type)
    if filters.object_key:
        query = query.where(AuditEntry.object_key == filters.object_key)
    if filters.since:
        query = query.where(AuditEntry.at >= filters.since)
    if filters.until:
        query = query.where(AuditEntry.at < filters.until)
    if cursor is not None:
        query = query.where(AuditEntry.id < cursor)
    rows = list(db.session.scalars(query))
    return rows[:size], (rows[size - 1].id if len(rows) > size else None)


def choices() -> dict[str, list[str]]:
    """The actions and object types seen so far, for the filter drop-downs."""
    return {
        "action": list(db.session.scalars(select(AuditEntry.action).distinct()
                                          .order_by(AuditEntry.action))),
        "object_type": list(db.session.scalars(select(AuditEntry.object_type).distinct()
                                               .order_by(AuditEntry.object_type))),
    }
