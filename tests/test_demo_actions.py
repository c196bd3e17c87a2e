"""The demo's loop through a running app: SUBMIT calls the demo's own fulfilment API."""

from __future__ import annotations

import time

from sqlalchemy import select

from tests.services import start_server, stop
from wfapp.demo import demo_document, load_demo
from wfapp.extensions import db
from wfapp.models import ActionDelivery, Instance
from wfapp.services.integrations import get_integration
from wfapp.services.runs import start_run


def _instance(key: str) -> Instance | None:
    db.session.expire_all()
    return db.session.scalar(select(Instance).where(Instance.record_key == key))


def test_without_the_receiver_the_demo_has_no_actions():
    submit = demo_document(None)["workflow"]["transitions"][0]
    assert "actions" not in submit


def test_demo_loop_through_the_running_app(app, tmp_path):
    url, proc = start_server(app.config, tmp_path / "server.log", WFAPP_DEMO_RECEIVER="true",
                             WFAPP_DEMO_RECEIVER_FLAKY="0", WFAPP_ACTION_INTERVAL="0.5")
    try:
        app.config.update(DEMO_RECEIVER=True, EXTERNAL_URL=url)
        lines = load_demo(str(tmp_path))
        assert any("fulfilment API" in line for line in lines)
        start_run(get_integration("SHOP_ORDERS"), "import", [
            {"key": "OK1", "data": {"number": "OK1", "total": 100}},
            {"key": "BIG1", "data": {"number": "BIG1", "total": 900}}], "tester")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ok, big = _instance("OK1"), _instance("BIG1")
            if ok is not None and big is not None and ok.vars.get("fulfilment_id") and \
                    big.state == "FAILED":
                break
            time.sleep(0.3)
        ok, big = _instance("OK1"), _instance("BIG1")
        assert ok is not None and big is not None, (tmp_path / "server.log").read_text()
        # Accepted: the answer's id captured into the instance, which waits for confirmation.
        assert ok.state == "PENDING" and ok.vars["fulfilment_id"].startswith("FUL-")
        assert ok.vars["submitted_by"] == "wfapp demo"
        # Refused (over the credit limit): the On Action Result transition moved it.
        assert big.state == "FAILED" and big.last_transition == "FULFIL_FAILED"
        assert "credit limit" in big.vars["refusal"]
        statuses = {d.status for d in db.session.scalars(select(ActionDelivery))}
        assert statuses == {"succeeded", "failed"}
    finally:
        stop(proc)
