"""Integrations list and card, header search, login, CLI."""

from __future__ import annotations

import json
import re

from wfapp.demo import ORDER_SYNC
from wfapp.services.definitions import export_document
from wfapp.services.integrations import get_integration


def test_integrations_list_and_action_bar(client, auth, demo):
    auth.login("operator")
    page = client.get("/integrations/").get_data(as_text=True)
    assert "SHOP_ORDERS" in page and "Per Record" in page
    assert 'href="/workflows/">Workflows</a>' in page  # the action bar's Workflows
    assert "Workflow Instances" in page and "Run Import" in page
    assert client.get("/").headers["Location"].endswith("/integrations/")


def test_create_and_edit_integration(client, auth, demo):
    auth.login("author")
    created = client.post("/integrations/new", data={
        "code": "inv", "description": "Invoices", "workflow_code": "ORDER_SYNC",
        "instance_mode": "per_run", "enabled": "y", "record_url_template": "",
        "set-webhook_secret": "whsec_c2VjcmV0", "set-record_key_path": "data.id"})
    assert created.headers["Location"].endswith("/integrations/INV")
    integration = get_integration("INV")
    assert integration.workflow.code == "ORDER_SYNC" and integration.instance_mode == "per_run"
    assert integration.settings["webhook_secret"] == "whsec_c2VjcmV0"
    card = client.get("/integrations/INV").get_data(as_text=True)
    assert "whsec_c2VjcmV0" not in card and "(set)" in card
    # An empty secret keeps the stored one; the clear box removes it.
    client.post("/integrations/INV", data={"description": "Invoices 2", "workflow_code": "",
                                           "instance_mode": "per_record", "enabled": "y",
                                           "set-webhook_secret": ""})
    integration = get_integration("INV")
    assert integration.workflow is None and integration.settings["webhook_secret"]
    client.post("/integrations/INV", data={"workflow_code": "", "instance_mode": "per_record",
                                           "clear-webhook_secret": "y"})
    assert "webhook_secret" not in get_integration("INV").settings


def test_integration_errors_on_fields(client, auth, demo):
    auth.login("author")
    response = client.post("/integrations/SHOP_ORDERS", data={
        "workflow_code": "GHOST", "instance_mode": "per_record",
        "record_url_template": "erp/{nope}"})
    assert response.status_code == 422
    text = response.get_data(as_text=True)
    assert "workflow &#39;GHOST&#39; does not exist" in text
    assert "must start with http:// or https://" in text
    assert get_integration("SHOP_ORDERS").workflow.code == "ORDER_SYNC"
    duplicate = client.post("/integrations/new", data={"code": "SHOP_ORDERS",
                                                       "instance_mode": "per_record"})
    assert "already exists" in duplicate.get_data(as_text=True)


def test_viewer_cannot_edit_integrations(client, auth, demo):
    auth.login("viewer")
    assert client.post("/integrations/new", data={"code": "X"}).status_code == 403
    assert client.post("/integrations/SHOP_ORDERS", data={"description": "x"}).status_code == 403
    assert client.get("/integrations/new").status_code == 403


def test_search_finds_pages_and_records(client, auth, demo):
    auth.login("viewer")
    for query in ("Integration Workflows", "workflows"):
        items = client.get(f"/search.json?q={query}").get_json()["items"]
        assert items[0]["title"] == "Workflows" and items[0]["url"] == "/workflows/"
    items = client.get("/search.json?q=order_s").get_json()["items"]
    assert {"title": "ORDER_SYNC", "url": "/workflows/ORDER_SYNC"}.items() <= items[0].items()
    items = client.get("/search.json?q=shop").get_json()["items"]
    assert any(i["url"] == "/integrations/SHOP_ORDERS" for i in items)
    jump = client.get("/search?q=Integration+Workflows&go=1")
    assert jump.headers["Location"] == "/workflows/"
    assert "Nothing matches" in client.get("/search?q=zzzz").get_data(as_text=True)


def test_login_logout_and_next(client, users):
    response = client.get("/workflows/ORDER_SYNC")
    assert "/auth/login?next=" in response.headers["Location"]
    login = client.post("/auth/login?next=/workflows/", data={"username": "viewer",
                                                              "password": "secret-pass"})
    assert login.headers["Location"] == "/workflows/"
    client.post("/auth/logout")
    evil = client.post("/auth/login?next=https://evil.example/", data={
        "username": "viewer", "password": "secret-pass"})
    assert "evil" not in evil.headers["Location"]


def test_every_page_but_login_needs_a_login(app, client):
    open_endpoints = {"auth.login", "static", "bootstrap.static"}
    for rule in app.url_map.iter_rules():
        if rule.endpoint in open_endpoints or "GET" not in rule.methods:
            continue
        url = re.sub(r"<(?:int:)?([^>]+)>", "1", rule.rule)
        response = client.get(url)
        assert response.status_code in (302, 401), (rule.rule, response.status_code)


def test_cli_users_tokens_and_workflows(runner, app, tmp_path, demo):
    result = runner.invoke(args=["user", "create", "ann", "--password", "long-enough",
                                 "--role", "author"])
    assert result.exit_code == 0, result.output
    bad = runner.invoke(args=["user", "create", "ann", "--password", "x", "--role", "author"])
    assert bad.exit_code == 1 and "already exists" in bad.output
    token = runner.invoke(args=["token", "create", "ann"])
    assert token.exit_code == 0 and token.output.startswith("wfa_")
    assert runner.invoke(args=["token", "create", "nobody"]).exit_code == 1
    out = tmp_path / "o.json"
    assert runner.invoke(args=["wf", "export", "ORDER_SYNC", "-o", str(out)]).exit_code == 0
    assert json.loads(out.read_text()) == ORDER_SYNC
    doc = json.loads(out.read_text())
    doc["workflow"]["description"] = "From CLI"
    out.write_text(json.dumps(doc))
    refused = runner.invoke(args=["wf", "import", str(out)])
    assert refused.exit_code == 1 and "already exists" in refused.output
    assert runner.invoke(args=["wf", "import", str(out), "--replace"]).exit_code == 0
    assert export_document("ORDER_SYNC")["workflow"]["description"] == "From CLI"
    out.write_text('{"format": "wfapp.workflow/v1", "workflow": {"code": "bad code"}}')
    broken = runner.invoke(args=["wf", "import", str(out)])
    assert broken.exit_code == 1 and "workflow.initial_state: is required" in broken.output
    assert runner.invoke(args=["wf", "export", "NOPE"]).exit_code == 1


def test_cli_demo_is_idempotent(runner, app):
    first = runner.invoke(args=["demo"])
    assert "Log in as admin / " in first.output
    second = runner.invoke(args=["demo"])
    assert second.exit_code == 0 and "password is in" in second.output
    assert "Loaded" not in second.output
