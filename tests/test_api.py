"""The authoring API: workflows and integrations, roles, errors, pagination."""

from __future__ import annotations

import copy

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from wfapp.demo import ORDER_SYNC
from wfapp.extensions import db
from wfapp.models import Instance, Workflow


def _doc(code="NEW_FLOW"):
    doc = copy.deepcopy(ORDER_SYNC)
    doc["workflow"]["code"] = code
    return doc


def test_auth_is_required(client, users):
    response = client.get("/api/v1/workflows")
    assert response.status_code == 401 and response.get_json()["error"]["code"] == "unauthorized"
    bad = client.get("/api/v1/workflows", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401


def test_list_and_export(client, tokens, demo):
    listed = client.get("/api/v1/workflows", headers=tokens["viewer"]).get_json()
    assert listed == {"items": [{"code": "ORDER_SYNC", "description": "Sales order to fulfilment",
                                 "initial_state": "NEW", "enabled": True,
                                 "active_instances": 0}], "next": None}
    exported = client.get("/api/v1/workflows/order_sync/export",
                          headers=tokens["viewer"]).get_json()
    assert exported == ORDER_SYNC


def test_import_conflict_and_replace(client, tokens, demo):
    h = tokens["author"]
    assert client.post("/api/v1/workflows/import", headers=h, json=_doc()).status_code == 201
    again = client.post("/api/v1/workflows/import", headers=h, json=_doc())
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "conflict"
    changed = _doc()
    changed["workflow"]["description"] = "Changed"
    replaced = client.post("/api/v1/workflows/import?replace=true", headers=h, json=changed)
    assert replaced.status_code == 200
    assert replaced.get_json()["workflow"]["description"] == "Changed"
    assert client.post("/api/v1/workflows/import?replace=maybe", headers=h,
                       json=changed).status_code == 422


def test_import_collects_every_error_and_writes_nothing(client, tokens, demo):
    doc = _doc("BROKEN")
    doc["workflow"]["states"][2]["code"] = "NEW"
    doc["workflow"]["transitions"][0]["trigger_type"] = "on_fax"
    doc["workflow"]["states"][0]["timeout_hours"] = -1
    response = client.post("/api/v1/workflows/import", headers=tokens["author"], json=doc)
    assert response.status_code == 422
    details = {d["path"]: d["message"] for d in response.get_json()["error"]["details"]}
    assert "workflow.states[0].timeout_hours" in details
    doc["workflow"]["states"][0]["timeout_hours"] = 24
    response = client.post("/api/v1/workflows/import", headers=tokens["author"], json=doc)
    details = {d["path"]: d["message"] for d in response.get_json()["error"]["details"]}
    assert details["workflow.states[2].code"] == "duplicate code 'NEW'"
    assert details["workflow.transitions[0].trigger_type"].startswith("unknown trigger type")
    assert db.session.scalar(select(func.count()).select_from(Workflow)) == 1


def test_copy_patch_delete(client, tokens, demo):
    h = tokens["author"]
    copied = client.post("/api/v1/workflows/ORDER_SYNC/copy", headers=h,
                         json={"new_code": "order_copy"})
    assert copied.status_code == 201 and copied.get_json()["workflow"]["code"] == "ORDER_COPY"
    assert client.post("/api/v1/workflows/ORDER_SYNC/copy", headers=h,
                       json={"new_code": "ORDER_COPY"}).status_code == 409
    assert client.post("/api/v1/workflows/ORDER_SYNC/copy", headers=h,
                       json={"new_code": 5}).status_code == 422
    patched = client.patch("/api/v1/workflows/ORDER_COPY", headers=h,
                           json={"enabled": False, "description": "Copy"}).get_json()
    assert patched["workflow"]["enabled"] is False
    for body, field in (({"enabled": "no"}, "enabled"), ({"states": []}, "states"),
                        ({"description": 1}, "description")):
        bad = client.patch("/api/v1/workflows/ORDER_COPY", headers=h, json=body)
        assert bad.status_code == 422
        assert bad.get_json()["error"]["details"][0]["path"] == field
    assert client.patch("/api/v1/workflows/NOPE", headers=h, json={}).status_code == 404
    assert client.delete("/api/v1/workflows/ORDER_COPY", headers=tokens["viewer"]
                         ).status_code == 403
    assert client.delete("/api/v1/workflows/ORDER_COPY", headers=h).status_code == 200
    assert client.get("/api/v1/workflows/ORDER_COPY/export", headers=h).status_code == 404


def test_delete_refused_with_active_instances(client, tokens, demo):
    workflow = db.session.scalar(select(Workflow))
    from wfapp.services.integrations import get_integration

    db.session.add(Instance(workflow_id=workflow.id,
                            integration_id=get_integration("SHOP_ORDERS").id,
                            record_key="A", state="NEW", active=True))
    db.session.commit()
    response = client.delete("/api/v1/workflows/ORDER_SYNC", headers=tokens["author"])
    assert response.status_code == 409
    assert "active instance" in response.get_json()["error"]["message"]
    listed = client.get("/api/v1/workflows", headers=tokens["viewer"]).get_json()
    assert listed["items"][0]["active_instances"] == 1


def test_integrations(client, tokens, demo):
    h = tokens["author"]
    created = client.post("/api/v1/integrations", headers=h, json={
        "code": "inv_out", "description": "Invoices", "workflow_code": "ORDER_SYNC",
        "instance_mode": "per_run", "webhook_secret": "whsec_c2VjcmV0",
        "record_key_path": "data.id"})
    assert created.status_code == 201
    body = created.get_json()
    assert body["code"] == "INV_OUT" and body["secrets_set"] == ["webhook_secret"]
    assert "webhook_secret" not in body and body["record_key_path"] == "data.id"
    got = client.get("/api/v1/integrations/INV_OUT", headers=tokens["viewer"]).get_json()
    assert got == body
    patched = client.patch("/api/v1/integrations/INV_OUT", headers=h,
                           json={"enabled": False, "workflow_code": None}).get_json()
    assert patched["enabled"] is False and patched["workflow_code"] is None
    cases = [({"code": "X", "instance_mode": "sometimes"}, "instance_mode"),
             ({"code": "Y", "workflow_code": "NOPE"}, "workflow_code"),
             ({"code": "Z", "colour": "red"}, "colour"),
             ({"code": "bad code"}, "code"), ({"code": "SHOP_ORDERS"}, "code"),
             ({"code": "W", "enabled": "yes"}, "enabled")]
    for body, field in cases:
        response = client.post("/api/v1/integrations", headers=h, json=body)
        assert response.status_code == 422, body
        assert field in [d["path"] for d in response.get_json()["error"]["details"]]
    assert client.post("/api/v1/integrations", headers=tokens["viewer"],
                       json={"code": "V"}).status_code == 403
    assert client.get("/api/v1/integrations/NOPE", headers=h).status_code == 404
    listed = client.get("/api/v1/integrations?limit=1", headers=h).get_json()
    assert len(listed["items"]) == 1 and listed["next"] == "INV_OUT"
    rest = client.get(f"/api/v1/integrations?limit=1&cursor={listed['next']}",
                      headers=h).get_json()
    assert [i["code"] for i in rest["items"]] == ["SHOP_ORDERS"] and rest["next"] is None


def test_malformed_requests(client, tokens, demo):
    h = tokens["author"]
    cases = [
        client.post("/api/v1/workflows/import", headers=h, data="{oops",
                    content_type="application/json"),
        client.post("/api/v1/workflows/import", headers=h, data="x", content_type="text/plain"),
        client.post("/api/v1/workflows/import", headers=h, json=[1, 2]),
        client.patch("/api/v1/workflows/ORDER_SYNC", headers=h, json=[]),
        client.get("/api/v1/workflows?limit=abc", headers=h),
        client.get("/api/v1/nothing-here", headers=h),
        client.put("/api/v1/workflows", headers=h, json={}),
    ]
    for response in cases:
        assert 400 <= response.status_code < 500, response.status_code
        assert set(response.get_json()["error"]) == {"code", "message", "details"}


def test_trigger_types(client, tokens):
    items = client.get("/api/v1/trigger-types", headers=tokens["viewer"]).get_json()["items"]
    assert [t["name"] for t in items][:3] == ["manual", "on_import", "on_export"]
    poll = next(t for t in items if t["name"] == "on_scheduled_poll")
    assert {f["name"] for f in poll["fields"]} >= {"url", "method", "interval_minutes"}


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=JSON, target=st.sampled_from([
    ("post", "/api/v1/workflows/import"), ("patch", "/api/v1/workflows/ORDER_SYNC"),
    ("post", "/api/v1/workflows/ORDER_SYNC/copy"), ("post", "/api/v1/integrations"),
    ("patch", "/api/v1/integrations/SHOP_ORDERS"),
    ("post", "/api/v1/integrations/SHOP_ORDERS/runs")]))
def test_fuzzed_bodies_never_500(client, tokens, demo, body, target):
    method, url = target
    before = client.get("/api/v1/workflows/ORDER_SYNC/export", headers=tokens["admin"]).data
    response = getattr(client, method)(url, headers=tokens["admin"], json=body)
    assert response.status_code < 500, response.get_data(as_text=True)
    if response.status_code >= 400:
        assert "error" in response.get_json()
        after = client.get("/api/v1/workflows/ORDER_SYNC/export", headers=tokens["admin"]).data
        assert after == before


def test_http_errors_inside_the_api_are_json(client, tokens):
    response = client.get("/api/v1/instances/notanumber", headers=tokens["viewer"])
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found"
    response = client.get("/api/v1/runs/12345", headers=tokens["viewer"])
    assert response.status_code == 404 and "does not exist" in response.get_json()["error"][
        "message"]
