"""The core's metric collectors: figures read from the database when /metrics is scraped."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import func, select

from ..extensions import db
from ..metrics import MetricFamily
from ..models import (
    DeliveryCounter,
    Event,
    EventStatus,
    Instance,
    Integration,
    Workflow,
    utcnow,
)
from ..queue import get_queue
from . import counters, tally
from .events import oldest_pending_age


def transitions() -> Iterable[MetricFamily]:
    """Transitions fired, from the tally kept with each move (resets are not transitions)."""
    yield MetricFamily(
        "wfapp_transitions_fired_total", "counter",
        "Transitions fired, by workflow, transition and trigger type (timeout for timeouts)",
        ("workflow", "transition", "trigger_type"),
        [((w, t, k), count) for w, t, k, count in tally.totals()])


def events() -> Iterable[MetricFamily]:
    """Events in the inbox by status, and how long the oldest pending one has waited."""
    counts = dict(db.session.execute(
        select(Event.status, func.count()).group_by(Event.status)).all())
    yield MetricFamily("wfapp_events", "gauge", "Events in the inbox by status", ("status",),
                       [((s.value,), counts.get(s.value, 0)) for s in EventStatus])
    yield MetricFamily("wfapp_inbox_lag_seconds", "gauge",
                       "Age of the oldest pending event in seconds (0 when none waits)", (),
                       [((), oldest_pending_age() or 0.0)])


def instances() -> Iterable[MetricFamily]:
    """Active instances by workflow and state, and timeouts that are due but not yet fired."""
    rows = db.session.execute(
        select(Workflow.code, Instance.state, func.count())
        .join(Workflow, Workflow.id == Instance.workflow_id)
        .where(Instance.active.is_(True)).group_by(Workflow.code, Instance.state)).all()
    yield MetricFamily("wfapp_instances_active", "gauge", "Active instances by workflow and state",
                       ("workflow", "state"), [((w, s), n) for w, s, n in rows])
    due = db.session.scalar(select(func.count()).select_from(Instance)
                            .where(Instance.timeout_due_at <= utcnow())) or 0
    yield MetricFamily("wfapp_timeouts_due", "gauge",
                       "Instances whose timeout is due and not fired yet", (), [((), due)])


def queue() -> Iterable[MetricFamily]:
    """Jobs waiting in the queue (RQ on Redis, or the embedded queue of this process)."""
    jobs = get_queue()
    try:
        depth = float(len(jobs.jobs) if jobs.embedded else jobs.queue.count)  # type: ignore[union-attr]
    except Exception:  # noqa: BLE001 — Redis away: say so by a missing sample, not a 500
        return
    yield MetricFamily("wfapp_queue_depth", "gauge", "Jobs waiting in the job queue", (),
                       [((), depth)])


def deliveries() -> Iterable[MetricFamily]:
    """Inbound deliveries by integration, channel and outcome (webhooks, notifications, polls)."""
    rows = db.session.execute(
        select(Integration.code, DeliveryCounter.channel, DeliveryCounter.outcome,
               DeliveryCounter.count)
        .join(Integration, Integration.id == DeliveryCounter.integration_id)).all()
    yield MetricFamily(
        "wfapp_deliveries_total", "counter",
        "Inbound deliveries not stored as new events (refused, duplicate, failed) and poll "
        "results, by integration, channel and outcome", ("integration", "channel", "outcome"),
        [((code, channel, outcome), count) for code, channel, outcome, count in rows])


def database_counters() -> Iterable[MetricFamily]:
    """The counters kept in the database (what worker processes count: action outcomes)."""
    yield from counters.families()


CORE_COLLECTORS = (transitions, events, instances, queue, deliveries, database_counters)
