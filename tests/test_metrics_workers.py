"""/metrics in the web process reports what `flask --app wfapp worker` processes counted:
transitions fired (the tally) and action outcomes (database counters), never in-process
counters that die with the worker."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from wfapp.extensions import db
from wfapp.models import Instance, MetricCount
from wfapp.services import counters
from wfapp.services.events import NewEvent, ingest
from wfapp.services.integrations import get_integration

from .action_flows import order_workflow, shop_integration
from .action_server import ActionServer

pytestmark = pytest.mark.redis


@pytest.fixture
def receiver() -> Iterator[ActionServer]:
    with ActionServer() as server:
        yield server


def _samples(client: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = client.get("/metrics")
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(answer.get_data(as_text=True))
            for s in f.samples}


def _states() -> dict[str, int]:
    db.session.expire_all()
    return dict(db.session.execute(select(Instance.state, func.count())
                                   .group_by(Instance.state)).all())


def test_a_worker_process_fires_and_delivers_then_web_metrics_show_it(rq_app, receiver):
    from tests.services import start_worker

    rq_app.config["METRICS_CACHE_SECONDS"] = 0
    client = rq_app.test_client()
    order_workflow(receiver.url)
    shop_integration()
    receiver.script("/submit/W2", [500, 200])  # one retried attempt, then success
    before = _samples(client)
    assert before.get(("wfapp_action_outcomes_total", (("action_type", "http_request"),
                                                       ("outcome", "succeeded")))) is None
    ingest(get_integration("SHOP"), [NewEvent("on_webhook", "go", f"W{i}", None, {},
                                              record={"total": i}) for i in range(3)])
    worker = start_worker(rq_app.config, burst=False, WFAPP_ACTION_INTERVAL="0.2",
                          WFAPP_ACTION_BACKOFF_BASE="0.05", WFAPP_SWEEP_INTERVAL="1")
    try:
        deadline = time.monotonic() + 90
        while _states() != {"CONFIRMED": 3} and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGTERM)
        out, _ = worker.communicate(timeout=30)
    assert _states() == {"CONFIRMED": 3}, out
    # All of it happened in the worker process; this (web) process only reads the database.
    after = _samples(client)
    fired = {t: after[("wfapp_transitions_fired_total", (("transition", t),
                                                         ("trigger_type", k),
                                                         ("workflow", "ORDERS")))]
             for t, k in (("SUBMIT", "on_webhook"), ("CONFIRM", "on_action_result"))}
    assert fired == {"SUBMIT": 3.0, "CONFIRM": 3.0}
    outcomes = {o: after.get(("wfapp_action_outcomes_total", (("action_type", "http_request"),
                                                              ("outcome", o))))
                for o in ("succeeded", "retried", "failed")}
    assert outcomes == {"succeeded": 3.0, "retried": 1.0, "failed": None}


def test_counters_count_committed_work_only_and_compact_keeps_totals(app):
    counters.add(counters.ACTION_OUTCOMES, ("send_email", "failed"))
    db.session.rollback()  # work rolled back: not counted
    for _ in range(3):
        counters.add(counters.ACTION_OUTCOMES, ("send_email", "succeeded"), by=2)
        db.session.commit()
    assert db.session.scalar(select(func.count()).select_from(MetricCount)) == 3
    assert counters.compact() == 2
    [family] = [f for f in counters.families() if f.name == "wfapp_action_outcomes_total"]
    assert list(family.samples) == [(("send_email", "succeeded"), 6.0)]
    with pytest.raises(ValueError):
        counters.add(counters.ACTION_OUTCOMES, ("only-one-value",))
