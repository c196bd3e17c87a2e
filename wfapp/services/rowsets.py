"""A batch of rows as one statement: PostgreSQL's `json_to_recordset`, executemany elsewhere.

A multi-row write sent as one JSON value is one statement for the server and one round trip
for the client, however many rows it carries; psycopg's executemany sends and executes one
statement per row. SQLite runs in-process, so there executemany costs nothing extra.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Integer,
    Table,
    Text,
    any_,
    bindparam,
    cast,
    column,
    func,
    insert,
    select,
    tuple_,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection
from sqlalchemy.types import TypeDecorator


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class _Rows(TypeDecorator[Any]):
    """A list of row dicts bound as one JSON text (timestamps, at any depth, as ISO 8601)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> str:
        return json_text(value)


def json_text(rows: Any) -> str:
    """Rows as the JSON text a recordset reads (timestamps, at any depth, as ISO 8601)."""
    return json.dumps(rows, default=_iso)


def recordset(name: str, columns: dict[str, Any]) -> Any:
    """`json_to_recordset(:rows) AS name(col type, …)`: a whole batch as one bound value."""
    return (func.json_to_recordset(cast(bindparam("rows", type_=_Rows()), JSON))
            .table_valued(*(column(c, t) for c, t in columns.items()))
            .render_derived(name=name, with_types=True))


def insert_rows(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert `rows` (all with the first row's keys) into `table` in one statement."""
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        conn.execute(insert(table), rows)
        return
    names = list(rows[0])
    given = recordset("v", {c: table.c[c].type for c in names})
    conn.execute(insert(table).from_select(names, select(*(given.c[c] for c in names))),
                 {"rows": rows})


#: The position of a row in its batch, carried beside its columns (no table has this column).
ORDER = "_row_order"


def insert_new_rows(conn: Connection, table: Table, rows: list[dict[str, Any]],
                    unique: list[str]) -> list[int]:
    """Insert `rows` (PostgreSQL) skipping those whose `unique` columns are taken; the new ids,
    in the rows' order.

    One statement with one bound value. An `INSERT … VALUES` of many rows is a new, long
    statement text per batch size, which psycopg parses again on every execution (it caches only
    short ones): for a batch of poll answers that parse cost more than the insert itself.
    """
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    names = list(rows[0])
    columns = {c: table.c[c].type for c in names}
    given = recordset("v", {**columns, ORDER: Integer()})
    statement = (pg_insert(table)
                 .from_select(names, select(*(given.c[c] for c in names)).order_by(given.c[ORDER]))
                 .on_conflict_do_nothing(index_elements=unique).returning(table.c.id))
    numbered = [{**row, ORDER: n} for n, row in enumerate(rows)]
    # Inserted in the rows' order, so their ids (one sequence) ascend in the rows' order.
    return sorted(conn.execute(statement, {"rows": numbered}).scalars())


def among(conn: Connection, col: Any, values: list[Any]) -> Any:
    """`col IN values`: on PostgreSQL `col = ANY(:array)`, one bound value however many.

    An expanded IN list renders a placeholder per value on every execution and gives the
    server a new statement text for every length; the array keeps one prepared statement.
    """
    if conn.dialect.name != "postgresql":
        return col.in_(values)
    return col == any_(bindparam(None, list(values), type_=ARRAY(col.type)))


def pairs_among(conn: Connection, first: Any, second: Any, pairs: list[tuple[Any, Any]]) -> Any:
    """`(first, second) IN pairs`; on PostgreSQL through two arrays, one bound value each."""
    if conn.dialect.name != "postgresql":
        return tuple_(first, second).in_(pairs)
    given = (func.unnest(bindparam(None, [a for a, _ in pairs], type_=ARRAY(first.type)),
                         bindparam(None, [b for _, b in pairs], type_=ARRAY(second.type)))
             .table_valued("a", "b").render_derived(name="k"))
    return tuple_(first, second).in_(select(given.c.a, given.c.b))
