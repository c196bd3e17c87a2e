"""Integration secrets: stored encrypted, written through here, read back only by plugins.

Two kinds share one table: a plugin's secret settings ("setting": the webhook secret, the BC
client secret) and secrets an author names for templates ("named": `{secret.<name>}` in a poll's
headers). No page or API ever shows a stored value; they say which names are set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from flask import current_app
from sqlalchemy import bindparam, delete, select

from ..extensions import db
from ..models import IntegrationSecret, utcnow
from ..secretbox import SecretBox
from . import config_cache

SETTING = "setting"
NAMED = "named"
SECRET_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
MAX_SECRET_LENGTH = 4096


def secretbox() -> SecretBox:
    """This app's secret box (keys from SECRETS_KEY or SECRET_KEY)."""
    return current_app.extensions["wfapp"]["secretbox"]


def put(integration_id: int, kind: str, name: str, value: str) -> None:
    """Store (or replace) a secret in the current transaction; the old value becomes `previous`."""
    box = secretbox()
    row = db.session.get(IntegrationSecret, (integration_id, kind, name))
    now = utcnow()
    same = row is not None and box.decrypt(row.ciphertext) == value
    if not same:
        config_cache.changed(integration_id)
    if row is None:
        db.session.add(IntegrationSecret(integration_id=integration_id, kind=kind, name=name,
                                         ciphertext=box.encrypt(value), updated_at=now))
        return
    if same:
        return  # the same value again is no rotation
    row.previous = row.ciphertext
    row.rotated_at = now
    row.ciphertext = box.encrypt(value)
    row.updated_at = now


def remove(integration_id: int, kind: str, names: list[str]) -> None:
    """Delete secrets in the current transaction."""
    if names:
        config_cache.changed(integration_id)
        db.session.execute(delete(IntegrationSecret).where(
            IntegrationSecret.integration_id == integration_id, IntegrationSecret.kind == kind,
            IntegrationSecret.name.in_(names)))


def names(integration_id: int, kind: str) -> list[str]:
    """The names of the stored secrets of one kind, sorted."""
    return list(db.session.scalars(select(IntegrationSecret.name).where(
        IntegrationSecret.integration_id == integration_id, IntegrationSecret.kind == kind)
        .order_by(IntegrationSecret.name)))


@dataclass(frozen=True)
class SecretValue:
    """A decrypted secret, with the value it replaced and when (for grace periods)."""

    value: str
    previous: str | None
    rotated_at: datetime | None


_S = IntegrationSecret.__table__
_READ = select(_S.c.ciphertext, _S.c.previous, _S.c.rotated_at).where(
    _S.c.integration_id == bindparam("integration_id"), _S.c.kind == bindparam("kind"),
    _S.c.name == bindparam("name"))


def read(integration_id: int, kind: str, name: str) -> SecretValue | None:
    """The decrypted secret, or None when it is not set (one prebuilt query, no ORM object:
    webhook endpoints read their secret on every request)."""
    if db.session.new or db.session.dirty or db.session.deleted:
        db.session.flush()  # a secret put() in this transaction is read back
    # Core-level execution on the session's connection: cheaper than the ORM's, same result.
    row = db.session.connection().execute(
        _READ, {"integration_id": integration_id, "kind": kind, "name": name}).first()
    if row is None:
        return None
    box = secretbox()
    previous = box.decrypt(row.previous) if row.previous else None
    return SecretValue(box.decrypt(row.ciphertext), previous, row.rotated_at)


def read_many(integration_ids: set[int], kinds: tuple[str, ...]) -> dict[int, dict[str, str]]:
    """The secrets of several integrations in one query, decrypted, by integration; of the
    same name, the kind later in `kinds` wins."""
    box = secretbox()
    rank = {kind: i for i, kind in enumerate(kinds)}
    found: dict[int, dict[str, str]] = {i: {} for i in integration_ids}
    rows = db.session.scalars(select(IntegrationSecret).where(
        IntegrationSecret.integration_id.in_(integration_ids),
        IntegrationSecret.kind.in_(kinds)))
    for row in sorted(rows, key=lambda r: rank[r.kind]):
        found[row.integration_id][row.name] = box.decrypt(row.ciphertext)
    return found


def read_all(integration_id: int, kind: str) -> dict[str, str]:
    """Every secret of one kind, decrypted (for filling `{secret.<name>}` templates)."""
    box = secretbox()
    rows = db.session.scalars(select(IntegrationSecret).where(
        IntegrationSecret.integration_id == integration_id, IntegrationSecret.kind == kind))
    return {row.name: box.decrypt(row.ciphertext) for row in rows}
