"""POST /hooks/<integration>: every status in its order, nothing stored on refusals."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text

from tests.webhooks import GITHUB, SHOPIFY, github, make_integration, shopify, standard
from wfapp import signing
from wfapp.extensions import db
from wfapp.models import Delivery, Event, Instance, IntegrationSecret

ORDER = {"type": "order.paid", "id": "SO-1", "total": 12.5}


def events() -> int:
    return db.session.scalar(select(func.count()).select_from(Event))


def deliveries() -> list[tuple[str, int, str]]:
    db.session.expire_all()
    return [(d.outcome, d.status_code, d.reason) for d in db.session.scalars(
        select(Delivery).order_by(Delivery.id))]


def post(client, body, headers, code="HOOKS", **kwargs):
    return client.post(f"/hooks/{code}", data=body, headers=headers, **kwargs)


def drain(app):
    app.extensions["wfapp"]["queue"].drain()
    db.session.expire_all()


def refused(response, status, code=None):
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert set(error) == {"code", "message", "details"}
    if code:
        assert error["code"] == code
    return error


def test_accepted_202_moves_the_instance_and_redelivery_is_200(app, client):
    secret = make_integration()
    body, headers = standard(secret, ORDER, msg_id="msg_1")
    response = post(client, body, headers)
    assert response.status_code == 202
    event_id = response.get_json()["event_id"]
    event = db.session.get(Event, event_id)
    assert (event.source, event.type, event.record_key, event.payload) == (
        "on_webhook", "order.paid", "SO-1", ORDER)
    again = post(client, body, headers)
    assert again.status_code == 200 and again.get_json() == {"duplicate": True}
    assert events() == 1
    assert deliveries() == [("duplicate", 200, "redelivery of an accepted webhook")]
    drain(app)
    instance = db.session.scalar(select(Instance).where(Instance.record_key == "SO-1"))
    assert instance.state == "PAID" and instance.vars == {"paid": 12.5}


def test_unknown_integration_404(app, client):
    make_integration()
    body, headers = standard(signing.generate_secret(), ORDER)
    error = refused(post(client, body, headers, code="NOPE"), 404, "not_found")
    assert "NOPE" in error["message"]
    refused(post(client, body, headers, code="x" * 300), 404)
    assert events() == 0


@pytest.mark.parametrize(("settings", "code", "words"), [
    ({"webhook_enabled": False}, "disabled", "Webhook Enabled"),
    ({"enabled": False}, "disabled", "integration HOOKS is disabled"),
])
def test_disabled_403(app, client, settings, code, words):
    secret = make_integration(**settings)
    body, headers = standard(secret, ORDER)
    assert words in refused(post(client, body, headers), 403, code)["message"]
    assert events() == 0 and deliveries()[0][:2] == ("refused", 403)


def test_webhooks_are_off_by_default(app, client):
    from wfapp.services.integrations import create_integration

    create_integration({"code": "PLAIN", "webhook_secret": signing.generate_secret()})
    body, headers = standard(signing.generate_secret(), ORDER)
    refused(post(client, body, headers, code="PLAIN"), 403, "disabled")


def test_no_secret_403_says_so(app, client):
    from wfapp.services.integrations import update_integration

    secret = make_integration()
    update_integration("HOOKS", {}, clear=["webhook_secret"])
    body, headers = standard(secret, ORDER)
    error = refused(post(client, body, headers), 403, "no_secret")
    assert "no webhook secret is configured" in error["message"]
    assert events() == 0


def test_a_stored_secret_that_is_not_whsec_refuses_the_standard_scheme(app, client):
    from wfapp.services.integrations import update_integration

    make_integration(secret="plain-text-secret", **SHOPIFY)
    update_integration("HOOKS", {"webhook_signature_scheme": "standard"})
    body, headers = standard(signing.generate_secret(), ORDER)
    assert "whsec_" in refused(post(client, body, headers), 403, "bad_secret")["message"]


def test_allow_list_403_and_trusted_proxies(app, client, app_config):
    secret = make_integration(webhook_allowed_ips="10.0.0.0/8, 2001:db8::/32\n192.0.2.7")
    body, headers = standard(secret, ORDER)
    refused(post(client, body, headers), 403, "ip_not_allowed")
    # Without TRUSTED_PROXIES the header is the client's word, not the proxy's: ignored.
    spoofed = dict(headers, **{"X-Forwarded-For": "10.1.2.3"})
    refused(post(client, body, spoofed), 403, "ip_not_allowed")
    for address in ("10.9.8.7", "192.0.2.7", "2001:db8::1", "::ffff:10.0.0.1"):
        body, headers = standard(secret, ORDER)
        response = post(client, body, headers, environ_base={"REMOTE_ADDR": address})
        assert response.status_code == 202, address
    for address in ("192.0.2.8", "2001:db9::1", "garbage", ""):
        body, headers = standard(secret, ORDER)
        refused(post(client, body, headers, environ_base={"REMOTE_ADDR": address}), 403)
    assert events() == 4


def test_allow_list_behind_one_trusted_proxy(app_config):
    from tests.conftest import _app_on_clean_database

    app_config["TRUSTED_PROXIES"] = 1
    for app in _app_on_clean_database(app_config):
        client = app.test_client()
        secret = make_integration(webhook_allowed_ips="10.0.0.0/8")
        body, headers = standard(secret, ORDER)
        forwarded = dict(headers, **{"X-Forwarded-For": "192.0.2.1, 10.1.2.3"})
        assert post(client, body, forwarded).status_code == 202  # the proxy saw 10.1.2.3
        body, headers = standard(secret, ORDER)
        forwarded = dict(headers, **{"X-Forwarded-For": "10.1.2.3, 192.0.2.1"})
        refused(post(client, body, forwarded), 403, "ip_not_allowed")
        body, headers = standard(secret, ORDER)
        forwarded = dict(headers, **{"X-Forwarded-For": "not-an-ip"})
        refused(post(client, body, forwarded), 403, "ip_not_allowed")


def test_body_over_the_limit_413(app, client):
    secret = make_integration(webhook_max_bytes=100)
    body, headers = standard(secret, {**ORDER, "pad": "x" * 200})
    error = refused(post(client, body, headers), 413, "too_large")
    assert "at most 100" in error["message"]
    body, headers = standard(secret, ORDER)
    assert post(client, body, headers).status_code == 202
    assert events() == 1


def test_the_default_limit_is_one_mib(app, client):
    secret = make_integration()
    big = {**ORDER, "pad": "x" * (1024 * 1024)}
    body, headers = standard(secret, big)
    refused(post(client, body, headers), 413, "too_large")
    fits = {**ORDER, "pad": "x" * (1024 * 1024 - 200)}
    body, headers = standard(secret, fits)
    assert len(body) <= 1024 * 1024
    assert post(client, body, headers).status_code == 202


def test_checks_run_in_order(app, client):
    """IP before size before timestamp before signature before the body's content."""
    secret = make_integration(webhook_allowed_ips="10.0.0.0/8", webhook_max_bytes=50)
    body = b"not json" * 20
    bad = {"webhook-id": "m", "webhook-timestamp": "0", "webhook-signature": "v1,AAAA"}
    refused(post(client, body, bad), 403, "ip_not_allowed")
    remote = {"environ_base": {"REMOTE_ADDR": "10.0.0.1"}}
    refused(post(client, body, bad, **remote), 413)
    error = refused(post(client, body[:40], bad, **remote), 401)
    assert "too old" in error["message"]
    bad["webhook-timestamp"] = str(int(time.time()))
    assert "no webhook-signature matches" in refused(post(client, body[:40], bad, **remote),
                                                     401)["message"]
    raw, headers = standard(secret, body[:40])
    assert refused(post(client, raw, headers, **remote), 422)["details"][0]["path"] == "body"


@pytest.mark.parametrize(("change", "words"), [
    ({"webhook-timestamp": None}, "missing webhook-timestamp"),
    ({"webhook-timestamp": "yesterday"}, "digits only"),
    ({"webhook-timestamp": "9" * 40}, "digits only"),
    ({"webhook-timestamp": "99999999999"}, "in the future"),
    ({"webhook-timestamp": "-1"}, "digits only"),
    ({"webhook-timestamp": "1614265330"}, "too old"),
    ({"webhook-signature": None}, "missing webhook-signature"),
    ({"webhook-signature": "v1,"}, "no v1,<base64>"),
    ({"webhook-signature": "v1,AAAA"}, "no webhook-signature matches"),
    ({"webhook-signature": "v1," + "A" * 100_000}, "longer than"),
    ({"webhook-signature": "\u00ff\u00fe garbage"}, "no v1"),
    ({"webhook-id": None}, "missing webhook-id"),
    ({"webhook-id": "has space"}, "printable ASCII"),
])
def test_timestamp_and_signature_401(app, client, change, words):
    secret = make_integration()
    body, headers = standard(secret, ORDER)
    for name, value in change.items():
        if value is None:
            headers.pop(name)
        else:
            headers[name] = value
    error = refused(post(client, body, headers), 401, "bad_signature")
    assert words in error["message"]
    assert events() == 0
    assert deliveries()[-1][:2] == ("refused", 401)


def test_tampered_body_id_and_timestamp_401(app, client):
    secret = make_integration()
    body, headers = standard(secret, ORDER)
    refused(post(client, body.replace(b"12.5", b"99.5"), headers), 401)
    refused(post(client, body, dict(headers, **{"webhook-id": "msg_other"})), 401)
    stamp = str(int(headers["webhook-timestamp"]) - 1)
    refused(post(client, body, dict(headers, **{"webhook-timestamp": stamp})), 401)
    assert events() == 0


def test_five_minute_tolerance_both_ways(app, client):
    secret = make_integration()
    now = int(time.time())
    for offset in (-290, 290):
        body, headers = standard(secret, {**ORDER, "id": f"K{offset}"}, timestamp=now + offset)
        assert post(client, body, headers).status_code == 202
    for offset in (-310, 310):
        body, headers = standard(secret, ORDER, timestamp=now + offset)
        refused(post(client, body, headers), 401)
    assert events() == 2


@pytest.mark.parametrize(("body", "path"), [
    (b"[1, 2]", "body"), (b'"text"', "body"), (b"{broken", "body"), (b"", "body"),
    (b'{"id": NaN}', "body"), (b'{"id": "a\\u0000b"}', "id"), (b"\xff\xfe", "body"),
    (b"[" * 5000 + b"]" * 5000, "body"), (b'{"a": 1, "a": 2}', "body"),
])
def test_not_a_json_object_422_naming_body(app, client, body, path):
    secret = make_integration()
    raw, headers = standard(secret, body)
    error = refused(post(client, raw, headers), 422, "invalid_body")
    assert error["details"][0]["path"] == path
    assert events() == 0


@pytest.mark.parametrize(("payload", "problem"), [
    ({"type": "order.paid"}, "is missing"),
    ({"id": None}, "is missing"),
    ({"id": ""}, "is missing"),
    ({"id": True}, "must be a string or a number"),
    ({"id": {"nested": 1}}, "must be a string or a number"),
    ({"id": ["a"]}, "must be a string or a number"),
    ({"id": "k" * 201}, "is longer than 200 characters"),
])
def test_no_record_key_422_naming_the_path(app, client, payload, problem):
    secret = make_integration()
    raw, headers = standard(secret, payload)
    error = refused(post(client, raw, headers), 422, "no_record_key")
    assert error["details"] == [{"path": "id", "message": problem}]
    assert events() == 0


def test_record_key_and_event_type_paths(app, client):
    secret = make_integration(record_key_path="data.order.number", event_type_path="meta.kind")
    raw, headers = standard(secret, {"meta": {"kind": "order.paid"}, "total": 3,
                                     "data": {"order": {"number": 4711}}})
    event = db.session.get(Event, post(client, raw, headers).get_json()["event_id"])
    assert (event.record_key, event.type) == ("4711", "order.paid")
    raw, headers = standard(secret, {"meta": {}, "data": {"order": {}}})
    error = refused(post(client, raw, headers), 422)
    assert error["details"][0]["path"] == "data.order.number"


def test_rotation_keeps_the_previous_secret_for_the_grace_period(app, client):
    from wfapp.services.integrations import update_integration

    old = make_integration()
    new = signing.generate_secret()
    update_integration("HOOKS", {"webhook_secret": new})
    for secret in (old, new):
        body, headers = standard(secret, ORDER)
        assert post(client, body, headers).status_code == 202
    # Sender-side rotation: both signatures in one header.
    body, headers = standard(new, ORDER)
    other = signing.sign_standard(signing.generate_secret(), headers["webhook-id"],
                                  headers["webhook-timestamp"], body)
    headers["webhook-signature"] = f"{other} {headers['webhook-signature']}"
    assert post(client, body, headers).status_code == 202
    # After the grace period the old one no longer works.
    row = db.session.scalars(select(IntegrationSecret)).one()
    row.rotated_at = row.rotated_at - timedelta(hours=25)
    db.session.commit()
    # A change made behind the services' back bumps no config_version: this process's copy
    # of the integration does not notice it; drop the copies (the grace period itself is
    # counted per request, see test_webhook_cache.py for changes made through the services).
    from wfapp.services import config_cache

    config_cache.invalidate()
    body, headers = standard(old, ORDER)
    refused(post(client, body, headers), 401)
    update_integration("HOOKS", {"webhook_secret_grace_hours": 0})
    body, headers = standard(new, ORDER)
    assert post(client, body, headers).status_code == 202


def test_github_style(app, client):
    secret = "github-shared-secret"
    make_integration(secret=secret, **GITHUB)
    payload = {"action": "opened", "pull_request": {"number": 42, "title": "Fix"}}
    body, headers = github(secret, payload, delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958")
    response = post(client, body, headers)
    assert response.status_code == 202
    event = db.session.get(Event, response.get_json()["event_id"])
    assert (event.record_key, event.type) == ("42", "opened")
    assert event.dedupe_key == "wh:72d3162e-cc78-11e3-81ab-4c9367dc0958"
    assert post(client, body, headers).get_json() == {"duplicate": True}
    refused(post(client, body, dict(headers, **{"X-Hub-Signature-256": "sha256=00"})), 401)
    refused(post(client, body, dict(headers, **{"X-Hub-Signature-256":
                                                headers["X-Hub-Signature-256"][7:]})), 401)
    missing = {k: v for k, v in headers.items() if k != "X-GitHub-Delivery"}
    error = refused(post(client, body, missing), 422, "no_dedupe_key")
    assert error["details"][0]["path"] == "headers.X-GitHub-Delivery"
    assert events() == 1


def test_shopify_style(app, client):
    secret = "shpss_0123456789abcdef"
    make_integration(secret=secret, **SHOPIFY)
    payload = {"id": 820982911946154508, "topic": "orders/paid", "total_price": "10.00"}
    body, headers = shopify(secret, payload, webhook_id="b54557e4-bdd9-4b37-8a5f-bf7d70bcd043")
    response = post(client, body, headers)
    assert response.status_code == 202
    event = db.session.get(Event, response.get_json()["event_id"])
    assert (event.record_key, event.type) == ("820982911946154508", "orders/paid")
    assert post(client, body, headers).status_code == 200
    tampered = body.replace(b"10.00", b"0.01")
    refused(post(client, tampered, headers), 401)
    assert events() == 1


def test_hmac_with_timestamp_header_and_body_hash_dedupe(app, client):
    secret = "slack-like"
    make_integration(secret=secret, webhook_signature_scheme="hmac",
                     webhook_hmac_header="X-Signature", webhook_hmac_prefix="v0=",
                     webhook_hmac_timestamp_header="X-Timestamp",
                     webhook_hmac_signed_content="v0:{timestamp}:{body}",
                     webhook_hmac_algorithm="sha512", webhook_hmac_tolerance_seconds=60)
    now = str(int(time.time()))
    body = json.dumps(ORDER).encode()
    sign = signing.sign_hmac(secret, f"v0:{now}:".encode() + body, algorithm="sha512",
                             prefix="v0=")
    headers = {"X-Signature": sign, "X-Timestamp": now}
    assert post(client, body, headers).status_code == 202
    assert post(client, body, headers).status_code == 200  # same body, same hash
    stale = str(int(time.time()) - 120)
    assert "too old" in refused(post(client, body, dict(headers, **{"X-Timestamp": stale})),
                                401)["message"]
    refused(post(client, body, {"X-Signature": sign}), 401)
    assert events() == 1


def test_hmac_dedupe_from_a_payload_path(app, client):
    secret = "s3cret"
    make_integration(secret=secret, webhook_signature_scheme="hmac",
                     webhook_hmac_header="X-Sig", webhook_dedupe_path="delivery.id")
    for n, delivery in enumerate(("d-1", "d-2", "d-1")):
        body = json.dumps({**ORDER, "n": n, "delivery": {"id": delivery}}).encode()
        response = post(client, body, {"X-Sig": signing.sign_hmac(secret, body)})
        assert response.status_code == (200 if n == 2 else 202)
    body = json.dumps(ORDER).encode()
    error = refused(post(client, body, {"X-Sig": signing.sign_hmac(secret, body)}), 422)
    assert error["details"][0]["path"] == "delivery.id"


def test_refusals_and_duplicates_are_in_the_delivery_log(app, client):
    secret = make_integration()
    body, headers = standard(secret, ORDER)
    post(client, body, headers)
    post(client, body, headers)
    post(client, body, dict(headers, **{"webhook-signature": "v1,AAAA"}))
    log = deliveries()
    assert [row[:2] for row in log] == [("duplicate", 200), ("refused", 401)]
    assert "no webhook-signature matches" in log[1][2]
    row = db.session.scalars(select(Delivery).order_by(Delivery.id.desc())).first()
    assert row.remote_addr == "127.0.0.1" and row.channel == "webhook"
    assert row.detail == {"key": headers["webhook-id"]}


def test_database_failure_while_storing_answers_503(app, client):
    secret = make_integration()
    dialect = db.engine.dialect.name
    if dialect == "postgresql":
        statements = [
            "CREATE FUNCTION wh_test_fail() RETURNS trigger AS $$ BEGIN "
            "RAISE EXCEPTION 'disk full'; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER wh_test_fail BEFORE INSERT ON event FOR EACH ROW "
            "EXECUTE FUNCTION wh_test_fail()"]
        cleanup = ["DROP TRIGGER wh_test_fail ON event", "DROP FUNCTION wh_test_fail()"]
    else:
        statements = ["CREATE TRIGGER wh_test_fail BEFORE INSERT ON event BEGIN "
                      "SELECT RAISE(ABORT, 'disk full'); END"]
        cleanup = ["DROP TRIGGER wh_test_fail"]
    with db.engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))
    try:
        body, headers = standard(secret, ORDER)
        response = post(client, body, headers)
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "30"
        assert response.get_json()["error"]["code"] == "unavailable"
    finally:
        with db.engine.begin() as conn:
            for statement in cleanup:
                conn.execute(text(statement))
    assert events() == 0
    assert post(client, body, headers).status_code == 202  # the sender's retry


def test_hooks_need_no_login_and_no_csrf_token(app_config):
    from tests.conftest import _app_on_clean_database

    app_config["WTF_CSRF_ENABLED"] = True
    for app in _app_on_clean_database(app_config):
        secret = make_integration()
        body, headers = standard(secret, ORDER)
        assert post(app.test_client(), body, headers).status_code == 202
        # The card's Generate new secret keeps its CSRF check.
        assert app.test_client().post("/integrations/HOOKS/webhook-secret").status_code in (
            302, 400)


def test_other_methods_are_not_accepted(app, client):
    make_integration()
    assert client.get("/hooks/HOOKS").status_code == 405


def test_why_not_names_the_webhook_field_that_failed(app, client, auth):
    from wfapp.services.instances import why_not

    secret = make_integration()
    for body in ({"type": "order.created", "id": "W-1", "total": 5},):
        raw, headers = standard(secret, body)
        assert post(client, raw, headers).status_code == 202
    drain(app)
    instance = db.session.scalar(select(Instance).where(Instance.record_key == "W-1"))
    _, verdicts = why_not(instance)
    reasons = {v.code: v.reason for v in verdicts}
    assert reasons["PAY"].startswith("Event Filter: the event type 'order.created'")
    assert reasons["CANCEL"] == "JSON Path: the payload has no data.status"
    _, verdicts = why_not(instance, {"data": {"status": "open"}}, "on_webhook", "order.x")
    assert {v.code: v.reason for v in verdicts}["CANCEL"] == (
        "Expected Value: the payload's data.status is 'open'; this transition waits for "
        "'cancelled'")
    _, verdicts = why_not(instance, {"total": 0}, "on_webhook", "order.paid")
    assert "event.total" in {v.code: v.reason for v in verdicts}["PAY"]  # then the conditions
    auth.login("viewer")
    page = client.get(f"/instances/{instance.id}").get_data(as_text=True)
    assert "Event Filter: the event type" in page.replace("&#39;", "'")
