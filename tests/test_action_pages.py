"""The Actions page, the instance page's deliveries, the card's counts, the API of actions."""

from __future__ import annotations

from sqlalchemy import select

from tests.action_flows import order_workflow, shop_integration
from tests.action_server import ActionServer
from wfapp.extensions import db
from wfapp.models import ActionDelivery, Instance
from wfapp.services import outbox
from wfapp.services.events import NewEvent, ingest
from wfapp.services.integrations import get_integration
from wfapp.services.processing import process_pending

API = "/api/v1"


def _failed_delivery(receiver: ActionServer, key: str = "P1") -> ActionDelivery:
    """A delivery that failed its only attempt (HTTP 500), and its instance in FAILED."""
    order_workflow(receiver.url, max_attempts=1)
    shop_integration()
    receiver.script(f"/submit/{key}", [500, 200])
    ingest(get_integration("SHOP"), [NewEvent("on_webhook", "go", key, None, {}, {"total": 1})],
           kick=False)
    process_pending(time_budget=30)
    outbox.deliver_due()
    process_pending(time_budget=30)
    return db.session.scalars(select(ActionDelivery)).one()


def test_api_lists_deliveries_and_retries_one(client, tokens, receiver):
    delivery = _failed_delivery(receiver)
    body = client.get(f"{API}/actions?status=failed&workflow=orders",
                      headers=tokens["viewer"]).get_json()
    [item] = body["items"]
    assert (item["id"], item["workflow"], item["integration"], item["transition"],
            item["action_id"], item["type"], item["status"], item["attempts"]) == (
        delivery.id, "ORDERS", "SHOP", "SUBMIT", "submit", "http_request", "failed", 1)
    assert "HTTP 500" in item["last_error"] and body["next"] is None
    assert client.get(f"{API}/actions?status=succeeded",
                      headers=tokens["viewer"]).get_json()["items"] == []
    bad = client.get(f"{API}/actions?status=lost", headers=tokens["viewer"])
    assert bad.status_code == 422 and "status" in str(bad.get_json()["error"])
    assert client.post(f"{API}/actions/{delivery.id}/retry",
                       headers=tokens["viewer"]).status_code == 403
    retried = client.post(f"{API}/actions/{delivery.id}/retry", headers=tokens["operator"])
    assert retried.status_code == 200 and retried.get_json()["status"] == "pending"
    again = client.post(f"{API}/actions/{delivery.id}/retry", headers=tokens["operator"])
    assert again.status_code == 200  # still pending: retrying it again is allowed
    assert client.post(f"{API}/actions/999999/retry",
                       headers=tokens["operator"]).status_code == 404
    outbox.deliver_due()
    db.session.expire_all()
    assert db.session.get(ActionDelivery, delivery.id).status == "succeeded"


def test_actions_page_filters_retries_and_gives_up(client, auth, receiver):
    delivery = _failed_delivery(receiver)
    auth.login("operator")
    page = client.get("/actions/?status=failed").get_data(as_text=True)
    assert f'data-delivery="{delivery.id}"' in page and "HTTP 500" in page
    assert f'data-delivery="{delivery.id}"' not in client.get(
        "/actions/?status=succeeded").get_data(as_text=True)
    assert client.get("/actions/?status=nonsense").status_code == 400
    response = client.post(f"/actions/{delivery.id}/retry", data={"back": "/actions/"})
    assert response.status_code == 302
    db.session.expire_all()
    assert db.session.get(ActionDelivery, delivery.id).status == "pending"
    client.post(f"/actions/{delivery.id}/give-up", data={"back": "/actions/"})
    db.session.expire_all()
    assert db.session.get(ActionDelivery, delivery.id).status == "gave_up"
    refused = client.post(f"/actions/{delivery.id}/give-up", follow_redirects=True)
    assert "only a pending delivery can be given up" in refused.get_data(as_text=True)


def test_instance_page_card_and_diagram_show_actions(client, auth, receiver):
    delivery = _failed_delivery(receiver)
    auth.login("viewer")
    instance = db.session.get(Instance, delivery.instance_id)
    page = client.get(f"/instances/{instance.id}").get_data(as_text=True)
    assert "Action deliveries" in page and f'data-delivery="{delivery.id}"' in page
    assert "HTTP 500" in page
    card = client.get("/workflows/ORDERS").get_data(as_text=True)
    assert "1 failed" in card
    assert "SUBMIT → set_variable, submit" in card  # the diagram's edge label


def test_transition_page_edits_actions(client, auth, receiver):
    order_workflow(receiver.url)
    auth.login("author")
    page = client.get("/workflows/ORDERS/transitions/CONFIRM").get_data(as_text=True)
    assert 'id="add-action"' in page and "http_request" in page
    form = {"code": "CONFIRM", "description": "", "from_state": "SUBMITTED",
            "to_state": "CONFIRMED", "trigger_type": "on_action_result", "enabled": "y",
            "priority": "0", "cfg-action": "submit", "cfg-outcome": "succeeded",
            "cond-0-field": "instance.vars.confirmation", "cond-0-operator": "exists",
            "act-count": "1", "act-0-type": "set_variable", "act-0-shown": "set_variable"}
    bad = client.post("/workflows/ORDERS/transitions/CONFIRM", data=form)
    assert bad.status_code == 422
    assert "actions[0].values" in bad.get_data(as_text=True)
    broken = client.post("/workflows/ORDERS/transitions/CONFIRM",
                         data={**form, "act-0-f-values": "[{"})
    assert broken.status_code == 422 and "not valid JSON" in broken.get_data(as_text=True)
    good = client.post("/workflows/ORDERS/transitions/CONFIRM", data={
        **form, "act-0-f-values": '{"ok": true}'})
    assert good.status_code == 302
    from wfapp.services.definitions import export_document

    confirm = export_document("ORDERS")["workflow"]["transitions"][1]
    assert confirm["actions"] == [{"type": "set_variable", "config": {"values": {"ok": True}}}]
