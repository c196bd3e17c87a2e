"""On BC Event without a live server: resource parsing, matching, settings, the card panel in
each state, the subscription API's refusals, CSRF, the queue being away, collection expansion
and the BC client against the stand-in (in this process)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import requests
from sqlalchemy import select

from tests.bc_helpers import item, setup_in_app
from tests.bc_standin import StandIn, now
from wfapp.extensions import db
from wfapp.models import Event, Integration
from wfapp.plugin_api import find_integration, state_get, state_put, utcnow
from wfapp.queue import get_queue
from wfapp.services.registry import get_registry

API = "/api/v1/integrations/BC_SALES/bc/subscription"


def bc_modules() -> tuple[Any, Any, Any, Any]:
    """The plugin's modules as the app loaded them."""
    from wfapp.builtin_plugins import _bc_client, _bc_expand, _bc_resource, _bc_subscriptions

    return _bc_resource, _bc_client, _bc_subscriptions, _bc_expand


@pytest.fixture
def standin() -> Iterator[StandIn]:
    server = StandIn()
    server.start()
    yield server
    server.stop()


# --- pure parts -----------------------------------------------------------------------------


@pytest.mark.parametrize("resource, key", [
    ("api/v2.0/companies(c1)/customers(130bbd17-dbb9-4790-9b12-2b0e9c9d22c3)",
     "130bbd17-dbb9-4790-9b12-2b0e9c9d22c3"),
    ("/api/v2.0/companies(c1)/items('ITEM-1')", "ITEM-1"),
    ('api/v2.0/companies(c1)/items("X")', "X"),
    ("api/v2.0/companies(c1)/items(%27A%20B%27)", "A B"),
    ("api/v2.0/companies(c1)/salesOrders(2)/salesOrderLines(7)", "7"),
    ("api/v2.0/companies(c1)/items", "c1"),  # the last parentheses, whatever they hold
    ("api/v2.0/companyInformation", None), ("items()", None), ("items('')", None),
])
def test_record_id(resource, key):
    assert bc_modules()[0].record_id(resource) == key


def test_entity_set_and_collection_key():
    resource = bc_modules()[0]
    collection = "/api/v2.0/companies(c)/salesInvoices?$filter=lastModifiedDateTime%20gt%202018"
    assert resource.entity_set(collection) == "salesInvoices"
    assert resource.collection_key(collection) == "collection:salesInvoices"
    assert resource.entity_set("api/v2.0/companies(1)/salesOrders(2)") == "salesOrders"


@pytest.mark.parametrize("path, ok", [
    ("/api/v2.0/companies(c)/items?$filter=lastModifiedDateTime gt 2020-01-01Z", True),
    ("api/v2.0/companies(c)/items", True),
    ("https://evil.example/api/v2.0/items", False), ("api/../../admin", False),
    ("//evil.example/api", False), ("v2.0/items", False), ("api/v2.0/it ems", False),
    ("api/v2.0/items\\x", False), ("api/v2.0/items\n", True), ("api/v2.0/a\x01b", False),
])
def test_only_api_paths_are_read_for_a_collection(path, ok):
    assert (bc_modules()[0].api_relative(path) is not None) is ok


def test_matching_and_why_not(app):
    bc = get_registry().trigger_types["on_bc_event"]
    config = {"resource": "salesOrders", "change_types": ["created"]}
    assert bc.matches(config, {"payload": item("1", "created")})
    assert bc.matches({"resource": "SALESORDERS"}, {"payload": item(None, "collection")})
    assert not bc.matches(config, {"payload": item("1", "deleted")})
    assert "change type 'deleted' is not one of created" in bc.explain_mismatch(
        config, {"payload": item("1", "deleted")})
    assert "is about customers" in bc.explain_mismatch(
        config, {"payload": item("1", "created", entity="customers")})
    assert bc.explain_mismatch(config, {"payload": {}}).startswith("the notification is about")


@pytest.mark.parametrize("field, value", [
    ("bc_company", "not-a-guid"), ("bc_api_base_url", "ftp://bc.example"),
    ("bc_token_url", "login.example/token"), ("bc_notification_url", "https://x/y?token=1"),
    ("bc_tenant", "a/b"), ("bc_environment", "prod uction"), ("bc_resource", "sales orders"),
    ("bc_api_path", "v2.0"), ("bc_client_id", 5),
])
def test_bad_settings_are_refused_naming_the_field(client, tokens, field, value):
    setup_in_app()
    response = client.patch("/api/v1/integrations/BC_SALES", headers=tokens["author"],
                            json={field: value, "description": "changed"})
    assert response.status_code == 422
    assert [d["path"] for d in response.get_json()["error"]["details"]] == [field]
    db.session.expire_all()
    assert db.session.scalar(select(Integration.description)) != "changed"


def test_good_settings_are_saved(client, tokens):
    setup_in_app()
    body = {"bc_company": "F64EBA74-DACD-4854-A584-1834F68CFC3A", "bc_tenant": "contoso.com",
            "bc_api_path": "api/contoso/app/v1.0", "bc_resource": "salesOrders",
            "bc_notification_url": "https://wfapp.example/bc/BC_SALES/notifications"}
    response = client.patch("/api/v1/integrations/BC_SALES", headers=tokens["author"], json=body)
    assert response.status_code == 200, response.get_json()
    assert {k: response.get_json()[k] for k in body} == body


# --- the subscription API and the card ------------------------------------------------------


def test_register_is_refused_until_it_can_work(client, tokens, standin):
    setup_in_app(bc_tenant="t")
    missing = client.post(API, headers=tokens["author"])
    assert missing.status_code == 422
    assert "bc_company" in {d["path"] for d in missing.get_json()["error"]["details"]}
    assert client.post(API, headers=tokens["viewer"]).status_code == 403
    assert client.post("/api/v1/integrations/NOPE/bc/subscription",
                       headers=tokens["author"]).status_code == 404
    assert client.post(API + "/renew", headers=tokens["author"]).status_code == 409
    assert client.delete(API, headers=tokens["author"]).status_code == 409
    client.patch("/api/v1/integrations/BC_SALES", headers=tokens["author"],
                 json={**standin.settings(), "enabled": False})
    disabled = client.post(API, headers=tokens["author"])
    assert disabled.status_code == 409 and disabled.get_json()["error"]["code"] == "disabled"
    client.patch("/api/v1/integrations/BC_SALES", headers=tokens["author"], json={"enabled": True})
    queued = client.post(API, headers=tokens["author"])
    assert queued.status_code == 202 and queued.get_json()["status"] == "registering"
    assert queued.get_json()["pending"]["by"] == "author"
    assert [p for p, _ in get_queue().jobs] == [
        "wfapp.builtin_plugins._bc_subscriptions.register_job"]
    busy = client.post(API, headers=tokens["author"])
    assert busy.status_code == 409 and busy.get_json()["error"]["code"] == "busy"


def test_a_client_state_is_generated_when_none_is_set(client, tokens, standin):
    setup_in_app(bc_client_state=None, **standin.settings())
    assert client.post(API, headers=tokens["author"]).status_code == 202
    generated = find_integration("BC_SALES").secret("bc_client_state")
    assert generated and len(generated) >= 40


def test_the_queue_being_away_is_a_503_and_leaves_nothing_pending(app_config, standin):
    from tests.conftest import _app_on_clean_database

    app_config["REDIS_URL"] = "redis://127.0.0.1:1/0"  # nothing listens there
    for app in _app_on_clean_database(app_config):
        from wfapp.services.users import create_token, create_user

        create_user("author", "secret-pass", "author")
        headers = {"Authorization": f"Bearer {create_token('author')}"}
        setup_in_app(**standin.settings())
        response = app.test_client().post(API, headers=headers)
        assert response.status_code == 503
        assert response.get_json()["error"]["code"] == "queue_unavailable"
        assert (state_get(find_integration("BC_SALES"), "bc", "subscription") or {}).get(
            "pending") is None
        # A notification is still stored: the sweep processes it once the queue is back.
        stored = app.test_client().post("/bc/BC_SALES/notifications",
                                        json={"value": [item("A-1")]})
        assert stored.status_code == 202 and stored.get_json()["stored"] == 1


def subscription(**changes: Any) -> None:
    """Store a subscription state for BC_SALES."""
    state = {"id": "sub-1", "etag": 'W/"1"', "expires_at": (utcnow() + timedelta(days=2))
             .isoformat(), "resource": "/api/v2.0/companies(c)/salesOrders", "wanted": True,
             "notification_url": "http://x/bc/BC_SALES/notifications", "renewals": 0}
    state.update(changes)
    state_put(find_integration("BC_SALES"), "bc", "subscription", state)


def panel(client: Any) -> str:
    html = client.get("/integrations/BC_SALES").get_data(as_text=True)
    assert "could not be shown" not in html
    return html[html.index('id="bc-panel"'):]


def test_the_panel_in_each_state(client, auth, standin):
    setup_in_app()
    auth.login("author")
    assert 'id="bc-unused"' in panel(client) and "Register subscription" in panel(client)
    setup = find_integration("BC_SALES")
    subscription()
    html = panel(client)
    assert 'data-health="ok"' in html and "expires in 1 d 23 h" in html
    assert "Renew now" in html and "Unregister" in html and "Register subscription" not in html
    subscription(expires_at=(utcnow() + timedelta(hours=3)).isoformat())
    assert 'data-health="warning"' in panel(client) and "Expires in 2 h 59 min" in panel(client)
    subscription(expires_at=(utcnow() - timedelta(hours=1)).isoformat())
    html = panel(client)
    assert 'data-health="error"' in html and "Expired 1 h 0 min ago" in html
    subscription(pending={"action": "renew", "since": utcnow().isoformat(), "token": "t"})
    html = panel(client)
    assert 'data-bc-phase="renewing"' in html and "Renewal under way" in html
    assert html.count("disabled>") == 2  # Renew now and Unregister wait for it
    subscription(pending={"action": "renew", "token": "t",
                          "since": (utcnow() - timedelta(minutes=10)).isoformat()})
    assert "has not run: is a worker running?" in panel(client)
    subscription(id=None, last_error={"at": utcnow().isoformat(), "action": "re-create",
                                      "message": "401: nope"},
                 retry_at=(utcnow() + timedelta(minutes=2)).isoformat())
    html = panel(client)
    assert "Lost: re-creating it failed: 401: nope" in html and "next attempt after" in html
    state_put(setup, "bc", "subscription", {"last_error": {
        "at": utcnow().isoformat(), "action": "register", "message": "bad secret"}})
    html = panel(client)
    assert "The last register failed: bad secret" in html and "next attempt" not in html
    auth.logout()
    auth.login("viewer")
    assert "Register subscription" not in panel(client)


def test_card_buttons_queue_the_action_and_say_so(client, auth, standin):
    setup_in_app(**standin.settings())
    auth.login("author")
    response = client.post("/bc/BC_SALES/subscription/register", follow_redirects=True)
    html = response.get_data(as_text=True)
    assert "Registration queued" in html and 'data-bc-phase="registering"' in html
    again = client.post("/bc/BC_SALES/subscription/register", follow_redirects=True)
    assert "is already under way" in again.get_data(as_text=True)
    assert client.post("/bc/BC_SALES/subscription/explode").status_code == 404
    assert client.get("/bc/BC_SALES/subscription/status").get_json()["status"] == "registering"
    auth.logout()
    auth.login("operator")
    assert client.post("/bc/BC_SALES/subscription/renew").status_code == 403


def test_csrf_guards_the_card_buttons_but_not_bc_or_the_api(app_config, standin):
    from tests.conftest import _app_on_clean_database

    app_config["WTF_CSRF_ENABLED"] = True
    for app in _app_on_clean_database(app_config):
        from wfapp.services.users import create_token, create_user

        create_user("author", "secret-pass", "author")
        token = create_token("author")
        setup_in_app(**standin.settings())
        client = app.test_client()
        assert client.post("/bc/BC_SALES/notifications",
                           json={"value": [item("A-1")]}).status_code == 202
        assert client.post("/bc/BC_SALES/notifications?validationToken=x").status_code == 200
        api = client.post(API, headers={"Authorization": f"Bearer {token}"})
        assert api.status_code == 202, api.get_data(as_text=True)
        login_page = client.get("/auth/login").get_data(as_text=True)
        csrf = login_page.split('name="csrf_token" type="hidden" value="', 1)[1].split('"')[0]
        client.post("/auth/login", data={"username": "author", "password": "secret-pass",
                                         "csrf_token": csrf})
        refused = client.post("/bc/BC_SALES/subscription/unregister")
        assert refused.status_code == 400  # no CSRF token: nothing queued
        assert [p for p, _ in get_queue().jobs].count(
            "wfapp.builtin_plugins._bc_subscriptions.unregister_job") == 0


# --- the renewal schedule -------------------------------------------------------------------


def test_what_the_scheduler_renews(app):
    due = bc_modules()[2].due
    at = utcnow()
    soon = (at + timedelta(hours=47)).isoformat()
    later = (at + timedelta(hours=49)).isoformat()
    assert due({"wanted": True, "id": "s", "expires_at": soon}, at)
    assert not due({"wanted": True, "id": "s", "expires_at": later}, at)
    assert not due({"wanted": False, "id": "s", "expires_at": soon}, at)
    assert due({"wanted": True, "id": None}, at)  # lost: re-create
    assert not due({"wanted": True, "id": "s", "expires_at": soon,
                    "retry_at": (at + timedelta(minutes=1)).isoformat()}, at)
    assert not due({"wanted": True, "id": "s", "expires_at": soon,
                    "pending": {"since": at.isoformat()}}, at)
    assert due({"wanted": True, "id": "s", "expires_at": soon,
                "pending": {"since": (at - timedelta(minutes=5)).isoformat()}}, at)


def test_renew_due_queues_one_renewal_per_due_subscription(app):
    setup_in_app()
    subscription(expires_at=(utcnow() + timedelta(hours=1)).isoformat())
    assert bc_modules()[2].renew_due() == 1
    assert bc_modules()[2].renew_due() == 0  # pending now
    state = state_get(find_integration("BC_SALES"), "bc", "subscription")
    assert state["pending"]["by"] == "scheduler"
    assert [p for p, _ in get_queue().jobs] == [
        "wfapp.builtin_plugins._bc_subscriptions.renew_job"]


def test_a_superseded_job_does_nothing(app, standin):
    setup_in_app(**standin.settings())
    subscription(pending={"action": "renew", "since": utcnow().isoformat(), "token": "mine"})
    bc_modules()[2].renew_job("BC_SALES", "not-mine")
    assert standin.log == []  # it never called Business Central
    assert state_get(find_integration("BC_SALES"), "bc", "subscription")["pending"]


def test_a_job_against_an_unreachable_bc_records_the_error(app, standin):
    setup_in_app(**{**standin.settings(), "bc_api_base_url": "http://127.0.0.1:1/v2.0"})
    subscription(pending={"action": "renew", "since": utcnow().isoformat(), "token": "t"})
    bc_modules()[2].renew_job("BC_SALES", "t")
    state = state_get(find_integration("BC_SALES"), "bc", "subscription")
    assert state["pending"] is None and state["failures"] == 1
    assert "failed: ConnectionError" in state["last_error"]["message"]
    assert state["id"] == "sub-1"  # kept: the next attempt renews it


# --- collection expansion and the client, against the stand-in ------------------------------


def test_expansion_pages_dedupes_and_refuses_foreign_links(app, standin):
    setup_in_app(**standin.settings())
    standin.page_size = 4
    standin.add_records("salesOrders", 3, modified=now() - timedelta(days=1))
    fresh = standin.add_records("salesOrders", 10)
    standin.records["salesOrders"].append({"id": "", "lastModifiedDateTime":
                                           "2099-01-01T00:00:00Z"})
    expand = bc_modules()[3].expand
    collection = item(None, "collection")
    since = (now() - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    collection["resource"] = (f"api/v2.0/companies({standin.company})/salesOrders?$filter="
                              f"lastModifiedDateTime%20gt%20{since}")
    info = find_integration("BC_SALES")
    outcome = expand(info, collection)
    assert outcome["error"] is None, outcome
    assert (outcome["pages"], outcome["records"], outcome["stored"], outcome["skipped"]) == (
        3, 11, 10, 1)
    stored = db.session.scalars(select(Event).order_by(Event.id)).all()
    assert [e.record_key for e in stored] == [r["id"] for r in fresh]
    assert stored[0].payload["record"] == fresh[0] and stored[0].type == "updated"
    assert stored[0].payload["resource"].endswith(f"/salesOrders({fresh[0]['id']})")
    assert expand(info, collection)["duplicates"] == 10
    standin.next_link_base = "http://evil.example"
    refused = expand(info, collection)
    assert refused["pages"] == 1 and "points away" in refused["error"]
    hostile = dict(collection, resource="https://evil.example/api/v2.0/x")
    assert "not an api/ path" in expand(info, hostile)["error"]


def test_tokens_are_cached_and_wrong_secrets_refused(app, standin):
    _resource, client, _subs, _expand = bc_modules()
    setup_in_app(**standin.settings())
    access, missing = client.access_for(find_integration("BC_SALES"))
    assert missing == []
    client._tokens.clear()
    first = client.token(access)
    assert client.token(access) == first and standin.token_requests == 1
    wrong = access.__class__(**{**access.__dict__, "client_secret": "nope"})
    with pytest.raises(client.BcError, match="AADSTS7000215") as refused:
        client.token(wrong)
    assert refused.value.status == 401
    with pytest.raises(client.BcError) as gone:
        client.get_subscription(access, "unknown")
    assert gone.value.status == 404
    with pytest.raises(client.BcError, match="unusable subscription id"):
        client.get_subscription(access, "x')/../../y")


def test_the_standin_refuses_what_bc_refuses(standin):
    token = requests.post(standin.token_url, data={
        "grant_type": "client_credentials", "client_id": standin.client_id,
        "client_secret": standin.client_secret}).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    subs = f"{standin.api_base_url}/{standin.tenant}/{standin.environment}/api/v2.0/subscriptions"
    resource = f"/api/v2.0/companies({standin.company})/salesOrders"
    assert requests.get(subs).status_code == 401
    # The handshake goes to a URL that does not answer with the token: refused.
    bad = requests.post(subs, headers=auth, json={"notificationUrl": f"{standin.url}/_standin",
                                                  "resource": resource})
    assert bad.status_code == 400 and "handshake failed" in bad.json()["error"]["message"]
    assert standin.subscriptions == {}
    # A subscription made directly (as if BC had one): etags and If-Match.
    standin.subscriptions["s1"] = {"subscriptionId": "s1", "notificationUrl": "http://x",
                                   "resource": resource, "@odata.etag": 'W/"a"',
                                   "expirationDateTime": (now() + timedelta(days=1)).isoformat()}
    one = f"{subs}('s1')"
    assert requests.get(one, headers=auth).json()["@odata.etag"] == 'W/"a"'
    assert requests.patch(one, headers=auth, json={}).status_code == 400  # no If-Match
    assert requests.delete(one, headers={**auth, "If-Match": 'W/"b"'}).status_code == 412
    assert requests.delete(one, headers={**auth, "If-Match": 'W/"a"'}).status_code == 204
    assert requests.get(one, headers=auth).status_code == 404
    standin.subscriptions["s2"] = dict(standin.subscriptions.get("s1", {}), subscriptionId="s2",
                                       resource=resource, **{"@odata.etag": 'W/"c"'},
                                       expirationDateTime=(now() - timedelta(seconds=1))
                                       .isoformat())
    assert requests.get(f"{subs}('s2')", headers=auth).status_code == 404  # expired
    assert requests.get(f"{standin.url}/_standin").json()["subscriptions"] == []


def test_a_silent_bc_cannot_hang_a_job(app, standin):
    import socket
    import time

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # connections complete, nothing is ever answered
    try:
        port = silent.getsockname()[1]
        app.config["BC_HTTP_TIMEOUT"] = 1
        setup_in_app(**{**standin.settings(), "bc_token_url": f"http://127.0.0.1:{port}/token"})
        subscription(pending={"action": "renew", "since": utcnow().isoformat(), "token": "t"})
        started = time.monotonic()
        bc_modules()[2].renew_job("BC_SALES", "t")
        assert time.monotonic() - started < 10
    finally:
        silent.close()
    state = state_get(find_integration("BC_SALES"), "bc", "subscription")
    assert state["last_error"]["message"] == f"POST http://127.0.0.1:{port}/token timed out"


def test_plugin_state_writes_race_safely(app):
    """Many requests noting the same new key at once (a burst of notifications) all succeed."""
    import threading

    from wfapp.plugin_api import state_update

    setup_in_app()
    info = find_integration("BC_SALES")
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def note(n: int) -> None:
        with app.app_context():
            try:
                start.wait()
                for i in range(10):
                    state_put(info, "bc", "race", {"writer": n, "i": i})
            except BaseException as error:  # noqa: BLE001 — collected and asserted below
                errors.append(error)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=note, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert state_get(info, "bc", "race")["i"] == 9
    assert state_update(info, "bc", "race", {"extra": 1}) == {**state_get(info, "bc", "race")}
    assert state_get(info, "bc", "race")["extra"] == 1
