"""Storing one event in its own transaction, as fast as the database allows: the hot path of
inbound endpoints (a webhook stores one event per request).

On PostgreSQL the event is written with one autocommitted `INSERT … ON CONFLICT DO NOTHING
RETURNING id` on a connection this thread keeps for the purpose (a prepared statement, no ORM,
no pool checkout or ping): one round trip, as a bare endpoint would do it. A connection the
server dropped is replaced and the insert retried once — safe, because a repeated dedupe key is
ignored. Elsewhere (SQLite) the regular `events.store` does it.

With `expect_version` the same statement reads the integration's config_version and inserts
only when it is still the one the caller's cached copy was read at (a CTE: one statement, one
snapshot), so a copy that another process made stale costs no extra round trip to notice.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any

from sqlalchemy.engine import URL

from ..extensions import db
from ..models import EventStatus, utcnow
from . import events

_local = threading.local()

INSERT = """INSERT INTO event (integration_id, source, type, record_key, run_id, payload, record,
    dedupe_key, partition, received_at, status, result, attempts)
VALUES (%s, %s, %s, %s, %s, %s::json, NULL, %s, %s, %s, %s, '', 0)
ON CONFLICT (integration_id, dedupe_key) DO NOTHING RETURNING id"""

# The same insert, made only while the integration's config_version is the expected one;
# answers (the current version, the new id or NULL). Casts: a SELECT list has no column types
# to infer the parameters' from.
INSERT_IF_CURRENT = """WITH cfg AS (SELECT config_version FROM integration WHERE id = %s),
new AS (INSERT INTO event (integration_id, source, type, record_key, run_id, payload, record,
    dedupe_key, partition, received_at, status, result, attempts)
  SELECT %s::integer, %s::varchar, %s::varchar, %s::varchar, %s::bigint, %s::json, NULL,
    %s::varchar, %s::integer, %s::timestamptz, %s::varchar, '', 0
  WHERE EXISTS (SELECT 1 FROM cfg WHERE config_version = %s)
  ON CONFLICT (integration_id, dedupe_key) DO NOTHING RETURNING id)
SELECT (SELECT config_version FROM cfg), (SELECT id FROM new)"""


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


@lru_cache(maxsize=8)
def _libpq_url(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def store_one(integration_id: int, event: events.NewEvent, kick: bool = True,
              expect_version: int | None = None, payload_json: str | None = None
              ) -> int | None:
    """Store one pending event in its own transaction; its id, or None for a repeated dedupe key.

    Queues processing after the commit like `events.store`. Raises WriteFailed when the
    database is unreachable or refuses the row (nothing was stored), and IntegrationChanged
    when `expect_version` is given and the integration's config_version is no longer it.
    `payload_json`, when the caller has it, is the payload as JSON text (not dumped again).
    """
    engine = db.engine
    if engine.dialect.name != "postgresql":
        ids, _ = events.store(integration_id, [event], kick=kick, expect_version=expect_version)
        return ids[0] if ids else None
    import psycopg
    from psycopg.types.json import Json

    if event.record_key is not None and len(event.record_key) > events.MAX_KEY:
        raise ValueError(f"record key longer than {events.MAX_KEY} characters")
    params: tuple[Any, ...] = (
        integration_id, event.source, (event.type or "")[:100], event.record_key, event.run_id,
        Json(event.payload) if payload_json is None else payload_json,
        events.dedupe_key(event.dedupe_key),
        events.partition_of(integration_id, event.record_key, event.run_id), utcnow(),
        EventStatus.PENDING.value)
    statement = INSERT
    if expect_version is not None:
        statement, params = INSERT_IF_CURRENT, (integration_id, *params, expect_version)
    url = _libpq_url(engine.url)
    for attempt in (1, 2):
        try:
            row = _connection(url).execute(statement, params).fetchone()
            break
        except psycopg.OperationalError as error:
            conn = getattr(_local, "conn", None)
            if conn is not None:
                conn.close()
            if attempt == 2:
                raise WriteFailed(str(error).splitlines()[0][:200]) from error
        except psycopg.Error as error:
            raise WriteFailed(str(error).splitlines()[0][:200]) from error
    if expect_version is not None:
        if row is None or row[0] != expect_version:
            raise events.IntegrationChanged(f"integration {integration_id} changed")
        row = None if row[1] is None else (row[1],)
    if row is None:
        return None
    if kick:
        events.kick_soon()
    return int(row[0])
