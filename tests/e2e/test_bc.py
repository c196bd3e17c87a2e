"""Business Central end to end: the app served by `flask run` (embedded queue), the BC stand-in
as a real HTTP server, everything over HTTP — register, notify, renew, re-create, unregister."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import requests
from sqlalchemy import func, select

from tests.bc_helpers import CLIENT_STATE, setup_in_app, wait_for
from tests.bc_standin import StandIn, now
from tests.e2e.conftest import login
from wfapp.extensions import db
from wfapp.models import Instance

API = "/api/v1/integrations/BC_SALES/bc/subscription"


@pytest.fixture
def standin() -> Iterator[StandIn]:
    """The Business Central stand-in on a free port."""
    server = StandIn()
    server.start()
    yield server
    server.stop()


class Api:
    """The JSON API of the live server, as one role."""

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        self.base, self.headers = base, headers

    def __call__(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(method, self.base + path, headers=self.headers, timeout=30,
                                **kwargs)

    def status(self) -> dict[str, Any]:
        return self("GET", API).json()

    def wait(self, check: Any, what: str, timeout: float = 30) -> dict[str, Any]:
        return wait_for(lambda: (s := self.status()) and check(s) and s, timeout=timeout,
                        what=what)

    def states(self) -> dict[str, str]:
        items = self("GET", "/api/v1/instances?integration=BC_SALES&limit=500").json()["items"]
        return {i["record_key"]: i["state"] for i in items}


@pytest.fixture
def api(live_server: str, tokens: dict[str, dict[str, str]]) -> Api:
    return Api(live_server, tokens["author"])


def _register(api: Api) -> dict[str, Any]:
    queued = api("POST", API)
    assert queued.status_code == 202, queued.text
    assert queued.json()["status"] == "registering"
    return api.wait(lambda s: s["status"] != "registering", "the registration")


def test_register_notify_renew_recreate_unregister(api, standin, live_server):
    setup_in_app(**standin.settings())
    active = _register(api)
    assert active["status"] == "active", active
    sub_id = active["subscription"]["id"]
    sub = standin.subscriptions[sub_id]
    assert sub["notificationUrl"] == f"{live_server}/bc/BC_SALES/notifications"
    assert sub["clientState"] == CLIENT_STATE
    assert sub["resource"] == f"/api/v2.0/companies({standin.company})/salesOrders"
    assert active["subscription"]["expiration_date_time"] is not None
    assert standin.handshakes[-1]["error"] is None and active["last_handshake_at"]
    assert api("POST", API).status_code == 409  # already registered

    # Each change type fires its transition; the answers are what BC wants to see.
    assert standin.notify(sub_id, [("created", "SO-1"), ("created", "SO-2")]).status == 202
    wait_for(lambda: api.states() == {"SO-1": "OPEN", "SO-2": "OPEN"}, what="OPEN")
    assert standin.notify(sub_id, [("updated", "SO-1"), ("deleted", "SO-2")]).status == 202
    wait_for(lambda: api.states() == {"SO-1": "CHANGED", "SO-2": "DELETED"}, what="moves")
    # A wrong clientState is dropped and counted; a repeat is stored once; BC keeps the sub.
    wrong = standin.notify(sub_id, [("deleted", "SO-1")], client_state="forged")
    assert wrong.status == 202 and not wrong.deleted_subscription
    again = standin.send(sub["notificationUrl"], standin.deliveries[0].items)
    assert again.status == 202 and '"duplicates":2' in again.body.replace(" ", "")
    status = api.status()
    assert status["dropped_client_state"] == 1 and status["last_notification_at"]
    assert api.states()["SO-1"] == "CHANGED"

    # Renew now: PATCH with If-Match of the etag BC gave us, and a handshake again.
    etag = sub["@odata.etag"]
    handshakes = len(standin.handshakes)
    assert api("POST", API + "/renew").status_code == 202
    renewed = api.wait(lambda s: s["status"] == "active" and s["subscription"]["renewals"] == 1,
                       "the renewal")
    assert standin.requests_to("PATCH")[-1]["if_match"] == etag
    assert renewed["subscription"]["etag"] == standin.subscriptions[sub_id]["@odata.etag"] != etag
    assert len(standin.handshakes) == handshakes + 1

    # The scheduler renews a subscription that expires soon, without being asked.
    standin.lifetime = timedelta(minutes=5)
    assert api("POST", API + "/renew").status_code == 202
    api.wait(lambda s: s["subscription"] and s["subscription"]["renewals"] == 2, "renewal 2")
    etag = standin.subscriptions[sub_id]["@odata.etag"]
    api.wait(lambda s: s["subscription"]["renewals"] >= 3, "the scheduled renewal", timeout=40)
    assert etag in [r["if_match"] for r in standin.requests_to("PATCH")]

    # BC lost the subscription: the next renewal gets 404 and registers a new one.
    standin.forget(sub_id)
    recreated = api.wait(lambda s: s["subscription"] and s["subscription"]["id"] != sub_id
                         and s["status"] == "active", "the re-creation", timeout=40)
    assert f"no longer had subscription {sub_id}" in recreated["last_ok"]["message"]
    new_id = recreated["subscription"]["id"]
    assert list(standin.subscriptions) == [new_id]
    assert standin.notify(new_id, [("created", "SO-3")]).status == 202
    wait_for(lambda: api.states().get("SO-3") == "OPEN", what="SO-3")

    # Unregister deletes it in BC, with If-Match.
    assert api("DELETE", API).status_code == 202
    gone = api.wait(lambda s: s["status"] == "not_registered", "the unregistration")
    assert gone["last_ok"]["message"] == f"unregistered subscription {new_id}"
    assert standin.subscriptions == {}
    assert standin.requests_to("DELETE")[-1]["if_match"] is not None


def test_collection_is_expanded_page_by_page(api, standin):
    setup_in_app(**standin.settings())
    standin.page_size = 7
    standin.add_records("salesOrders", 20, modified=now() - timedelta(hours=2))
    fresh = standin.add_records("salesOrders", 25, modified=now() - timedelta(minutes=30))
    sub_id = _register(api)["subscription"]["id"]
    sent = standin.notify(sub_id, [("collection", None)], since=now() - timedelta(hours=1))
    assert sent.status == 202
    done = api.wait(lambda s: s["expansion"] and s["expansion"].get("finished_at"),
                    "the expansion")
    assert done["expansion"]["error"] is None
    assert (done["expansion"]["pages"], done["expansion"]["records"],
            done["expansion"]["stored"]) == (4, 25, 25)
    reads = standin.requests_to("GET", "/salesOrders")
    assert len(reads) == 4
    expected = {r["id"]: "CHANGED" for r in fresh} | {"collection:salesOrders": "BULK"}
    wait_for(lambda: api.states() == expected, what="one instance per changed record")
    events = api("GET", "/api/v1/events?integration=BC_SALES&limit=100").json()["items"]
    record = next(e for e in events if e["record_key"] == fresh[0]["id"])
    assert record["type"] == "updated"
    # The same collection again: read again, nothing stored twice.
    standin.send(standin.subscriptions[sub_id]["notificationUrl"],
                 [dict(sent.items[0], lastModifiedDateTime="2099-01-01T00:00:00Z")])
    again = api.wait(lambda s: s["expansion"]["started_at"] != done["expansion"]["started_at"]
                     and s["expansion"].get("finished_at"), "the second expansion")
    assert (again["expansion"]["stored"], again["expansion"]["duplicates"]) == (0, 25)


def test_a_thousand_item_notification_over_http(api, standin):
    setup_in_app(**standin.settings())
    sub_id = _register(api)["subscription"]["id"]
    sent = standin.notify(sub_id, [("created", f"R{i:04d}") for i in range(1000)])
    assert sent.status == 202 and '"stored":1000' in sent.body.replace(" ", "")
    wait_for(lambda: db.session.scalar(select(func.count()).select_from(Instance).where(
        Instance.state == "OPEN")) == 1000, what="1,000 instances in OPEN", timeout=60)
    status = api.status()
    assert status["last_notification"]["items"] == 1000


def test_registration_failures_are_shown_not_hidden(api, standin, live_server, tokens):
    # Settings missing: refused at once, naming them.
    setup_in_app(bc_tenant=standin.tenant)
    missing = api("POST", API)
    assert missing.status_code == 422
    paths = {d["path"] for d in missing.json()["error"]["details"]}
    assert {"bc_company", "bc_resource", "bc_client_id", "bc_client_secret"} <= paths
    assert api("GET", "/api/v1/integrations/NOPE/bc/subscription").status_code == 404
    # A wrong client secret: the job records the token endpoint's refusal.
    api("PATCH", "/api/v1/integrations/BC_SALES",
        json={**standin.settings(), "bc_client_secret": "wrong"})
    failed = _register(api)
    assert failed["status"] == "not_registered" and failed["health"] == "error"
    assert "token request refused: 401: AADSTS7000215" in failed["last_error"]["message"]
    # A notification URL whose handshake fails: BC refuses the subscription.
    api("PATCH", "/api/v1/integrations/BC_SALES", json={
        "bc_client_secret": standin.client_secret,
        "bc_notification_url": f"{live_server}/bc/NOPE/notifications"})
    failed = _register(api)
    assert "the handshake failed" in failed["last_error"]["message"]
    assert standin.subscriptions == {}
    # Viewers read the status but change nothing; no token, no answer.
    viewer = Api(live_server, tokens["viewer"])
    assert viewer("GET", API).status_code == 200
    refused = viewer("POST", API)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert Api(live_server, {})("DELETE", API).status_code == 401


@pytest.mark.browser
def test_card_panel_register_and_unregister_in_a_browser(page, standin):
    setup_in_app(**standin.settings())
    login(page, "author")
    page.goto("/integrations/BC_SALES")
    panel = page.locator("#bc-panel")
    assert "Not registered" in panel.inner_text()
    page.get_by_role("button", name="Register subscription").click()
    # The panel follows the job and reloads when Business Central has answered.
    page.locator('#bc-health[data-health="ok"]').wait_for(timeout=30_000)
    sub_id = next(iter(standin.subscriptions))
    assert sub_id in page.locator("#bc-subscription-id").inner_text()
    assert "expires in 2 d 23 h" in page.locator("#bc-expiration").inner_text()
    assert page.locator("#bc-last-handshake").inner_text().endswith("ago")
    standin.notify(sub_id, [("created", "SO-9")])
    standin.notify(sub_id, [("created", "SO-8")], client_state="forged")
    page.reload()
    assert page.locator("#bc-dropped-client-state").inner_text() == "1"
    assert "SO-9" in page.locator("#bc-deliveries").inner_text()
    page.get_by_role("button", name="Unregister").click()  # the confirm dialog is accepted
    page.locator('#bc-health[data-health="none"]').wait_for(timeout=30_000)
    assert standin.subscriptions == {}
    assert "unregistered subscription" in page.locator("#bc-last-ok").inner_text()
