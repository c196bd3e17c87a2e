"""Storing one event in its own transaction, as fast as the database allows: the hot path of
inbound endpoints (a webhook stores one event per request).

On PostgreSQL the event is written with one autocommitted `INSERT … ON CONFLICT DO NOTHING
RETURNING id` on a connection this thread keeps for the purpose (a prepared statement, no ORM,
no pool checkout or ping): one round trip, as a bare endpoint would do it. A connection the
server dropped is replaced and the insert retried once — safe, because a repeated dedupe key is
ignored. Elsewhere (SQLite) the regular `events.store` does it.
"""

from __future__ import annotations

import threading
from typing import Any

from ..extensions import db
from ..models import EventStatus, utcnow
from . import events

_local = threading.local()

INSERT = """INSERT INTO event (integration_id, source, type, record_key, run_id, payload, record,
    dedupe_key, partition, received_at, status, result, attempts)
VALUES (%s, %s, %s, %s, %s, %s, NULL, %s, %s, %s, %s, '', 0)
ON CONFLICT (integration_id, dedupe_key) DO NOTHING RETURNING id"""


class WriteFailed(RuntimeError):
    """The database could not store the event (it is down, or refused the row)."""


def _connection(url: str) -> Any:
    import psycopg

    conn = getattr(_local, "conn", None)
    if conn is not None and (conn.closed or _local.url != url):
        conn.close()
        conn = None
    if conn is None:
        # prepare_threshold=0: the insert is a server-side prepared statement from the start.
        conn = psycopg.connect(url, autocommit=True, prepare_threshold=0, connect_timeout=5)
        _local.conn, _local.url = conn, url
    return conn


def _libpq_url() -> str:
    return db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


def store_one(integration_id: int, event: events.NewEvent, kick: bool = True) -> int | None:
    """Store one pending event in its own transaction; its id, or None for a repeated dedupe key.

    Queues processing after the commit like `events.store`. Raises WriteFailed when the
    database is unreachable or refuses the row (nothing was stored).
    """
    if db.engine.dialect.name != "postgresql":
        ids, _ = events.store(integration_id, [event], kick=kick)
        return ids[0] if ids else None
    import psycopg
    from psycopg.types.json import Json

    if event.record_key is not None and len(event.record_key) > events.MAX_KEY:
        raise ValueError(f"record key longer than {events.MAX_KEY} characters")
    params = (integration_id, event.source, (event.type or "")[:100], event.record_key,
              event.run_id, Json(event.payload), events.dedupe_key(event.dedupe_key),
              events.partition_of(integration_id, event.record_key, event.run_id), utcnow(),
              EventStatus.PENDING.value)
    url = _libpq_url()
    for attempt in (1, 2):
        try:
            row = _connection(url).execute(INSERT, params).fetchone()
            break
        except psycopg.OperationalError as error:
            conn = getattr(_local, "conn", None)
            if conn is not None:
                conn.close()
            if attempt == 2:
                raise WriteFailed(str(error).splitlines()[0][:200]) from error
        except psycopg.Error as error:
            raise WriteFailed(str(error).splitlines()[0][:200]) from error
    if row is None:
        return None
    if kick:
        events.kick_soon()
    return int(row[0])
