"""The authoring API: workflows, integrations and trigger types, with keyset pagination."""

from __future__ import annotations

import copy
from typing import Any

from sqlalchemy import func, select

from wfapp.demo import ORDER_SYNC, SHOP_ORDERS
from wfapp.extensions import db
from wfapp.models import AuditEntry, Instance, Integration, Workflow
from wfapp.services.definitions import import_document
from wfapp.services.integrations import create_integration, get_integration

API = "/api/v1"


def _doc(code: str = "NEW_FLOW") -> dict[str, Any]:
    doc = copy.deepcopy(ORDER_SYNC)
    doc["workflow"]["code"] = code
    return doc


def _instance(workflow_code: str, key: str, state: str = "NEW", active: bool = True) -> None:
    workflow = db.session.scalar(select(Workflow).where(Workflow.code == workflow_code))
    db.session.add(Instance(workflow_id=workflow.id, integration_id=get_integration(
        SHOP_ORDERS["code"]).id, record_key=key, state=state, active=active))
    db.session.commit()


def _walk(client, url: str, headers: dict[str, str], limit: int) -> list[str]:
    """Follow `next` cursors to the end; return the codes in the order the pages gave them."""
    codes, cursor, pages = [], None, 0
    while True:
        sep = "&" if "?" in url else "?"
        page_url = f"{url}{sep}limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        response = client.get(page_url, headers=headers)
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        assert set(body) == {"items", "next"}
        assert len(body["items"]) <= limit
        codes += [item["code"] for item in body["items"]]
        cursor, pages = body["next"], pages + 1
        if cursor is None:
            return codes
        assert pages < 100


def test_list_workflows(client, tokens, demo):
    _instance("ORDER_SYNC", "A")
    _instance("ORDER_SYNC", "B", state="CONFIRMED", active=False)
    listed = client.get(f"{API}/workflows", headers=tokens["viewer"])
    assert listed.status_code == 200
    assert listed.get_json() == {"items": [{
        "code": "ORDER_SYNC", "description": "Sales order to fulfilment", "initial_state": "NEW",
        "enabled": True, "active_instances": 1, "latest_version": 1, "pinned_version": None}],
        "next": None}


def test_workflow_keyset_pages(client, tokens, app):
    codes = sorted(f"WF_{i:02d}" for i in range(23))
    for code in codes:
        import_document(_doc(code))
    assert _walk(client, f"{API}/workflows", tokens["viewer"], 5) == codes
    assert _walk(client, f"{API}/workflows", tokens["viewer"], 23) == codes
    assert _walk(client, f"{API}/workflows", tokens["viewer"], 500) == codes
    first = client.get(f"{API}/workflows?limit=22", headers=tokens["viewer"]).get_json()
    assert first["next"] is not None and "WF_" not in first["next"]  # the cursor is opaque
    # A workflow added behind the cursor does not shift the next page (keyset, not offset).
    page = client.get(f"{API}/workflows?limit=10", headers=tokens["viewer"]).get_json()
    import_document(_doc("AAA"))
    rest = client.get(f"{API}/workflows?limit=10&cursor={page['next']}",
                      headers=tokens["viewer"]).get_json()
    assert [i["code"] for i in rest["items"]] == codes[10:20]
    assert len(client.get(f"{API}/workflows", headers=tokens["viewer"]).get_json()["items"]) \
        == 24  # the default limit (50) holds them all


def test_export(client, tokens, demo):
    exported = client.get(f"{API}/workflows/order_sync/export", headers=tokens["viewer"])
    assert exported.status_code == 200 and exported.get_json() == {**ORDER_SYNC, "version": 1}
    missing = client.get(f"{API}/workflows/NOPE/export", headers=tokens["viewer"])
    assert missing.status_code == 404
    assert missing.get_json()["error"]["code"] == "not_found"
    assert "NOPE" in missing.get_json()["error"]["message"]


def test_import_create_conflict_replace(client, tokens, demo):
    h = tokens["author"]
    created = client.post(f"{API}/workflows/import", headers=h, json=_doc("new_flow"))
    assert created.status_code == 201
    assert created.get_json() == _doc("NEW_FLOW")  # codes are stored upper-case
    again = client.post(f"{API}/workflows/import", headers=h, json=_doc())
    assert again.status_code == 409
    assert again.get_json()["error"] == {
        "code": "conflict", "details": {"code": "NEW_FLOW"},
        "message": again.get_json()["error"]["message"]}
    assert "already exists" in again.get_json()["error"]["message"]
    changed = _doc()
    changed["workflow"]["description"] = "Changed"
    replaced = client.post(f"{API}/workflows/import?replace=true", headers=h, json=changed)
    assert replaced.status_code == 200 and replaced.get_json() == changed
    assert client.get(f"{API}/workflows/NEW_FLOW/export", headers=h).get_json() == \
        {**changed, "version": 2}
    # replace=true on a code that does not exist yet creates it.
    fresh = client.post(f"{API}/workflows/import?replace=true", headers=h, json=_doc("FRESH"))
    assert fresh.status_code == 201
    not_replacing = client.post(f"{API}/workflows/import?replace=false", headers=h, json=changed)
    assert not_replacing.status_code == 409


def test_import_replace_leaves_instances_on_their_version(client, tokens, demo):
    _instance("ORDER_SYNC", "A", state="PENDING")
    doc = copy.deepcopy(ORDER_SYNC)
    doc["workflow"]["states"] = [s for s in doc["workflow"]["states"] if s["code"] != "PENDING"]
    doc["workflow"]["transitions"] = [t for t in doc["workflow"]["transitions"]
                                      if "PENDING" not in (t["from_state"], t["to_state"])]
    response = client.post(f"{API}/workflows/import?replace=true", headers=tokens["author"],
                           json=doc)
    assert response.status_code == 200
    h = tokens["viewer"]
    assert client.get(f"{API}/workflows/ORDER_SYNC/export", headers=h).get_json() == \
        {**doc, "version": 2}
    assert client.get(f"{API}/workflows/ORDER_SYNC/versions/1", headers=h).get_json() == \
        {**ORDER_SYNC, "version": 1}
    instance = client.get(f"{API}/instances?workflow=ORDER_SYNC", headers=h).get_json()
    assert [(i["state"], i["workflow_version"]) for i in instance["items"]] == [("PENDING", 1)]


def test_import_collects_every_error_and_writes_nothing(client, tokens, demo):
    doc = _doc("BROKEN")
    doc["workflow"]["states"][2]["code"] = "NEW"
    doc["workflow"]["transitions"][0]["trigger_type"] = "on_fax"
    doc["workflow"]["states"][0]["timeout_hours"] = -1
    response = client.post(f"{API}/workflows/import", headers=tokens["author"], json=doc)
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "validation_failed"
    details = {d["path"]: d["message"] for d in error["details"]}
    # Schema errors and rule errors elsewhere come back in one answer.
    assert "workflow.states[0].timeout_hours" in details
    assert details["workflow.states[2].code"] == "duplicate code 'NEW'"
    assert details["workflow.transitions[0].trigger_type"].startswith("unknown trigger type")
    assert db.session.scalar(select(func.count()).select_from(Workflow)) == 1


def test_copy(client, tokens, demo):
    h = tokens["author"]
    copied = client.post(f"{API}/workflows/ORDER_SYNC/copy", headers=h,
                         json={"new_code": "order_copy"})
    assert copied.status_code == 201
    expected = copy.deepcopy(ORDER_SYNC)
    expected["workflow"]["code"] = "ORDER_COPY"
    assert copied.get_json() == expected
    assert client.get(f"{API}/workflows/ORDER_COPY/export", headers=h).get_json() == \
        {**expected, "version": 1}
    taken = client.post(f"{API}/workflows/ORDER_SYNC/copy", headers=h,
                        json={"new_code": "ORDER_COPY"})
    assert taken.status_code == 409 and "choose another code" in taken.get_json()["error"][
        "message"]
    assert client.post(f"{API}/workflows/NOPE/copy", headers=h,
                       json={"new_code": "X"}).status_code == 404
    for new_code in ("bad code", "X" * 21, ""):
        bad = client.post(f"{API}/workflows/ORDER_SYNC/copy", headers=h,
                          json={"new_code": new_code})
        assert bad.status_code == 422
        assert [d["path"] for d in bad.get_json()["error"]["details"]] == ["new_code"]


def test_patch(client, tokens, demo):
    h = tokens["author"]
    patched = client.patch(f"{API}/workflows/order_sync", headers=h,
                           json={"enabled": False, "description": "Orders"})
    assert patched.status_code == 200
    body = patched.get_json()
    assert body["workflow"]["enabled"] is False and body["workflow"]["description"] == "Orders"
    assert body["workflow"]["states"] == ORDER_SYNC["workflow"]["states"]
    only_enabled = client.patch(f"{API}/workflows/ORDER_SYNC", headers=h, json={"enabled": True})
    assert only_enabled.get_json()["workflow"]["description"] == "Orders"
    unchanged = client.patch(f"{API}/workflows/ORDER_SYNC", headers=h, json={})
    assert unchanged.status_code == 200 and unchanged.get_json()["workflow"]["enabled"] is True
    too_long = client.patch(f"{API}/workflows/ORDER_SYNC", headers=h,
                            json={"description": "x" * 101})
    assert too_long.status_code == 422
    assert too_long.get_json()["error"]["details"][0]["path"] == "workflow.description"
    assert client.patch(f"{API}/workflows/NOPE", headers=h, json={}).status_code == 404


def test_delete(client, tokens, demo):
    h = tokens["author"]
    _instance("ORDER_SYNC", "A")
    refused = client.delete(f"{API}/workflows/ORDER_SYNC", headers=h)
    assert refused.status_code == 409
    assert refused.get_json()["error"]["details"] == {"active_instances": 1}
    assert "active instance" in refused.get_json()["error"]["message"]
    db.session.execute(Instance.__table__.update().values(state="CONFIRMED", active=False))
    db.session.commit()
    deleted = client.delete(f"{API}/workflows/order_sync", headers=h)
    assert deleted.status_code == 200
    assert deleted.get_json() == {"deleted": "ORDER_SYNC", "detached_integrations": [
        "SHOP_ORDERS"]}
    assert db.session.scalar(select(func.count()).select_from(Instance)) == 0
    assert db.session.scalar(select(Integration.workflow_id)) is None
    assert db.session.scalar(select(AuditEntry.actor).where(AuditEntry.action == "delete")
                             ) == "author"
    assert client.delete(f"{API}/workflows/ORDER_SYNC", headers=h).status_code == 404


def test_integrations(client, tokens, demo):
    h = tokens["author"]
    created = client.post(f"{API}/integrations", headers=h, json={
        "code": "inv_out", "description": "Invoices", "workflow_code": "order_sync",
        "instance_mode": "per_run", "webhook_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "record_key_path": "data.id", "record_url_template": "https://erp/{record_key}"})
    assert created.status_code == 201
    body = created.get_json()
    assert body.items() >= {
        "code": "INV_OUT", "description": "Invoices", "workflow_code": "ORDER_SYNC",
        "instance_mode": "per_run", "enabled": True,
        "record_url_template": "https://erp/{record_key}", "record_key_path": "data.id",
        "event_type_path": "type", "secrets_set": ["webhook_secret"],
        "secret_names": []}.items()
    got = client.get(f"{API}/integrations/inv_out", headers=tokens["viewer"])
    assert got.status_code == 200 and got.get_json() == body
    patched = client.patch(f"{API}/integrations/INV_OUT", headers=h,
                           json={"enabled": False, "workflow_code": None,
                                 "bc_client_state": "s3cret"})
    assert patched.status_code == 200
    after = patched.get_json()
    assert after["enabled"] is False and after["workflow_code"] is None
    assert sorted(after["secrets_set"]) == ["bc_client_state", "webhook_secret"]
    assert "s3cret" not in patched.get_data(as_text=True)  # secrets are write-only
    assert "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" not in got.get_data(as_text=True)
    # An empty secret keeps the stored one; the code cannot change.
    kept = client.patch(f"{API}/integrations/INV_OUT", headers=h, json={"webhook_secret": ""})
    assert sorted(kept.get_json()["secrets_set"]) == ["bc_client_state", "webhook_secret"]
    renamed = client.patch(f"{API}/integrations/INV_OUT", headers=h, json={"code": "OTHER"})
    assert renamed.status_code == 422
    assert renamed.get_json()["error"]["details"][0]["path"] == "code"
    assert client.patch(f"{API}/integrations/NOPE", headers=h, json={}).status_code == 404
    assert client.get(f"{API}/integrations/NOPE", headers=h).status_code == 404


def test_named_secrets(client, tokens, demo):
    from wfapp.plugin_api import find_integration

    h = tokens["author"]
    url = f"{API}/integrations/SHOP_ORDERS"
    done = client.patch(url, headers=h, json={"secrets": {"erp_token": "tok-1", "b": "x"}})
    assert done.status_code == 200 and done.get_json()["secret_names"] == ["b", "erp_token"]
    assert "tok-1" not in done.get_data(as_text=True)
    assert find_integration("SHOP_ORDERS").named_secrets() == {"erp_token": "tok-1", "b": "x"}
    removed = client.patch(url, headers=h, json={"secrets": {"b": None}})
    assert removed.get_json()["secret_names"] == ["erp_token"]
    for bad, place in [({"secrets": []}, "secrets"), ({"secrets": {"1x": "v"}}, "secrets.1x"),
                       ({"secrets": {"a": 5}}, "secrets.a"), ({"secrets": {"a": ""}}, "secrets.a"),
                       ({"secrets": {"a": "x" * 5000}}, "secrets.a")]:
        answer = client.patch(url, headers=h, json=bad)
        assert answer.status_code == 422, bad
        assert answer.get_json()["error"]["details"][0]["path"] == place
    assert client.patch(url, headers=tokens["operator"], json={"secrets": {"a": "b"}}
                        ).status_code == 403
    assert find_integration("SHOP_ORDERS").named_secrets() == {"erp_token": "tok-1"}


def test_integration_field_errors(client, tokens, demo):
    h = tokens["author"]
    cases = [({"code": "X", "instance_mode": "sometimes"}, "instance_mode"),
             ({"code": "Y", "workflow_code": "NOPE"}, "workflow_code"),
             ({"code": "Y", "workflow_code": 3}, "workflow_code"),
             ({"code": "Z", "colour": "red"}, "colour"),
             ({"code": "bad code"}, "code"), ({"code": "SHOP_ORDERS"}, "code"),
             ({}, "code"), ({"code": 7}, "code"),
             ({"code": "W", "enabled": "yes"}, "enabled"),
             ({"code": "W", "description": ["x"]}, "description"),
             ({"code": "W", "description": "x" * 101}, "description"),
             ({"code": "W", "record_url_template": "ftp://x"}, "record_url_template"),
             ({"code": "W", "record_url_template": "https://x/{nope}"}, "record_url_template"),
             ({"code": "W", "record_url_template": "https://x/" + "a" * 500},
              "record_url_template"),
             ({"code": "W", "record_key_path": 5}, "record_key_path"),
             ({"code": "W", "webhook_secret": {"a": 1}}, "webhook_secret")]
    for body, field in cases:
        response = client.post(f"{API}/integrations", headers=h, json=body)
        assert response.status_code == 422, (body, response.get_json())
        assert field in [d["path"] for d in response.get_json()["error"]["details"]], body
    assert db.session.scalar(select(func.count()).select_from(Integration)) == 1


def test_integration_keyset_pages(client, tokens, app):
    codes = sorted(f"INT_{i:02d}" for i in range(12))
    for code in reversed(codes):
        create_integration({"code": code})
    assert _walk(client, f"{API}/integrations", tokens["viewer"], 5) == codes
    assert _walk(client, f"{API}/integrations", tokens["viewer"], 1) == codes
    assert _walk(client, f"{API}/integrations", tokens["viewer"], 12) == codes


def test_trigger_types(client, tokens):
    response = client.get(f"{API}/trigger-types", headers=tokens["viewer"])
    assert response.status_code == 200
    body = response.get_json()
    assert body["next"] is None
    assert [t["name"] for t in body["items"]] == ["manual", "on_import", "on_export",
                                                  "on_webhook", "on_scheduled_poll",
                                                  "on_bc_event", "on_action_result"]
    by_name = {t["name"]: t for t in body["items"]}
    assert by_name["manual"]["manual"] is True and by_name["manual"]["label"] == "Manual"
    poll = by_name["on_scheduled_poll"]
    assert {f["name"] for f in poll["fields"]} >= {"url", "method", "interval_minutes"}
    url = next(f for f in poll["fields"] if f["name"] == "url")
    assert url["required"] is True and url["type"] == "string"
    bc = next(f for f in by_name["on_bc_event"]["fields"] if f["name"] == "change_types")
    assert bc["choices"] == ["created", "updated", "deleted", "collection"]


def test_method_not_allowed_keeps_allow_header(client, tokens):
    response = client.put("/api/v1/workflows", headers=tokens["viewer"], json={})
    assert response.status_code == 405 and "GET" in response.headers["Allow"]
    assert response.get_json()["error"]["code"] == "method_not_allowed"
