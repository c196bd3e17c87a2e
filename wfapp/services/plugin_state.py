"""Small JSON values plugins keep per integration: a BC subscription, a channel's health."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite

from ..extensions import db
from ..models import PluginState, utcnow

TABLE = PluginState.__table__


def get(integration_id: int, namespace: str, key: str) -> dict[str, Any] | None:
    """The stored value, or None."""
    # populate_existing: `put` writes with a Core upsert, which the identity map does not see.
    row = db.session.get(PluginState, (integration_id, namespace, key), populate_existing=True)
    return dict(row.value) if row is not None else None


def put(integration_id: int, namespace: str, key: str, value: dict[str, Any],
        commit: bool = True) -> None:
    """Store (replace) a value."""
    # An upsert, not get-then-add: two requests storing the same new key at once (a burst of
    # notifications) must not fail on the primary key.
    now = utcnow()
    module = postgresql if db.session.get_bind().dialect.name == "postgresql" else sqlite
    statement = module.insert(TABLE).values(integration_id=integration_id, namespace=namespace,
                                            key=key, value=value, updated_at=now)
    db.session.execute(statement.on_conflict_do_update(
        index_elements=["integration_id", "namespace", "key"],
        set_={"value": statement.excluded.value, "updated_at": now}))
    if commit:
        db.session.commit()


def update(integration_id: int, namespace: str, key: str, changes: dict[str, Any],
           commit: bool = True) -> dict[str, Any]:
    """Merge `changes` into the stored value (creating it) and return the result."""
    value = {**(get(integration_id, namespace, key) or {}), **changes}
    put(integration_id, namespace, key, value, commit=commit)
    return value


def remove(integration_id: int, namespace: str, key: str, commit: bool = True) -> None:
    """Forget a value."""
    db.session.execute(delete(PluginState).where(
        PluginState.integration_id == integration_id, PluginState.namespace == namespace,
        PluginState.key == key))
    if commit:
        db.session.commit()


def items(namespace: str, integration_id: int | None = None
          ) -> list[tuple[int, str, dict[str, Any]]]:
    """(integration id, key, value) of a namespace, for one integration or all."""
    query = select(PluginState).where(PluginState.namespace == namespace)
    if integration_id is not None:
        query = query.where(PluginState.integration_id == integration_id)
    return [(r.integration_id, r.key, dict(r.value))
            for r in db.session.scalars(query.order_by(PluginState.integration_id,
                                                        PluginState.key))]
