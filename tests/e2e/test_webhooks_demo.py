"""The demo's feed sends real signed webhooks to the running app, which confirm orders."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from wfapp.extensions import db
from wfapp.models import Event, HistoryEntry


@pytest.fixture
def live_env() -> dict[str, str]:
    """The demo feed every second, posting to this server (as `make run` sets it up)."""
    return {"WFAPP_DEMO_FEED_INTERVAL": "1", "WFAPP_EXTERNAL_URL": "http://127.0.0.1:{port}"}


@pytest.fixture
def demo_loaded(app, users, tmp_path):
    """The demo, loaded before the server starts (as `flask demo` does in `make run`)."""
    from wfapp.demo import load_demo

    load_demo(str(tmp_path))
    return tmp_path / "demo-admin.txt"


def test_the_demo_feed_confirms_orders_through_signed_webhooks(demo_loaded, live_server):
    deadline = time.monotonic() + 60
    confirmed = []
    while time.monotonic() < deadline and not confirmed:
        time.sleep(1)
        db.session.rollback()
        confirmed = db.session.scalars(select(HistoryEntry).where(
            HistoryEntry.transition == "CONFIRM")).all()
    assert confirmed, "no order was confirmed by a webhook within 60 s"
    event = db.session.get(Event, confirmed[0].event_id)
    assert event.source == "on_webhook" and event.dedupe_key.startswith("wh:msg_demo_")
    assert event.type == "order.confirmed"
