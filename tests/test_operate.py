"""Health and readiness probes, /metrics, the transition tally and retention."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select, text, update

from wfapp.extensions import db
from wfapp.models import AuditEntry, Event, HistoryEntry, Instance, TransitionTally, utcnow
from wfapp.services import retention, tally
from wfapp.services.definitions import FORMAT, import_document
from wfapp.services.events import NewEvent, ingest
from wfapp.services.integrations import create_integration, get_integration
from wfapp.services.processing import process_pending
from wfapp.services.timeouts import fire_due_timeouts

FLOW = {"format": FORMAT, "workflow": {
    "code": "FLOW", "initial_state": "A",
    "states": [{"code": "A", "is_initial": True}, {"code": "B"}, {"code": "C", "is_final": True}],
    "transitions": [
        {"code": "GO", "from_state": "A", "to_state": "B", "trigger_type": "on_webhook",
         "trigger_config": {"event_filter": "go"}},
        {"code": "END", "from_state": "B", "to_state": "C", "trigger_type": "on_webhook",
         "trigger_config": {"event_filter": "end"}},
    ]}}


@pytest.fixture
def app_config(app_config):
    app_config["METRICS_CACHE_SECONDS"] = 0
    return app_config


def _flow(events: list[tuple[str, str]]) -> None:
    import_document(FLOW)
    create_integration({"code": "FEED", "workflow_code": "FLOW"})
    ingest(get_integration("FEED"), [NewEvent("on_webhook", kind, key, None, {"n": i},
                                              dedupe_key=f"{key}-{i}")
                                     for i, (key, kind) in enumerate(events)], kick=False)
    process_pending(time_budget=60)


def _metrics(client, **kwargs) -> dict[str, list]:
    answer = client.get("/metrics", **kwargs)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.content_type.startswith("text/plain; version=0.0.4")
    return {f.name: f.samples for f in text_string_to_metric_families(answer.get_data(
        as_text=True))}


def test_healthz_answers_without_login_or_database(app_config):
    from wfapp import create_app

    # Nothing listens on port 1: the database is unreachable.
    app_config["SQLALCHEMY_DATABASE_URI"] = "postgresql+psycopg://nobody@127.0.0.1:1/none"
    client = create_app(app_config).test_client()
    answer = client.get("/healthz")
    assert answer.status_code == 200 and answer.get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 503
    body = ready.get_json()
    assert body["failed"] == ["database", "migrations"]
    assert body["checks"]["database"].startswith("cannot reach the database")


def test_readyz_is_ready_on_a_migrated_database(client):
    answer = client.get("/readyz")
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["checks"] == {"database": "ok", "migrations": "ok"}


def test_readyz_names_a_migration_behind_and_unreachable_redis(app_config):
    from wfapp import create_app

    app_config["REDIS_URL"] = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    app = create_app(app_config)
    with app.app_context():
        with db.engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '0006'"))
        try:
            answer = app.test_client().get("/readyz")
        finally:
            from wfapp.services.health import migration_heads

            with db.engine.begin() as conn:
                conn.execute(text("UPDATE alembic_version SET version_num = :v"),
                             {"v": next(iter(migration_heads()))})
            db.engine.dispose()
    body = answer.get_json()
    assert answer.status_code == 503
    assert body["failed"] == ["migrations", "redis"]
    assert "db upgrade" in body["checks"]["migrations"]
    assert "cannot reach Redis" in body["checks"]["redis"]
    assert body["checks"]["database"] == "ok"


def test_metrics_report_transitions_events_lag_and_timeouts(client):
    _flow([("R1", "go"), ("R2", "go"), ("R1", "end"), ("R3", "nothing")])
    ingest(get_integration("FEED"), [NewEvent("on_webhook", "go", "R9", None, {})], kick=False)
    db.session.execute(update(Instance).where(Instance.record_key == "R2")
                       .values(timeout_due_at=utcnow() - timedelta(minutes=1)))
    db.session.commit()
    found = _metrics(client)
    fired = {(s.labels["workflow"], s.labels["transition"], s.labels["trigger_type"]): s.value
             for s in found["wfapp_transitions_fired"] if s.name.endswith("_total")}
    assert fired == {("FLOW", "GO", "on_webhook"): 2.0, ("FLOW", "END", "on_webhook"): 1.0}
    events = {s.labels["status"]: s.value for s in found["wfapp_events"]}
    assert events == {"pending": 1.0, "processed": 4.0, "skipped": 0.0, "failed": 0.0}
    assert found["wfapp_inbox_lag_seconds"][0].value >= 0.0
    assert found["wfapp_timeouts_due"][0].value == 1.0
    active = {(s.labels["workflow"], s.labels["state"]): s.value
              for s in found["wfapp_instances_active"]}
    assert active == {("FLOW", "A"): 1.0, ("FLOW", "B"): 1.0}
    assert found["wfapp_queue_depth"][0].value >= 0.0


def test_metrics_access_is_local_unless_allowed_or_token(app, client):
    remote = {"environ_base": {"REMOTE_ADDR": "203.0.113.9"}}
    refused = client.get("/metrics", **remote)
    assert refused.status_code == 403
    assert "203.0.113.9 is not in METRICS_ALLOW" in refused.get_json()["error"]["message"]
    app.config["METRICS_TOKEN"] = "scrape-me"
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"},
                      **remote).status_code == 403
    assert client.get("/metrics", headers={"Authorization": "Bearer scrape-me"},
                      **remote).status_code == 200
    app.config["METRICS_ALLOW"] = "203.0.113.0/24, 10.0.0.0/8"
    assert client.get("/metrics", **remote).status_code == 200


def test_tally_counts_moves_and_timeouts_not_rolled_back_work(app):
    import_document({**FLOW, "workflow": {**FLOW["workflow"], "states": [
        {"code": "A", "is_initial": True},
        {"code": "B", "timeout_hours": 0.0001, "on_timeout_transition": "BACK"},
        {"code": "C", "is_final": True}], "transitions": FLOW["workflow"]["transitions"] + [
        {"code": "BACK", "from_state": "B", "to_state": "A", "trigger_type": "manual"}]}})
    create_integration({"code": "FEED", "workflow_code": "FLOW"})
    ingest(get_integration("FEED"), [NewEvent("on_webhook", "go", f"K{i}", None, {})
                                     for i in range(5)], kick=False)
    process_pending(time_budget=60)
    workflow_id = db.session.scalar(select(Instance.workflow_id).limit(1))
    tally.note(workflow_id, "GO", "on_webhook", utcnow(), 100)
    db.session.rollback()  # a rolled-back transaction's notes go with it
    assert tally.edge_counts(workflow_id) == {"GO": 5}
    assert fire_due_timeouts(now=utcnow() + timedelta(hours=1)) == 5
    assert tally.edge_counts(workflow_id) == {"GO": 5, "BACK": 5}
    # Yesterday's rows roll up into one per key; the counts stay.
    db.session.execute(update(TransitionTally).values(
        day=tally.day_of(utcnow() - timedelta(days=1))))
    db.session.add(TransitionTally(workflow_id=workflow_id, transition="GO",
                                   trigger_type="on_webhook",
                                   day=tally.day_of(utcnow() - timedelta(days=1)), count=2))
    db.session.commit()
    before = db.session.scalar(select(func.count()).select_from(TransitionTally))
    assert tally.compact() == before - 2
    assert db.session.scalar(select(func.count()).select_from(TransitionTally)) == 2
    assert tally.edge_counts(workflow_id) == {"GO": 7, "BACK": 5}
    assert tally.edge_counts(workflow_id, days=0) == {}


def test_retention_purges_old_processed_events_and_finished_instances_only(app, client, auth):
    _flow([("OLD", "go"), ("OLD", "end"), ("NEW", "go"), ("NEW", "end"), ("LIVE", "go")])
    ingest(get_integration("FEED"), [NewEvent("on_webhook", "go", "WAIT", None, {})],
           kick=False)
    long_ago = utcnow() - timedelta(days=40)
    db.session.execute(update(Event).values(processed_at=long_ago, received_at=long_ago)
                       .where(Event.record_key.in_(["OLD", "LIVE", "WAIT"])))
    db.session.execute(update(Instance).where(Instance.record_key.in_(["OLD", "LIVE"]))
                       .values(completed_at=long_ago))
    db.session.execute(update(Instance).where(Instance.record_key == "LIVE")
                       .values(completed_at=None))
    db.session.commit()
    live = db.session.scalar(select(Instance.id).where(Instance.record_key == "LIVE"))
    live_history = db.session.scalar(select(func.count()).select_from(HistoryEntry)
                                     .where(HistoryEntry.instance_id == live))
    app.config.update(RETENTION_EVENT_DAYS=30, RETENTION_INSTANCE_DAYS=30, RETENTION_BATCH=1)
    assert retention.eligible() == {"events": 3, "instances": 1}
    auth.login("admin")
    page = client.get("/admin/retention").get_data(as_text=True)
    assert "30 days" in page and '<td class="eligible">3</td>' in page
    answer = client.post("/admin/retention", follow_redirects=True)
    assert "Purged 3 events and 1 finished instances (3 history rows)" in \
        answer.get_data(as_text=True)
    keys = db.session.scalars(select(Instance.record_key).order_by(Instance.record_key)).all()
    assert keys == ["LIVE", "NEW"]
    assert db.session.scalar(select(func.count()).select_from(HistoryEntry)
                             .where(HistoryEntry.instance_id == live)) == live_history
    statuses = db.session.execute(select(Event.record_key, Event.status)
                                  .order_by(Event.id)).all()
    assert statuses == [("NEW", "processed"), ("NEW", "processed"), ("WAIT", "pending")]
    row = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "retention.purge"))
    assert (row.actor, row.details["events"], row.details["instances"]) == ("admin", 3, 1)
    assert retention.purge() == {"events": 0, "instances": 0, "history": 0}
    assert db.session.scalar(select(func.count()).select_from(AuditEntry).where(
        AuditEntry.action == "retention.purge")) == 1


def test_bc_subscription_expiry_is_reported_by_its_plugin(client):
    from wfapp.plugin_api import find_integration, state_put

    create_integration({"code": "BC1"})
    create_integration({"code": "BC2"})
    soon = (utcnow() + timedelta(hours=5)).isoformat()
    state_put(find_integration("BC1"), "bc", "subscription", {"id": "sub-1", "expires_at": soon})
    state_put(find_integration("BC2"), "bc", "subscription", {"id": None, "expires_at": None})
    samples = _metrics(client)["wfapp_bc_subscription_expiry_seconds"]
    assert [s.labels for s in samples] == [{"integration": "BC1"}]
    assert 5 * 3600 - 60 < samples[0].value <= 5 * 3600


def test_a_plugin_metric_with_a_bad_name_is_refused():
    from wfapp.metrics import MetricFamily

    with pytest.raises(ValueError, match="must match"):
        MetricFamily("orders", "gauge", "x").check()
    with pytest.raises(ValueError, match="end in _total"):
        MetricFamily("wfapp_orders", "counter", "x").check()
    with pytest.raises(ValueError, match="does not match the labels"):
        MetricFamily("wfapp_orders", "gauge", "x", ("a",), [((), 1)]).check()


def test_the_scheduled_retention_job_purges_and_rolls_up_the_tally(app):
    from wfapp import jobs

    _flow([("OLD", "go"), ("OLD", "end")])
    long_ago = utcnow() - timedelta(days=10)
    db.session.execute(update(Event).values(processed_at=long_ago))
    db.session.execute(update(TransitionTally).values(day=tally.day_of(long_ago)))
    db.session.commit()
    app.config.update(RETENTION_EVENT_DAYS=7)
    assert ("retention", 3600.0, "wfapp.jobs.retention") in app.extensions["wfapp"]["schedules"]
    with app.app_context():
        result = jobs.retention()
    assert result == {"events": 2, "instances": 0, "history": 0, "tally_rows": 0,
                      "counter_rows": 0}
    assert db.session.scalar(select(func.count()).select_from(Event)) == 0
    assert db.session.scalar(select(func.count()).select_from(Instance)) == 1  # kept: 0 days
