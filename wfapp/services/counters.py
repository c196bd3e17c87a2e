"""Counters kept in the database: what worker processes count, reported by every web process.

A worker (`flask --app wfapp worker`) serves no HTTP, may run on another host, and its
in-process counters die with it; PROMETHEUS_MULTIPROC_DIR only sums the processes of one host
that share the directory. So what workers count is noted here instead: `add()` notes it in the
session, and just before that session commits the notes become rows of `metric_count` in the
same transaction — counted exactly when the work is kept (a rolled-back transaction drops its
notes). Rows are only appended by the hot path (no row every worker updates); `compact()`
rolls them up. /metrics sums them per name and label values (`families()`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable

from sqlalchemy import delete, event, func, insert, select
from sqlalchemy.orm import Session

from ..extensions import db
from ..metrics import MetricFamily, check_counter_name
from ..models import MetricCount

COUNT = MetricCount.__table__
KEY = "wfapp_counters"

#: name → (help, label names) of every counter kept here.
DEFINED: dict[str, tuple[str, tuple[str, ...]]] = {}


def define(name: str, help_text: str, labels: tuple[str, ...]) -> str:
    """Declare a database counter (a name `wfapp_…_total`); returns the name."""
    check_counter_name(name)
    DEFINED[name] = (help_text, labels)
    return name


def labels_text(name: str, values: tuple[str, ...]) -> str:
    """The stored `labels` of a counter's row: its label values as a JSON list."""
    _, labels = DEFINED[name]
    if len(values) != len(labels):
        raise ValueError(f"counter {name}: values {values!r} do not match labels {labels!r}")
    return json.dumps([str(v) for v in values])[:500]


def add(name: str, values: tuple[str, ...], by: int = 1) -> None:
    """Count `by` in the current transaction (written when it commits, dropped on rollback)."""
    key = labels_text(name, values)
    # The transaction is begun now, so that rolling it back drops the note (a session with
    # no transaction yet would not tell its listeners about a rollback).
    db.session.connection()
    notes: Counter[tuple[str, str]] = db.session.info.setdefault(KEY, Counter())
    notes[(name, key)] += by


@event.listens_for(Session, "before_commit")
def _write(session: Session) -> None:
    notes = session.info.pop(KEY, None)
    if notes:
        session.connection().execute(insert(COUNT), [
            {"name": name, "labels": labels, "count": count}
            for (name, labels), count in notes.items()])


@event.listens_for(Session, "after_rollback")
def _drop(session: Session) -> None:
    session.info.pop(KEY, None)


def families() -> Iterable[MetricFamily]:
    """Every defined counter with its totals, for /metrics (a collector)."""
    totals: dict[str, list[tuple[tuple[str, ...], float]]] = {name: [] for name in DEFINED}
    for name, labels, total in db.session.execute(
            select(COUNT.c.name, COUNT.c.labels, func.sum(COUNT.c.count))
            .group_by(COUNT.c.name, COUNT.c.labels).order_by(COUNT.c.name, COUNT.c.labels)):
        if name in totals:
            totals[name].append((tuple(json.loads(labels)), float(total)))
    for name, samples in totals.items():
        help_text, labels = DEFINED[name]
        yield MetricFamily(name, "counter", help_text, labels, samples)


def compact() -> int:
    """Roll each key's rows up into its newest one; commits; return rows removed."""
    groups = db.session.execute(
        select(COUNT.c.name, COUNT.c.labels, func.max(COUNT.c.id))
        .group_by(COUNT.c.name, COUNT.c.labels).having(func.count() > 1)).all()
    removed = 0
    for name, labels, last in groups:
        # What is deleted is what is added to the kept row (the DELETE returns it): a row
        # another transaction appends meanwhile is neither deleted nor counted twice.
        counts = db.session.scalars(delete(COUNT).where(
            COUNT.c.name == name, COUNT.c.labels == labels, COUNT.c.id < last)
            .returning(COUNT.c.count)).all()
        db.session.execute(COUNT.update().where(COUNT.c.id == last)
                           .values(count=COUNT.c.count + sum(counts)))
        removed += len(counts)
    db.session.commit()
    return removed


ACTION_OUTCOMES = define(
    "wfapp_action_outcomes_total",
    "Attempts of transition actions (and alert notifications) by action type and outcome: "
    "succeeded, retried (will be tried again), failed (last attempt), gave_up (by a person)",
    ("action_type", "outcome"))
