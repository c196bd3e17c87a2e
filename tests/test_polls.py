"""On Scheduled Poll in one process, against a real local HTTP server: requests, answers,
failures as failed events, back-off, the card panel, config checks, concurrency bounds."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import pytest
from flask import Flask
from sqlalchemy import select, update
from wfapp.builtin_plugins.on_scheduled_poll import run_polls, stop_polls

from tests.poll_server import PollServer, refused_url
from tests.polls import (
    count_poll_events,
    edit_poll,
    integration,
    make_due,
    parse_page,
    poll_events,
    poll_workflow,
    states,
    wait_until,
    waiting,
)
from wfapp.extensions import db
from wfapp.models import Event, HistoryEntry, Instance, InstanceTimer
from wfapp.services.processing import process_pending

POLL = "on_scheduled_poll"


@pytest.fixture
def server() -> Iterator[PollServer]:
    """The local endpoint the polls call."""
    with PollServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def _stop_executor(app: Flask) -> Iterator[None]:
    yield
    with app.app_context():
        stop_polls(30)


def poll_round(expected: int, timeout: float = 30.0) -> list[Event]:
    """Make every timer due, wake the executor, wait for `expected` poll events in all and for
    the executor to settle (the timers finished too)."""
    make_due()
    run_polls()
    wait_until(lambda: count_poll_events() >= expected, timeout)
    wait_until(executor().settled, timeout)
    return poll_events()


def executor() -> Any:
    """This process's poll executor of the current app."""
    from wfapp.builtin_plugins.on_scheduled_poll import _executor

    return _executor()


def _timer(key: str) -> InstanceTimer:
    db.session.rollback()
    return db.session.scalar(select(InstanceTimer).join(
        Instance, Instance.id == InstanceTimer.instance_id).where(Instance.record_key == key))


def test_a_poll_fires_its_transition_with_the_response_as_payload(app, server):
    poll_workflow(url=server.url + "/orders/{record_key}")
    integration()
    waiting("FEED", ["A", "B"])
    server.answers["A"] = {"status": "shipped", "carrier": "DHL"}
    events = poll_round(2)
    assert {e.status for e in events} == {"pending"}
    assert {e.type for e in events} == {f"GET {server.url}/orders/{{record_key}}"}
    by_key = {e.record_key: e for e in events}
    assert by_key["A"].payload == {"status": "shipped", "carrier": "DHL"}
    assert by_key["B"].payload == {"status": "waiting"}
    process_pending()
    assert states() == {"A": "DONE", "B": "WAIT"}
    a = db.session.scalar(select(Instance).where(Instance.record_key == "A"))
    assert a.vars == {"carrier": "DHL"} and a.last_trigger == POLL
    row = db.session.scalar(select(HistoryEntry).where(HistoryEntry.instance_id == a.id,
                                                       HistoryEntry.transition == "CHECK"))
    assert row.event_id == by_key["A"].id and '"status": "shipped"' in row.notes
    b = db.session.get(Event, by_key["B"].id, populate_existing=True)
    assert b.status == "processed" and "no on_scheduled_poll transition from WAIT" in b.result
    # The next round polls B only (A is DONE: its timer is dropped by the round's sync).
    server.answers["B"] = {"status": "shipped"}
    poll_round(3)
    process_pending()
    assert states() == {"A": "DONE", "B": "DONE"}
    assert [unquote(s.path) for s in server.requests()].count("/orders/A") == 1


def test_placeholders_and_secrets_are_filled_in_and_url_encoded(app, client, server, tokens):
    poll_workflow(url=server.url + "/orders/{record_key}?ref={vars.ref}&c={data.customer.name}",
                  method="POST", headers={"Authorization": "Bearer {secret.api_token}",
                                          "X-Record": "{record_key}", "X-Run": "none"})
    integration(secrets={"api_token": "tok/en+=?&"})
    key = "A B/C?&#%é"
    waiting("FEED", [key])
    db.session.execute(update(Instance).values(vars={"ref": "r&1=2"},
                                               data={"customer": {"name": "Zoë / Ltd"}}))
    db.session.commit()
    (event,) = poll_round(1)
    (seen,) = server.requests()
    assert seen.method == "POST"
    assert seen.path.startswith("/orders/A%20B%2FC%3F%26%23%25%C3%A9?")
    assert seen.query == {"ref": ["r&1=2"], "c": ["Zoë / Ltd"]}
    assert seen.headers["Authorization"] == "Bearer tok/en+=?&"
    assert seen.headers["X-Record"] == key.encode().decode("latin-1")  # raw UTF-8 on the wire
    assert seen.headers["Accept"] == "application/json"
    assert event.record_key == key and event.status == "pending"
    # The secret is never stored with the event, nor exported with the workflow.
    stored = json.dumps([event.payload, event.type, event.result, event.dedupe_key])
    assert "tok/en" not in stored
    exported = client.get("/api/v1/workflows/SHIP/export", headers=tokens["viewer"]).get_json()
    check = next(t for t in exported["workflow"]["transitions"] if t["code"] == "CHECK")
    assert check["trigger_config"]["headers"]["Authorization"] == "Bearer {secret.api_token}"
    assert "tok/en" not in json.dumps(exported)


def test_a_placeholder_that_cannot_be_filled_is_a_failed_poll(app, server):
    poll_workflow(url=server.url + "/orders/{record_key}?ref={vars.ref}",
                  headers={"Authorization": "Bearer {secret.missing}"})
    integration()
    waiting("FEED", ["A"])
    (event,) = poll_round(1)
    assert event.status == "failed" and server.requests() == []
    assert event.result == "poll failed: cannot build the request: {vars.ref}: the instance has " \
                           "no variable 'ref'"
    db.session.execute(update(Instance).values(vars={"ref": "1"}))
    db.session.commit()
    events = poll_round(2)
    assert "integration FEED has no secret of that name" in events[-1].result


FAILURES = [
    ("/status/500", {}, "poll failed: HTTP 500: upstream is unhappy"),
    ("/status/404", {}, "poll failed: HTTP 404: upstream is unhappy"),
    ("/redirect", {}, "poll failed: HTTP 302"),
    ("/text", {}, "poll failed: response is not JSON (text/html): is not valid JSON"),
    ("/nan", {}, "poll failed: response is not JSON (application/json): is not valid JSON"),
    ("/huge", {}, "poll failed: response larger than 1048576 bytes"),
    ("/slow/x?s=3", {"timeout_seconds": 1}, "poll failed: timed out after 1 s"),
    (None, {}, "poll failed: connection refused"),
]


@pytest.mark.parametrize(("path", "config", "reason"), FAILURES,
                         ids=[f[2].split(": ", 1)[1][:20] for f in FAILURES])
def test_failures_are_stored_as_failed_events_with_the_reason(app, client, auth, server, path,
                                                               config, reason):
    base = refused_url() if path is None else server.url
    poll_workflow(url=base + (path or "/orders/{record_key}"), **config)
    feed = integration()
    waiting("FEED", ["A"])
    started = time.monotonic()
    (event,) = poll_round(1, timeout=20)
    assert time.monotonic() - started < 8
    assert event.status == "failed" and event.result.startswith(reason), event.result
    assert event.type == "poll.failed" and event.payload["error"] in event.result
    assert event.payload["transition"] == "CHECK" and event.processed_at is None
    instance = db.session.scalar(select(Instance))
    assert event.instance_id == instance.id and instance.state == "WAIT"
    timer = _timer("A")
    assert timer.failures == 1 and timer.last_error in event.result
    assert timer.due_at > timer.last_run_at  # backed off: 2 intervals from the failure
    assert (timer.due_at - timer.last_run_at).total_seconds() == pytest.approx(120, abs=2)
    process_pending()  # a failed event is not evaluated
    db.session.refresh(event)
    assert event.status == "failed"
    auth.login("viewer")
    page = parse_page(client.get(f"/instances/{instance.id}").get_data(as_text=True))
    (row,) = [r for r in page.tables["instance-events"][1:] if r[2] == "On Scheduled Poll"]
    assert row[3] == "poll.failed" and row[4] == "failed" and row[5].startswith(reason[:40])
    page = parse_page(client.get("/events/?status=failed").get_data(as_text=True))
    (row,) = page.tables["events-table"][1:]
    assert row[3] == "On Scheduled Poll" and row[6] == "failed"
    card = parse_page(client.get(f"/integrations/{feed.code}").get_data(as_text=True))
    (header, line) = card.tables["poll-schedules"]
    cells = dict(zip(header, line, strict=True))
    assert (cells["Transition"], cells["Instances Waiting"]) == ("CHECK", "1")
    assert cells["Failing"].startswith("1") and reason.split(": ", 1)[1][:20] in \
        cells["Last Error"]
    assert "0 answered, 1 failed" in card.ids["poll-counts"]


def test_failures_back_off_and_recover(app, server):
    poll_workflow(url=server.url + "/orders/{record_key}")
    integration()
    waiting("FEED", ["A"])
    # Failing three times in a row: 2, 4, 8 intervals (1 minute each).
    _set_url(server.url + "/status/503")
    for n in (1, 2, 3):
        poll_round(n)
        timer = _timer("A")
        assert timer.failures == n
        assert (timer.due_at - timer.last_run_at).total_seconds() == pytest.approx(
            60 * 2 ** n, abs=2)
    _set_url(server.url + "/orders/{record_key}")
    poll_round(4)
    timer = _timer("A")
    assert (timer.failures, timer.last_error) == (0, "")
    assert poll_events()[-1].status == "pending"


def _set_url(url: str) -> None:
    edit_poll(trigger_config={"url": url})


def test_each_instance_is_polled_at_its_own_versions_url(app, server):
    """Editing the poll transition makes version 2; the instance on version 1 keeps polling
    version 1's URL, the new one polls version 2's, and the answer fires by each version."""
    poll_workflow(url=server.url + "/t/one/orders/{record_key}")
    integration()
    waiting("FEED", ["A"])
    edit_poll(migrate=False, trigger_config={"url": server.url + "/t/two/orders/{record_key}",
                                             "expected_value": "delivered"})
    waiting("FEED", ["B"])
    server.answers.update({"A": {"status": "shipped"}, "B": {"status": "delivered"}})
    events = poll_round(2)
    assert sorted((s.tag, s.path.rsplit("/", 1)[1]) for s in server.requests()) == [
        ("one", "A"), ("two", "B")]
    assert {e.record_key: e.type.split(" ", 1)[1].split("/t/")[1][:3] for e in events} == {
        "A": "one", "B": "two"}
    process_pending()
    assert states() == {"A": "DONE", "B": "DONE"}


def test_an_empty_answer_and_a_json_list(app, server):
    poll_workflow(url=server.url + "/empty", response_path="", expected_value="")
    integration()
    waiting("FEED", ["A"])
    (event,) = poll_round(1)
    assert (event.status, event.payload) == ("pending", {})
    process_pending()
    assert states() == {"A": "DONE"}
    poll_workflow(url=server.url + "/list", response_path="value.2", expected_value="3")
    waiting("FEED", ["B"])
    events = poll_round(2)
    assert events[-1].payload == {"value": [1, 2, 3]}
    process_pending()
    assert states()["B"] == "DONE"


def test_a_replayed_failed_poll_is_evaluated_and_matches_nothing(app, client, tokens, server):
    poll_workflow(url=server.url + "/status/500", response_path="", expected_value="")
    integration()
    waiting("FEED", ["A"])
    (event,) = poll_round(1)
    response = client.post(f"/api/v1/events/{event.id}/replay", headers=tokens["operator"])
    assert response.status_code == 200, response.get_json()
    process_pending()
    db.session.refresh(event)
    assert event.status == "processed"
    assert "no on_scheduled_poll transition from WAIT matched" in event.result
    assert states() == {"A": "WAIT"}  # CHECK has no condition, yet a failure never fires it
    from wfapp.services.instances import why_not

    instance = db.session.scalar(select(Instance))
    _, verdicts = why_not(instance)
    check = next(v for v in verdicts if v.code == "CHECK")
    assert not check.fires and check.reason == "the poll failed: HTTP 500: upstream is unhappy"


def test_an_answer_never_fires_another_request_s_transition(app, server):
    cancel = {"code": "CANCEL", "from_state": "WAIT", "to_state": "DONE", "trigger_type": POLL,
              "priority": -1,
              "trigger_config": {"url": server.url + "/orders/{record_key}?view=cancel",
                                 "interval_minutes": 60, "response_path": "status",
                                 "expected_value": "cancelled"}}
    poll_workflow(url=server.url + "/orders/{record_key}", extra=[cancel])
    integration()
    waiting("FEED", ["A"])
    server.answers["A"] = {"status": "cancelled"}  # both URLs answer the same here
    from wfapp.models import utcnow
    from wfapp.services.schedules import sync

    sync(POLL)  # CANCEL's first poll is an hour away; CHECK's is made due now
    db.session.execute(update(InstanceTimer).where(InstanceTimer.transition == "CHECK")
                       .values(due_at=utcnow()))
    db.session.commit()
    run_polls()
    wait_until(lambda: count_poll_events() >= 1)
    process_pending()
    (event,) = poll_events()
    assert "?view=cancel" not in event.type
    # CHECK's answer says "cancelled", which CANCEL waits for, but CANCEL polls another URL.
    assert states() == {"A": "WAIT"}
    assert "no on_scheduled_poll transition from WAIT matched" in event.result


# --- config checks ------------------------------------------------------------------------------

GOOD = {"url": "https://api.example/o/{record_key}?r={run_id}&v={vars.no}&d={data.a.b}",
        "method": "GET", "interval_minutes": 5, "timeout_seconds": 30,
        "headers": {"Authorization": "Bearer {secret.token}", "X-Key": "{record_key}"}}
BAD_CONFIGS = [
    ({"url": "https://{vars.host}/x"}, "url", "not in the host"),
    ({"url": "https://api.example/{secret.token}"}, "url", "secrets may stand in headers only"),
    ({"url": "https://api.example/{nope}"}, "url", "unknown placeholder {nope}"),
    ({"url": "https://api.example/a b"}, "url", "spaces or control characters"),
    ({"url": "file:///etc/passwd"}, "url", "http:// or https://"),
    ({"headers": {"Bad Name": "x"}}, "headers", "not a valid header name"),
    ({"headers": {"X-A": "a\r\nX-Injected: 1"}}, "headers", "line breaks"),
    ({"headers": {"X-A": "{secret.}"}}, "headers", "unknown placeholder"),
    ({"headers": {"X-A": 5}}, "headers", "string value"),
    ({"timeout_seconds": 61}, "timeout_seconds", "at most 60"),
    ({"timeout_seconds": 0}, "timeout_seconds", "at least 1"),
    ({"interval_minutes": 0}, "interval_minutes", "at least 0.01"),
    ({"method": "TRACE"}, "method", "must be one of"),
]


def _document(config: dict[str, Any]) -> dict[str, Any]:
    return {"format": "wfapp.workflow/v1", "workflow": {
        "code": "CHECKS", "initial_state": "WAIT",
        "states": [{"code": "WAIT", "is_initial": True}, {"code": "DONE", "is_final": True}],
        "transitions": [{"code": "CHECK", "from_state": "WAIT", "to_state": "DONE",
                         "trigger_type": POLL, "trigger_config": config}]}}


def test_a_good_poll_config_round_trips(client, tokens):
    response = client.post("/api/v1/workflows/import", json=_document(GOOD),
                           headers=tokens["author"])
    assert response.status_code == 201, response.get_json()
    exported = client.get("/api/v1/workflows/CHECKS/export", headers=tokens["author"])
    assert exported.get_json()["workflow"]["transitions"][0]["trigger_config"] == GOOD


@pytest.mark.parametrize(("change", "field", "message"), BAD_CONFIGS)
def test_bad_poll_configs_are_refused_naming_the_field(client, tokens, change, field, message):
    config = {**copy.deepcopy(GOOD), **change}
    response = client.post("/api/v1/workflows/import", json=_document(config),
                           headers=tokens["author"])
    assert response.status_code == 422
    details = response.get_json()["error"]["details"]
    place = f"workflow.transitions[0].trigger_config.{field}"
    assert any(d["path"] == place and message in d["message"] for d in details), details
    assert client.get("/api/v1/workflows/CHECKS/export",
                      headers=tokens["author"]).status_code == 404


@pytest.mark.parametrize(("value", "message"), [(0, "at least 1"), (257, "at most 256"),
                                                ("8", "must be a number"),
                                                (2.5, "whole number")])
def test_poll_concurrency_setting_is_checked(client, tokens, value, message):
    created = client.post("/api/v1/integrations", json={"code": "FEED"},
                          headers=tokens["author"])
    assert created.status_code == 201 and created.get_json()["poll_concurrency"] == 8
    response = client.patch("/api/v1/integrations/FEED", json={"poll_concurrency": value},
                            headers=tokens["author"])
    assert response.status_code == 422
    (detail,) = response.get_json()["error"]["details"]
    assert detail["path"] == "poll_concurrency" and message in detail["message"]
    ok = client.patch("/api/v1/integrations/FEED", json={"poll_concurrency": 3},
                      headers=tokens["author"])
    assert ok.status_code == 200 and ok.get_json()["poll_concurrency"] == 3


# --- concurrency --------------------------------------------------------------------------------


@pytest.fixture
def small_pool(app_config: dict[str, Any]) -> Iterator[Flask]:
    """An app whose executor runs at most 4 requests at once."""
    from tests.conftest import _app_on_clean_database

    app_config["POLL_CONCURRENCY"] = 4
    yield from _app_on_clean_database(app_config)


def test_concurrency_is_bounded_per_integration_and_overall(small_pool, server):
    poll_workflow(url=server.url + "/t/{vars.tag}/orders/{record_key}")
    a = integration("A", poll_concurrency=2)
    b = integration("B")
    waiting("A", [f"A{i}" for i in range(10)])
    waiting("B", [f"B{i}" for i in range(10)])
    db.session.execute(update(Instance).values(vars={"tag": "a"})
                       .where(Instance.integration_id == a.id))
    db.session.execute(update(Instance).values(vars={"tag": "b"})
                       .where(Instance.integration_id == b.id))
    db.session.commit()
    server.delay = 0.25
    poll_round(20, timeout=60)
    seen = (len(server.requests()), dict(server.max_by_tag), server.max_active)
    assert seen[0] == 20, seen
    assert server.max_by_tag["a"] <= 2 and server.max_active <= 4, seen
    assert server.max_by_tag["b"] >= 2 and server.max_active >= 3, seen  # the room was used
    with small_pool.app_context():
        stop_polls(30)


def test_a_slow_integration_does_not_starve_the_others(small_pool, server):
    poll_workflow(url=server.url + "/t/{vars.tag}/slow/{record_key}?s={vars.s}",
                  timeout_seconds=10)
    slow = integration("SLOW", poll_concurrency=2)
    integration("FAST")
    waiting("SLOW", [f"S{i}" for i in range(6)])
    waiting("FAST", [f"F{i}" for i in range(12)])
    db.session.execute(update(Instance).values(vars={"tag": "fast", "s": "0.05"}))
    db.session.execute(update(Instance).values(vars={"tag": "slow", "s": "4"})
                       .where(Instance.integration_id == slow.id))
    db.session.commit()
    make_due()
    started = time.monotonic()
    run_polls()
    fast_done = wait_until(lambda: len(server.requests("fast")) == 12 and time.monotonic(), 30)
    # Twelve fast polls went through the two threads the slow integration leaves free, long
    # before its first answer (4 s).
    assert fast_done - started < 3.5
    assert server.max_by_tag["slow"] <= 2
    with small_pool.app_context():
        stop_polls(30)


def _slow_round(server: PollServer, seconds: float, count: int, on_their_way: int) -> list[str]:
    """`count` instances polled at an endpoint that answers after `seconds`: a round started,
    returned once `on_their_way` requests are; the instances' keys."""
    poll_workflow(url=server.url + f"/slow/{{record_key}}?s={seconds}")
    integration()
    keys = [f"K{i}" for i in range(count)]
    waiting("FEED", keys)
    make_due()
    run_polls()
    wait_until(lambda: len(server.requests()) == on_their_way)
    return keys


def test_stopping_gives_back_the_claims_not_started(small_pool, server):
    """A warm shutdown stores what was asked and makes what was not due again: none is lost."""
    from wfapp.models import utcnow

    keys = _slow_round(server, 1.5, 10, 4)  # 4 threads busy, 4 more claimed, 2 due
    stop_polls(30)
    stored = poll_events()
    assert len(stored) == 4 and len(server.requests()) == 4
    asked = {e.record_key for e in stored}
    db.session.rollback()
    timers = {t.instance_id: t.due_at for t in db.session.scalars(select(InstanceTimer))}
    keyed = dict(db.session.execute(select(Instance.record_key, Instance.id)).all())
    now = utcnow()
    assert all(timers[keyed[k]] > now for k in asked)  # polled: next due one interval on
    assert all(timers[keyed[k]] <= now for k in set(keys) - asked)  # given back or never claimed


# --- yielding to other events -------------------------------------------------------------------


@pytest.fixture
def yielding(app: Flask) -> None:
    """The app's executor (made on first use) runs 8 polls at once, one while 10 others wait."""
    app.config.update({"POLL_CONCURRENCY": 8, "POLL_YIELD_BACKLOG": 10,
                       "POLL_YIELD_CONCURRENCY": 1, "METRICS_CACHE_SECONDS": 0})


def _others(keys: list[str], kind: str = "noop") -> None:
    """Webhook events for these keys, stored and left waiting (nobody processes them yet)."""
    from wfapp.services.events import NewEvent, ingest
    from wfapp.services.integrations import get_integration

    ingest(get_integration("FEED"), [NewEvent("on_webhook", kind, key, None, {})
                                     for key in keys], kick=False)


def _backlog_before_polls(server: PollServer) -> list[str]:
    """40 instances waiting for polls (answered after 0.1 s), 12 other events waiting: the
    instances' keys."""
    poll_workflow(url=server.url + "/orders/{record_key}")
    integration()
    keys = [f"K{i:02d}" for i in range(40)]
    waiting("FEED", keys)
    _others(keys[:12])
    server.delay = 0.1
    return keys


def test_other_events_waiting_counts_other_sources_up_to_the_bound(app):
    from wfapp.plugin_api import other_events_waiting
    from wfapp.services.events import NewEvent, ingest
    from wfapp.services.integrations import get_integration

    poll_workflow()
    integration()
    waiting("FEED", ["A", "B", "C"])  # their start events are applied: nothing waits
    assert other_events_waiting(POLL, 5) == 0
    ingest(get_integration("FEED"), [NewEvent(POLL, "x", k, None, {}) for k in "ABC"],
           kick=False)
    assert other_events_waiting(POLL, 5) == 0  # the polls' own answers do not count
    _others(["A", "B", "C"])
    ingest(get_integration("FEED"), [NewEvent("on_import", "", "A", None, {})], kick=False)
    assert other_events_waiting(POLL, 10) == 4  # sources below and above the poll's
    assert other_events_waiting(POLL, 2) == 2  # counted no further than asked
    assert other_events_waiting("on_webhook", 10) == 4  # the 3 polls and the import
    process_pending()
    assert other_events_waiting(POLL, 10) == 0


def test_polls_yield_while_other_events_wait_and_resume_after(yielding, client, auth,
                                                              server):
    """Polls are a pull the product may time: with a backlog of other events they run one at
    a time; once it is applied they run eight at once again, and none is lost or doubled."""
    from prometheus_client.parser import text_string_to_metric_families

    keys = _backlog_before_polls(server)
    make_due()
    run_polls()
    wait_until(lambda: len(server.requests()) >= 4)
    # Yielding from the first round on: one request at a time, the card says so.
    assert server.max_active == 1
    assert executor().yielding.active
    auth.login("viewer")
    card = parse_page(client.get("/integrations/FEED").get_data(as_text=True))
    assert "Polls are yielding: 10 or more other events wait" in card.ids["poll-yielding"]
    # The backlog is applied: the polls resume at full concurrency and finish the round.
    process_pending()
    wait_until(lambda: count_poll_events() == 40, 30)
    wait_until(executor().settled, 30)
    assert server.max_active > 1
    assert not executor().yielding.active and executor().stats["yields"] == 1
    assert sorted(e.record_key for e in poll_events()) == keys
    assert len(server.requests()) == 40
    process_pending()
    events = db.session.scalars(select(Event).where(Event.type == "noop")).all()
    assert len(events) == 12 and {e.status for e in events} == {"processed"}
    card = parse_page(client.get("/integrations/FEED").get_data(as_text=True))
    assert "poll-yielding" not in card.ids
    text = client.get("/metrics").get_data(as_text=True)
    metrics = {s.name: s for f in text_string_to_metric_families(text) for s in f.samples}
    assert metrics["wfapp_poll_yields_total"].value == 1
    assert metrics["wfapp_poll_yields_total"].labels == {"trigger_type": POLL}
    assert metrics["wfapp_poll_yielding"].value == 0


@pytest.fixture
def pausing(app: Flask) -> None:
    """The app's executor runs 8 polls at once, none while 10 others wait — for 2 s at most."""
    app.config.update({"POLL_CONCURRENCY": 8, "POLL_YIELD_BACKLOG": 10,
                       "POLL_YIELD_CONCURRENCY": 0, "POLL_YIELD_MAX_SECONDS": 2,
                       "METRICS_CACHE_SECONDS": 0})


def test_polls_pause_while_other_events_wait_then_one_at_a_time(pausing, client, auth, server):
    """The default: while a backlog waits no new poll starts; a yield that lasts lets one at a
    time through (a steady backlog must not starve the polls); once the backlog is applied they
    resume at full concurrency, none lost or doubled."""
    keys = _backlog_before_polls(server)
    make_due()
    started = time.monotonic()
    run_polls()
    wait_until(lambda: executor().yielding.active)
    time.sleep(1.0)
    assert server.requests() == []  # the scheduling round looked first: nothing started
    auth.login("viewer")
    card = parse_page(client.get("/integrations/FEED").get_data(as_text=True))
    assert "No new poll starts until they are applied" in card.ids["poll-yielding"]
    wait_until(lambda: len(server.requests()) >= 3, 30)
    assert time.monotonic() - started >= 2.0  # POLL_YIELD_MAX_SECONDS
    assert server.max_active == 1 and executor().yielding.active
    process_pending()
    wait_until(lambda: count_poll_events() == 40, 30)
    wait_until(executor().settled, 30)
    assert server.max_active > 1 and not executor().yielding.active
    assert executor().stats["yields"] == 1
    assert sorted(e.record_key for e in poll_events()) == keys
    assert len(server.requests()) == 40


def test_a_burst_the_engine_takes_here_makes_polls_yield_before_the_inbox_shows_it(
        pausing, app, server, monkeypatch):
    """The events of a burst leave the inbox as the engine takes them; the engine's note in
    this process says there is a backlog all the same, without a query."""
    from wfapp import yielding as rule
    from wfapp.plugin_api import other_events_waiting

    monkeypatch.setattr(rule, "ENGINE_NOTE_SECONDS", 1.5)
    poll_workflow(url=server.url + "/orders/{record_key}")
    integration()
    keys = [f"K{i:02d}" for i in range(20)]
    waiting("FEED", keys)
    app.config["EVENT_PARTITIONS_PER_BATCH"] = 10_000  # the 12 in one batch
    _others(keys[:12])
    process_pending()
    assert other_events_waiting(POLL, 10) == 0  # the inbox holds none of them any more
    started = time.monotonic()
    events = poll_round(20)
    assert executor().stats["yields"] == 1
    # No request before the note was forgotten (1.5 s after the batch, at least 1 s from here).
    assert min(request.at for request in server.requests()) - started >= 1.0
    assert sorted(e.record_key for e in events) == keys


def test_answers_of_requests_running_when_a_yield_begins_wait_for_it_to_end(
        pausing, app, server):
    """The answers of the polls already on their way when a burst arrives would be applied in
    order with the burst: they wait in the executor until the yield ends, then are stored, each
    once, after the burst's events."""
    app.config["POLL_YIELD_MAX_SECONDS"] = 30
    keys = _slow_round(server, 0.8, 8, 8)  # all 8 on their way
    _others([f"X{i:02d}" for i in range(12)])  # a burst of 12 (the backlog is 10)
    wait_until(lambda: executor().yielding.active)
    wait_until(lambda: len(executor().results) == 8)  # answered, but not stored
    time.sleep(1.0)  # twice the half second after which answers are stored otherwise
    assert count_poll_events() == 0 and executor().yielding.active
    assert not executor().settled()
    process_pending()  # the burst is applied: the yield ends and the answers are stored
    wait_until(lambda: count_poll_events() == 8)
    wait_until(executor().settled)
    stored = poll_events()
    assert sorted(e.record_key for e in stored) == keys and len(server.requests()) == 8
    burst = db.session.scalars(select(Event.id).where(Event.source == "on_webhook")).all()
    assert min(e.id for e in stored) > max(burst)
    assert executor().stats["yields"] == 1


def test_a_yield_holds_answers_no_longer_than_poll_yield_max_seconds(pausing, server):
    """A steady backlog must not keep answers in memory for long: after
    POLL_YIELD_MAX_SECONDS (2 s here) they are stored though the yield goes on."""
    keys = _slow_round(server, 0.3, 4, 4)
    _others([f"X{i:02d}" for i in range(12)])
    wait_until(lambda: executor().yielding.active)
    started = time.monotonic()
    wait_until(lambda: count_poll_events() == 4, 10)
    assert time.monotonic() - started >= 1.0 and executor().yielding.active
    assert sorted(e.record_key for e in poll_events()) == keys


def test_an_announced_ingest_makes_polls_yield_before_its_commit(pausing, app, server):
    """A large ingest under way in another process (an import, a BC notification) announces
    its events before they are committed: the polls yield from the start, and go on once it
    is retracted (committed and, here, nothing left waiting)."""
    from wfapp.plugin_api import other_events_waiting
    from wfapp.queue import get_queue

    poll_workflow(url=server.url + "/orders/{record_key}")
    integration()
    keys = [f"K{i:02d}" for i in range(12)]
    waiting("FEED", keys)
    handle = get_queue().announce({"on_import": 5000}, 30)
    assert other_events_waiting(POLL, 10) == 10  # the inbox holds none of them
    make_due()
    run_polls()
    wait_until(lambda: executor().yielding.active)
    time.sleep(0.8)
    assert server.requests() == []
    get_queue().retract(handle)
    assert other_events_waiting(POLL, 10) == 0
    wait_until(lambda: count_poll_events() == 12)
    wait_until(executor().settled)
    assert sorted(e.record_key for e in poll_events()) == keys
    assert len(server.requests()) == 12 and not executor().yielding.active


@pytest.fixture
def never_yielding(app: Flask) -> None:
    """The app's executor (made on first use) runs 4 polls at once and never yields."""
    app.config.update({"POLL_CONCURRENCY": 4, "POLL_YIELD_BACKLOG": 0})


def test_polls_never_yield_when_the_backlog_setting_is_0(never_yielding, server):
    poll_workflow(url=server.url + "/orders/{record_key}")
    integration()
    keys = [f"K{i:02d}" for i in range(12)]
    waiting("FEED", keys)
    _others(keys * 10)  # 120 waiting: the default backlog (100) would make the polls yield
    server.delay = 0.2
    poll_round(12)
    assert server.max_active > 1 and executor().stats["yields"] == 0
