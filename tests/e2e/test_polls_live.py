"""On Scheduled Poll end to end through the running app (`flask --app wfapp run` with the
embedded queue), against a real local HTTP server; the card, instance and events pages in
Chromium."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select

from tests.e2e.conftest import login
from tests.poll_server import PollServer
from tests.polls import (
    edit_poll,
    integration,
    poll_events,
    poll_workflow,
    states,
    wait_until,
    waiting,
)
from wfapp.extensions import db
from wfapp.models import Instance

pytestmark = pytest.mark.browser


@pytest.fixture
def server() -> Iterator[PollServer]:
    """The local endpoint the polls call."""
    with PollServer() as srv:
        yield srv


def test_polls_move_instances_in_the_running_app(app, server, page):
    poll_workflow(url=server.url + "/orders/{record_key}", interval_minutes=0.01,
                  headers={"X-Api-Key": "{secret.key}"})
    integration(secrets={"key": "k-123"})
    waiting("FEED", ["A", "B"])
    server.answers["A"] = {"status": "shipped", "carrier": "DHL"}
    # The embedded worker's scheduler polls every 2 s; the first poll is due 0.6 s after WAIT.
    wait_until(lambda: states().get("A") == "DONE", 30)
    assert states()["B"] == "WAIT"
    assert {s.headers["X-Api-Key"] for s in server.requests()} == {"k-123"}
    a = db.session.scalar(select(Instance).where(Instance.record_key == "A"))
    assert a.vars == {"carrier": "DHL"}

    # B's endpoint breaks: its polls become failed events, shown where people look.
    _break(server)
    wait_until(lambda: poll_events("failed"), 30)
    login(page, "viewer")
    page.goto("/integrations/FEED")
    panel = page.locator("#panel-polls")
    assert "Scheduled Polls" in panel.inner_text()
    table = page.locator("#poll-schedules")
    assert "CHECK" in table.inner_text() and "HTTP 500" in table.inner_text()
    page.get_by_role("link", name="Failed polls on the Events page").click()
    row = page.locator("#events-table tbody tr").first
    assert "poll failed: HTTP 500" in row.inner_text()
    b = db.session.scalar(select(Instance).where(Instance.record_key == "B"))
    page.goto(f"/instances/{b.id}")
    assert "poll failed: HTTP 500" in page.locator("#instance-events").inner_text()


def _break(server: PollServer) -> None:
    """Point CHECK at an endpoint that answers 500: a new version, B migrated onto it (the poll
    reads its version's config at each claim)."""
    db.session.rollback()
    edit_poll(trigger_config={"url": server.url + "/status/500"})
