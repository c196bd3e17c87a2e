"""Webhook settings (validated on save), the card panel and Generate new secret."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from sqlalchemy import select

from tests.webhooks import make_integration, standard
from wfapp import signing
from wfapp.extensions import db
from wfapp.models import IntegrationSecret
from wfapp.services import secrets

API = "/api/v1"
ORDER = {"type": "order.paid", "id": "SO-9", "total": 1}


class _ById(HTMLParser):
    """Collect the text inside the element with one id."""

    def __init__(self, wanted: str) -> None:
        super().__init__()
        self.wanted, self.depth, self.parts, self.value = wanted, 0, [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if self.depth:
            self.depth += 1
        elif attrs.get("id") == self.wanted:
            self.depth = 1
            self.value = attrs.get("value")

    def handle_endtag(self, tag):
        if self.depth:
            self.depth -= 1

    def handle_data(self, data):
        if self.depth:
            self.parts.append(data)


def element_text(html: str, element_id: str) -> str | None:
    """The text (or an input's value) of the element with this id; None when absent."""
    parser = _ById(element_id)
    parser.feed(html)
    if parser.value is not None:
        return parser.value
    return "".join(parser.parts) if parser.parts or f'id="{element_id}"' in html else None


def stored_secret(code: str = "HOOKS") -> str | None:
    from wfapp.services.integrations import get_integration

    found = secrets.read(get_integration(code).id, secrets.SETTING, "webhook_secret")
    return found.value if found else None


@pytest.mark.parametrize(("fields", "path", "words"), [
    ({"webhook_secret": "whsec_c2VjcmV0"}, "webhook_secret", "24–64 bytes"),
    ({"webhook_secret": "no-prefix"}, "webhook_secret", "must start with whsec_"),
    ({"webhook_allowed_ips": "10.0.0.0/8, 300.1.1.1"}, "webhook_allowed_ips", "300.1.1.1"),
    ({"webhook_allowed_ips": "10.0.0.1/8"}, "webhook_allowed_ips", "did you mean 10.0.0.0/8"),
    ({"webhook_allowed_ips": "fe80::/10\nnope"}, "webhook_allowed_ips", "'nope'"),
    ({"record_key_path": ""}, "record_key_path", "is required"),
    ({"record_key_path": "a..b"}, "record_key_path", "dotted path"),
    ({"webhook_max_bytes": 0}, "webhook_max_bytes", "at least"),
    ({"webhook_max_bytes": 10**9}, "webhook_max_bytes", "at most"),
    ({"webhook_signature_scheme": "rsa"}, "webhook_signature_scheme", "one of"),
    ({"webhook_signature_scheme": "hmac"}, "webhook_hmac_header", "is required"),
    ({"webhook_signature_scheme": "hmac", "webhook_hmac_header": "X Sig"},
     "webhook_hmac_header", "header name"),
    ({"webhook_signature_scheme": "hmac", "webhook_hmac_header": "X-Sig",
      "webhook_hmac_signed_content": "{timestamp}"}, "webhook_hmac_signed_content",
     "{body} exactly once"),
    ({"webhook_signature_scheme": "hmac", "webhook_hmac_header": "X-Sig",
      "webhook_hmac_signed_content": "{timestamp}.{body}"}, "webhook_hmac_signed_content",
     "HMAC Timestamp Header"),
    ({"webhook_signature_scheme": "hmac", "webhook_hmac_header": "X-Sig",
      "webhook_dedupe_header": "X-Id", "webhook_dedupe_path": "id"}, "webhook_dedupe_path",
     "not both"),
    ({"webhook_hmac_algorithm": "md5"}, "webhook_hmac_algorithm", "one of"),
    ({"webhook_enabled": "yes"}, "webhook_enabled", "true or false"),
])
def test_settings_are_checked_on_save(app, client, tokens, fields, path, words):
    make_integration()
    before = client.get(f"{API}/integrations/HOOKS", headers=tokens["author"]).get_json()
    response = client.patch(f"{API}/integrations/HOOKS", headers=tokens["author"], json=fields)
    assert response.status_code == 422, response.get_json()
    details = response.get_json()["error"]["details"]
    assert any(d["path"] == path and words in d["message"] for d in details), details
    after = client.get(f"{API}/integrations/HOOKS", headers=tokens["author"]).get_json()
    assert after == before  # nothing half-written


def test_settings_through_the_api_with_a_write_only_secret(app, client, tokens):
    make_integration()
    secret = signing.generate_secret()
    response = client.patch(f"{API}/integrations/HOOKS", headers=tokens["author"], json={
        "webhook_secret": secret, "webhook_allowed_ips": "10.0.0.0/8\n2001:db8::/32",
        "webhook_max_bytes": 2048, "webhook_secret_grace_hours": 1.5})
    assert response.status_code == 200, response.get_json()
    shown = response.get_json()
    assert "webhook_secret" not in shown and "webhook_secret" in shown["secrets_set"]
    assert shown["webhook_max_bytes"] == 2048 and shown["webhook_enabled"] is True
    assert stored_secret() == secret
    assert secret not in response.get_data(as_text=True)


def test_the_panel_shows_endpoint_status_curl_and_deliveries(app, client, auth):
    secret = make_integration()
    body, headers = standard(secret, ORDER)
    assert client.post("/hooks/HOOKS", data=body, headers=headers).status_code == 202
    client.post("/hooks/HOOKS", data=body, headers=headers)
    client.post("/hooks/HOOKS", data=body, headers=dict(headers, **{"webhook-signature": "x"}))
    auth.login("viewer")
    page = client.get("/integrations/HOOKS").get_data(as_text=True)
    assert "POST http://localhost/hooks/HOOKS" in element_text(page, "webhook-url")
    status = element_text(page, "webhook-status")
    assert "enabled" in status and "secret set" in status
    curl = element_text(page, "webhook-curl")
    assert "SECRET='<paste the webhook secret here>'" in curl and secret not in page
    rows = element_text(page, "webhook-deliveries")
    assert "accepted" in rows and "duplicate" in rows and "refused" in rows
    assert "no v1,&lt;base64&gt;" not in rows and "no v1,<base64> signature" in rows
    counters = " ".join(element_text(page, "webhook-counters").split())
    assert "Refused: 1" in counters and "Duplicate: 1" in counters
    assert element_text(page, "generate-webhook-secret") is None  # viewers cannot


def test_the_panel_warns_when_off_or_without_a_secret(app, client, auth):
    from wfapp.services.integrations import create_integration

    create_integration({"code": "BARE"})
    auth.login("viewer")
    status = element_text(client.get("/integrations/BARE").get_data(as_text=True),
                          "webhook-status")
    assert "every request answers 403" in status and "no secret" in status


def test_generate_new_secret_shows_it_once_and_keeps_the_old_one(app, client, auth):
    old = make_integration()
    auth.login("author")
    card = client.get("/integrations/HOOKS").get_data(as_text=True)
    assert element_text(card, "generate-webhook-secret") == "Generate new secret"
    response = client.post("/integrations/HOOKS/webhook-secret")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    page = response.get_data(as_text=True)
    new = element_text(page, "new-webhook-secret")
    assert new.startswith("whsec_") and len(signing.parse_secret(new)) == 32
    assert new == stored_secret() and new != old
    assert f"SECRET={new}" in element_text(page, "webhook-curl").replace("'", "")
    # Never again: not on the card, not in the session cookie.
    again = client.get("/integrations/HOOKS").get_data(as_text=True)
    assert new not in again and old not in again
    assert all(new not in c.value for c in client._cookies.values())
    # The new secret works, and the old one during the grace period.
    for secret in (new, old):
        body, headers = standard(secret, ORDER)
        assert client.post("/hooks/HOOKS", data=body, headers=headers).status_code in (200, 202)
    row = db.session.scalars(select(IntegrationSecret)).one()
    assert row.previous is not None and row.rotated_at is not None


@pytest.mark.parametrize(("role", "status"), [("viewer", 403), ("operator", 403)])
def test_generate_new_secret_needs_the_author_role(app, client, auth, role, status):
    old = make_integration()
    auth.login(role)
    assert client.post("/integrations/HOOKS/webhook-secret").status_code == status
    assert stored_secret() == old


def test_generate_new_secret_needs_a_login_and_a_known_integration(app, client, auth):
    make_integration()
    assert client.post("/integrations/HOOKS/webhook-secret").status_code == 302
    auth.login("author")
    assert client.post("/integrations/NOPE/webhook-secret").status_code == 404


def test_settings_on_the_card_form(app, client, auth):
    make_integration()
    auth.login("author")
    form = {"description": "d", "instance_mode": "per_record", "enabled": "y",
            "workflow_code": "HOOKFLOW", "set-webhook_enabled": "y",
            "set-record_key_path": "id", "set-event_type_path": "type",
            "set-webhook_allowed_ips": "10.0.0.0/8\n192.0.2.300",
            "set-webhook_signature_scheme": "standard", "set-webhook_hmac_algorithm": "sha256",
            "set-webhook_hmac_encoding": "hex"}
    page = client.post("/integrations/HOOKS", data=form)
    assert page.status_code == 422
    assert "192.0.2.300" in page.get_data(as_text=True)
    form["set-webhook_allowed_ips"] = "10.0.0.0/8\n192.0.2.30"
    assert client.post("/integrations/HOOKS", data=form).status_code == 302
    body, headers = standard(stored_secret(), ORDER)
    assert client.post("/hooks/HOOKS", data=body, headers=headers).status_code == 403
