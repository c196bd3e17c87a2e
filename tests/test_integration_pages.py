"""The Integrations list and the integration card, through the test client."""

from __future__ import annotations

import re
from html import unescape
from typing import Any

import pytest

from wfapp.hookspecs import hookimpl
from wfapp.queue import get_queue
from wfapp.services.integrations import get_integration
from wfapp.services.runs import start_run
from wfapp.triggers import Field

# Standard Webhooks secrets (whsec_ and 24-64 bytes of base64), as the settings check demands.
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
TYPED = "whsec_dHlwZWQtdHlwZWQtdHlwZWQtdHlwZWQtdHlwZWQ="

NEW = {"code": "inv", "description": "Invoices", "workflow_code": "ORDER_SYNC",
       "instance_mode": "per_run", "enabled": "y", "record_url_template": ""}


def field_error(html: str, field_id: str) -> str | None:
    """The error messages shown under the input with this id, joined (None when none)."""
    rest = html[html.index(f'id="{field_id}"'):]
    following = re.search(r"<label|<legend", rest[1:])
    chunk = rest[:following.start() + 1] if following else rest
    found = re.findall(r'class="invalid-feedback[^"]*"[^>]*>(.*?)</div>', chunk, re.S)
    return "; ".join(unescape(m).strip() for m in found) or None


def edit(client: Any, target: str = "SHOP_ORDERS", **changes: str) -> Any:
    """Post the card as it is now, with some fields changed."""
    data = {"description": "Web shop orders to fulfilment", "workflow_code": "ORDER_SYNC",
            "instance_mode": "per_record", "enabled": "y",
            "record_url_template": "https://erp.example/orders/{record_key}",
            "set-record_key_path": "id", "set-event_type_path": "type", **changes}
    return client.post(f"/integrations/{target}", data=data)


def test_list_columns_and_action_bar(client, auth, demo):
    auth.login("author")
    page = client.get("/integrations/").get_data(as_text=True)
    for column in ("Code", "Description", "Workflow Code", "Workflow Instance Mode", "Enabled"):
        assert f"<th>{column}</th>" in page
    assert "data flows" in page  # the one-line explanation
    assert '<table class="table table-sm table-hover align-middle" data-selectable=' in page
    bar = page[page.index('id="integration-actions"'):page.index("</div>", page.index(
        'id="integration-actions"'))]
    assert 'href="/integrations/new">New</a>' in bar
    assert ">Edit</a>" in bar and 'href="/workflows/">Workflows</a>' in bar
    assert 'data-requires-selection="instancesUrl"' in bar and ">Workflow Instances</a>" in bar
    row = page[page.index('data-edit-url="/integrations/SHOP_ORDERS"'):]
    assert 'data-instances-url="/instances/?integration=SHOP_ORDERS"' in row
    assert '<a href="/workflows/ORDER_SYNC">ORDER_SYNC</a>' in row and "Per Record" in row
    assert client.get("/").headers["Location"].endswith("/integrations/")


def test_empty_list_says_what_to_do(client, auth):
    auth.login("viewer")
    page = client.get("/integrations/").get_data(as_text=True)
    assert "No integrations yet" in page
    assert '<span title="Needs the author role"><a class="btn btn-primary btn-sm disabled"' in page


def test_new_form_explains_itself(client, auth, demo):
    auth.login("author")
    page = client.get("/integrations/new").get_data(as_text=True)
    for field_id in ("code", "description", "workflow_code", "enabled", "record_url_template",
                     "set-webhook_secret", "set-record_key_path"):
        assert f'for="{field_id}"' in page, field_id
    assert '<option value="">(none)</option>' in page
    assert '<option value="ORDER_SYNC">ORDER_SYNC · Sales order to fulfilment</option>' in page
    assert "Per Run: each import or export run is one instance" in page
    assert "{vars.&lt;name&gt;}" in page and "{data.&lt;field&gt;}" in page
    assert "Trigger settings" in page and "(not set)" in page


def test_create_integration(client, auth, demo):
    auth.login("author")
    created = client.post("/integrations/new", data={
        **NEW, "set-webhook_secret": WHSEC, "set-record_key_path": "data.id"})
    assert created.headers["Location"].endswith("/integrations/INV")
    integration = get_integration("INV")
    assert integration.workflow.code == "ORDER_SYNC" and integration.instance_mode == "per_run"
    assert integration.description == "Invoices" and integration.enabled
    assert stored_secret("INV", "webhook_secret") == WHSEC
    assert "webhook_secret" not in integration.settings
    assert integration.settings["record_key_path"] == "data.id"
    assert integration.settings["event_type_path"] == "type"  # the plugin's default
    assert "Integration INV created." in client.get(created.headers["Location"]).get_data(
        as_text=True)


def test_card_shows_attached_workflow_and_links(client, auth, demo):
    auth.login("viewer")
    page = client.get("/integrations/shop_orders").get_data(as_text=True)  # any case
    assert 'id="code" value="SHOP_ORDERS" readonly' in page
    summary = page[page.index('id="attached-workflow"'):]
    assert "Initial State</dt><dd" in summary and "NEW" in summary
    assert "5 (3 final)" in summary and "Transitions" in summary
    assert 'href="/workflows/ORDER_SYNC">Open Workflow Card</a>' in page
    assert 'href="/instances/?integration=SHOP_ORDERS">Workflow Instances</a>' in page
    assert 'href="/workflows/">Workflows</a>' in page


def test_card_counts_active_instances_and_lists_runs(client, auth, demo):
    integration = get_integration("SHOP_ORDERS")
    start_run(integration, "import", [{"key": "SO-1", "data": {"total": 5}}], "test")
    get_queue().drain()
    auth.login("viewer")
    page = client.get("/integrations/SHOP_ORDERS").get_data(as_text=True)
    assert re.search(r'active=yes" title="Active instances of SHOP_ORDERS">1</a>', page)
    assert "Recent runs" in page


def test_card_without_workflow(client, auth, demo):
    auth.login("author")
    edit(client, workflow_code="")
    page = client.get("/integrations/SHOP_ORDERS").get_data(as_text=True)
    assert get_integration("SHOP_ORDERS").workflow is None
    assert "No workflow is attached" in page and "Open Workflow Card" not in page


def test_code_cannot_change(client, auth, demo):
    auth.login("author")
    edit(client, code="OTHER", description="Still the shop")
    integration = get_integration("SHOP_ORDERS")
    assert integration.description == "Still the shop"


def stored_secret(code: str, name: str) -> str | None:
    """A secret setting as a plugin reads it (decrypted)."""
    from wfapp.plugin_api import find_integration

    return find_integration(code).secret(name)


def test_secrets_are_encrypted_at_rest(client, auth, demo):
    from sqlalchemy import text

    from wfapp.extensions import db

    auth.login("author")
    edit(client, **{"set-webhook_secret": WHSEC})
    raw = db.session.execute(text("SELECT ciphertext FROM integration_secret")).scalars().all()
    assert len(raw) == 1 and "c2VjcmV0" not in raw[0] and raw[0].startswith("gAAAA")
    settings = db.session.execute(text("SELECT settings FROM integration")).scalars().all()
    assert all("c2VjcmV0" not in str(s) for s in settings)


def test_secrets_are_write_only(client, auth, demo):
    auth.login("author")
    edit(client, **{"set-webhook_secret": WHSEC, "set-bc_client_state": "s3cret-bc"})
    page = client.get("/integrations/SHOP_ORDERS").get_data(as_text=True)
    assert WHSEC not in page and "s3cret-bc" not in page
    assert page.count("(set)") == 2 and 'for="clear-webhook_secret"' in page
    # An empty secret keeps the stored one.
    edit(client, **{"set-webhook_secret": ""})
    assert stored_secret("SHOP_ORDERS", "webhook_secret") == WHSEC
    # The clear box removes it, in the same save as the other fields.
    edit(client, description="Cleared", **{"clear-webhook_secret": "y"})
    integration = get_integration("SHOP_ORDERS")
    assert stored_secret("SHOP_ORDERS", "webhook_secret") is None
    assert integration.description == "Cleared"
    assert stored_secret("SHOP_ORDERS", "bc_client_state") == "s3cret-bc"
    # A new value wins over the clear box.
    edit(client, **{"clear-bc_client_state": "y", "set-bc_client_state": "newer"})
    assert stored_secret("SHOP_ORDERS", "bc_client_state") == "newer"
    # A failed save does not echo a typed secret back either.
    failed = edit(client, workflow_code="GHOST", **{"set-webhook_secret": TYPED})
    assert failed.status_code == 422 and TYPED not in failed.get_data(as_text=True)


def test_errors_are_shown_on_their_fields_and_nothing_is_saved(client, auth, demo):
    auth.login("author")
    response = edit(client, description="Changed", workflow_code="GHOST",
                    record_url_template="erp/{nope}")
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "Nothing was saved" in page
    assert field_error(page, "workflow_code") == "workflow 'GHOST' does not exist"
    assert "must start with http:// or https://" in field_error(page, "record_url_template")
    assert "unknown placeholder {nope}" in field_error(page, "record_url_template")
    assert field_error(page, "description") is None
    assert 'value="Changed"' in page  # what was typed is kept
    integration = get_integration("SHOP_ORDERS")
    assert integration.workflow.code == "ORDER_SYNC" and integration.description != "Changed"

    too_long = edit(client, description="x" * 101)
    assert too_long.status_code == 422 and field_error(too_long.get_data(as_text=True),
                                                       "description")
    bad_mode = edit(client, instance_mode="sometimes")
    assert bad_mode.status_code == 422
    assert get_integration("SHOP_ORDERS").instance_mode == "per_record"


def test_new_integration_errors(client, auth, demo):
    auth.login("author")
    duplicate = client.post("/integrations/new", data={**NEW, "code": "shop_orders"})
    assert duplicate.status_code == 422
    assert "already exists" in field_error(duplicate.get_data(as_text=True), "code")
    bad = client.post("/integrations/new", data={**NEW, "code": "bad code!"})
    assert bad.status_code == 422 and field_error(bad.get_data(as_text=True), "code")
    empty = client.post("/integrations/new", data={**NEW, "code": ""})
    assert empty.status_code == 422 and field_error(empty.get_data(as_text=True), "code")
    page = client.post("/integrations/new", data={**NEW, "workflow_code": "GHOST"})
    assert "does not exist" in field_error(page.get_data(as_text=True), "workflow_code")
    assert 'value="inv"' in page.get_data(as_text=True)
    from wfapp.services.integrations import list_integrations

    assert [i.code for i in list_integrations()] == ["SHOP_ORDERS"]


def test_unknown_integration_is_404(client, auth):
    auth.login("author")
    assert client.get("/integrations/NOPE").status_code == 404
    assert client.post("/integrations/NOPE", data={"description": "x"}).status_code == 404


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_only_authors_change_integrations(client, auth, demo, role):
    auth.login(role)
    assert client.get("/integrations/new").status_code == 403
    assert client.post("/integrations/new", data=NEW).status_code == 403
    assert edit(client, description="x").status_code == 403
    assert get_integration("SHOP_ORDERS").description == "Web shop orders to fulfilment"
    page = client.get("/integrations/SHOP_ORDERS").get_data(as_text=True)
    assert "<fieldset disabled>" in page and ">Save</button>" not in page
    assert "changing it needs the author role" in page


class TypedSettings:
    """A test plugin whose integration settings use every input type."""

    @hookimpl
    def register_integration_settings(self) -> list[Field]:
        """Settings of several types."""
        return [
            Field("batch_size", "Batch Size", type="int", min=1, default=10),
            Field("verify_tls", "Verify TLS", type="bool", default=True),
            Field("region", "Region", type="choice", choices=(("eu", "EU"), ("us", "US"))),
            Field("channels", "Channels", type="multichoice",
                  choices=(("mail", "Mail"), ("sms", "SMS"))),
            Field("extra_headers", "Extra Headers", type="json"),
        ]


@pytest.fixture
def typed_app(app_config):
    """An app with the TypedSettings plugin on top of the built-ins."""
    app_config["PLUGINS"] = [TypedSettings()]
    from tests.conftest import _app_on_clean_database

    yield from _app_on_clean_database(app_config)


def test_plugin_settings_of_every_type(typed_app):
    from wfapp.services.users import create_user

    create_user("author", "secret-pass", "author")
    client = typed_app.test_client()
    client.post("/auth/login", data={"username": "author", "password": "secret-pass"})
    page = client.get("/integrations/new").get_data(as_text=True)
    assert 'type="number"' in page and 'id="set-verify_tls"' in page
    assert '<select class="form-select" id="set-region"' in page
    assert 'id="set-channels-sms"' in page and '<textarea' in page
    base = {"code": "TYPED", "instance_mode": "per_record", "workflow_code": ""}
    bad = client.post("/integrations/new", data={
        **base, "set-batch_size": "many", "set-extra_headers": "{nope"})
    text = bad.get_data(as_text=True)
    assert bad.status_code == 422 and "Nothing was saved" in text
    assert field_error(text, "set-batch_size") == "must be a number"
    assert field_error(text, "set-extra_headers").startswith("is not valid JSON")
    assert 'value="many"' in text
    low = client.post("/integrations/new", data={**base, "set-batch_size": "0"})
    assert field_error(low.get_data(as_text=True), "set-batch_size") == "must be at least 1"
    good = client.post("/integrations/new", data={
        **base, "set-batch_size": "25", "set-region": "us", "set-channels": ["mail", "sms"],
        "set-extra_headers": '{"X-Tenant": "7"}'})
    assert good.status_code == 302
    settings = get_integration("TYPED").settings
    assert settings["batch_size"] == 25 and settings["verify_tls"] is False
    assert settings["region"] == "us" and settings["channels"] == ["mail", "sms"]
    assert settings["extra_headers"] == {"X-Tenant": "7"}
    card = client.get("/integrations/TYPED").get_data(as_text=True)
    assert 'value="25"' in card and 'value="sms" checked' in card
    assert '<option value="us" selected>' in card and "X-Tenant" in card


def test_nul_characters_are_refused_not_a_500(client, auth, demo):
    auth.login("author")
    response = edit(client, description="a\x00b", workflow_code="ORDER\x00SYNC")
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert field_error(page, "description") == "must not contain NUL characters"
    assert "NUL" in field_error(page, "workflow_code")
    created = client.post("/integrations/new", data={**NEW, "code": "A\x00B"})
    assert created.status_code == 422 and field_error(created.get_data(as_text=True), "code")
    settings = edit(client, **{"set-record_key_path": "id\x00"})
    assert "NUL" in field_error(settings.get_data(as_text=True), "set-record_key_path")
    assert client.get("/integrations/SHOP%00ORDERS").status_code == 404


def test_named_secrets_on_the_card(client, auth, demo):
    from wfapp.plugin_api import find_integration

    auth.login("author")
    edit(client, **{"new-secret-name-0": "erp_token", "new-secret-value-0": "tok-9"})
    page = client.get("/integrations/SHOP_ORDERS").get_data(as_text=True)
    assert "{secret.erp_token}" in page and "tok-9" not in page
    assert find_integration("SHOP_ORDERS").named_secrets() == {"erp_token": "tok-9"}
    bad = edit(client, **{"new-secret-name-0": "no spaces", "new-secret-value-0": "v"})
    assert bad.status_code == 422 and "secrets.no spaces" in bad.get_data(as_text=True)
    missing = edit(client, **{"new-secret-value-1": "v"})
    assert missing.status_code == 422 and "give the new secret a name" in missing.get_data(
        as_text=True)
    edit(client, **{"remove-secret": "erp_token"})
    assert find_integration("SHOP_ORDERS").named_secrets() == {}
