"""Readiness: can this process do its work (database, migrations, Redis)?"""

from __future__ import annotations

import functools
from pathlib import Path

from sqlalchemy import text

from ..extensions import db
from ..queue import get_queue

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


@functools.cache
def migration_heads() -> frozenset[str]:
    """The head revisions the code expects (read once from the shipped migration scripts)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return frozenset(ScriptDirectory.from_config(config).get_heads())


def readiness() -> dict[str, str]:
    """Each check's result: "ok", or one line saying what failed."""
    checks: dict[str, str] = {}
    try:
        with db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            try:
                current = {row[0] for row in conn.execute(
                    text("SELECT version_num FROM alembic_version"))}
            except Exception:  # noqa: BLE001 — no version table: never migrated
                conn.rollback()
                current = set()
        checks["database"] = "ok"
        heads = migration_heads()
        if current == set(heads):
            checks["migrations"] = "ok"
        else:
            checks["migrations"] = (f"database is at {sorted(current) or 'no revision'}, the "
                                    f"code expects {sorted(heads)}: run `flask --app wfapp db "
                                    "upgrade`")
    except Exception as exc:  # noqa: BLE001 — any failure to reach it is reported alike
        checks["database"] = f"cannot reach the database: {type(exc).__name__}"
        checks["migrations"] = "unknown: the database cannot be reached"
    queue = get_queue()
    if not queue.embedded:
        checks["redis"] = queue.check() or "ok"  # type: ignore[union-attr]
    return checks
