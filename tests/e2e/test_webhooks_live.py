"""Webhooks over real HTTP: `flask --app wfapp run` with the embedded queue, signed requests in
three styles, the card's curl example run by bash, chunked and hostile requests."""

from __future__ import annotations

import http.client
import json
import subprocess
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from sqlalchemy import select

from tests.test_webhook_card import element_text
from tests.webhooks import GITHUB, SHOPIFY, github, make_integration, shopify, standard
from wfapp.extensions import db
from wfapp.models import Event, Instance


def wait_for_state(record_key: str, state: str, timeout: float = 20) -> Instance:
    """Poll the database until the instance of `record_key` is in `state`."""
    deadline = time.monotonic() + timeout
    found = None
    while time.monotonic() < deadline:
        db.session.expire_all()
        found = db.session.scalar(select(Instance).where(Instance.record_key == record_key))
        if found is not None and found.state == state:
            return found
        db.session.rollback()
        time.sleep(0.2)
    pytest.fail(f"{record_key} is {found.state if found else 'missing'}, expected {state}")


def test_signed_requests_in_three_styles_move_instances(live_server):
    std = make_integration("STD")
    gh = make_integration("GH", secret="gh-secret", **GITHUB)
    shop = make_integration("SHOP", secret="shop-secret", **SHOPIFY)
    sends = [
        ("STD", *standard(std, {"type": "order.created", "id": "S-1"})),
        ("STD", *standard(std, {"type": "order.paid", "id": "S-1", "total": 5})),
        ("GH", *github(gh, {"action": "order.paid", "pull_request": {"number": 77},
                            "total": 1})),
        ("SHOP", *shopify(shop, {"topic": "order.updated", "id": 555,
                                 "data": {"status": "cancelled"}})),
    ]
    with requests.Session() as session:
        for code, body, headers in sends:
            response = session.post(f"{live_server}/hooks/{code}", data=body, headers=headers,
                                    timeout=10)
            assert response.status_code == 202, response.text
            assert isinstance(response.json()["event_id"], int)
        body, headers = sends[1][1:]
        again = session.post(f"{live_server}/hooks/STD", data=body, headers=headers, timeout=10)
        assert (again.status_code, again.json()) == (200, {"duplicate": True})
    assert wait_for_state("S-1", "PAID").vars == {"paid": 5}
    wait_for_state("77", "PAID")
    wait_for_state("555", "CANCELLED")


def _run_bash(script: str) -> dict[str, Any]:
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_the_cards_curl_example_works_in_bash(live_server, app, client, auth):
    """Generate a secret on the card, paste the example it shows into bash: accepted."""
    make_integration("CURL")
    app.config["EXTERNAL_URL"] = live_server
    auth.login("author")
    page = client.post("/integrations/CURL/webhook-secret").get_data(as_text=True)
    snippet = element_text(page, "webhook-curl")
    assert element_text(page, "new-webhook-secret") in snippet
    answer = _run_bash(snippet)
    event = db.session.get(Event, answer["event_id"])
    assert (event.record_key, event.type) == ("EX-1001", "example.event")
    wait_for_state("EX-1001", "NEW")
    # Without the new secret on the page, the example asks for it; filled in, it works too.
    card = client.get("/integrations/CURL").get_data(as_text=True)
    placeholder = element_text(card, "webhook-curl")
    assert "<paste the webhook secret here>" in placeholder
    secret = element_text(page, "new-webhook-secret")
    filled = placeholder.replace("<paste the webhook secret here>", secret)
    assert "event_id" in _run_bash(filled)


@pytest.mark.parametrize("settings", [
    GITHUB,
    SHOPIFY,
    {"webhook_signature_scheme": "hmac", "webhook_hmac_header": "X-Signature",
     "webhook_hmac_prefix": "v0=", "webhook_hmac_algorithm": "sha512",
     "webhook_hmac_encoding": "base64", "webhook_hmac_timestamp_header": "X-Request-Timestamp",
     "webhook_hmac_signed_content": "v0:{timestamp}:{body}", "webhook_dedupe_path": "meta.id",
     "record_key_path": "order.number"},
], ids=["github", "shopify", "timestamped-sha512"])
def test_the_curl_example_of_the_generic_scheme_works_in_bash(live_server, app, client, auth,
                                                              settings):
    secret = "it's a \"shared\" $ecret"
    make_integration("HM", secret=secret, **settings)
    app.config["EXTERNAL_URL"] = live_server
    auth.login("viewer")
    snippet = element_text(client.get("/integrations/HM").get_data(as_text=True),
                           "webhook-curl")
    quoted = "'" + secret.replace("'", "'\"'\"'") + "'"
    snippet = snippet.replace("'<paste the webhook secret here>'", quoted)
    answer = _run_bash(snippet)
    assert db.session.get(Event, answer["event_id"]).record_key == "EX-1001"
    # Run twice: a new delivery id each time, so both are accepted.
    assert "event_id" in _run_bash(snippet)


def _raw_post(url: str, path: str, headers: list[tuple[str, Any]], body: bytes = b"",
              send_body: bool = True) -> tuple[int, bytes]:
    """A hand-made request over a socket (headers http.client would refuse to build)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.putrequest("POST", path)
    for name, value in headers:
        conn.putheader(name, value)
    conn.endheaders(body if send_body else None)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


def test_chunked_bodies_without_content_length(live_server):
    secret = make_integration(webhook_max_bytes=2000)
    body, headers = standard(secret, {"type": "order.paid", "id": "CH-1", "total": 2})

    def chunks(data: bytes, size: int = 7):
        for i in range(0, len(data), size):
            yield data[i:i + size]

    url = f"{live_server}/hooks/HOOKS"
    ok = requests.post(url, data=chunks(body), headers=headers, timeout=10)
    assert ok.status_code == 202, ok.text
    big, headers = standard(secret, {"id": "CH-2", "pad": "x" * 5000})
    too_big = requests.post(url, data=chunks(big, 1000), headers=headers, timeout=10)
    assert too_big.status_code == 413, too_big.text
    wait_for_state("CH-1", "PAID")


def test_a_huge_content_length_is_refused_unread(live_server):
    secret = make_integration()
    _, headers = standard(secret, {"id": "X"})
    status, data = _raw_post(live_server, "/hooks/HOOKS",
                             [*headers.items(), ("Content-Length", str(10**12))],
                             send_body=False)
    assert status == 413 and json.loads(data)["error"]["code"] == "too_large"


def test_hostile_requests_never_answer_500(live_server):
    secret = make_integration()
    url = f"{live_server}/hooks/HOOKS"
    deep = b'{"id": "D", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    cases: list[tuple[bytes, dict[str, str]]] = [
        standard(secret, deep),
        standard(secret, b'{"id": NaN}'),
        standard(secret, b'{"id": "\\u0000"}'),
        standard(secret, b"\x00\x01\x02"),
        standard(secret, b'{"id": "N", "n": 1e999}'),
        (b"{}", {"webhook-id": "m", "webhook-timestamp": "9" * 5000,
                 "webhook-signature": "v1,AAAA"}),
        (b"{}", {"webhook-id": "m", "webhook-timestamp": str(int(time.time())),
                 "webhook-signature": "v1," + "A" * 100_000}),
    ]
    statuses = []
    for body, headers in cases:
        try:
            statuses.append(requests.post(url, data=body, headers=headers, timeout=10)
                            .status_code)
        except requests.ConnectionError:
            statuses.append(0)  # the server may drop a request it deems too large
    assert 500 not in statuses and all(s >= 200 for s in statuses[:5]), statuses
    assert statuses[:4] == [422, 422, 422, 422], statuses
    garbage = [("webhook-id", b"\xff\xfe\x80"), ("webhook-timestamp", b"\xc3\x28"),
               ("webhook-signature", b"v1,\xff\xff"), ("Content-Type", "application/json"),
               ("Content-Length", "2")]
    status, _ = _raw_post(live_server, "/hooks/HOOKS", garbage, b"{}")
    assert status == 401
    status, _ = _raw_post(live_server, "/hooks/HOOKS",
                          [("Content-Length", "abc"), *standard(secret, {})[1].items()], b"{}")
    assert status in (400, 401)
    status, _ = _raw_post(live_server, f"/hooks/{'%00' * 3}", [("Content-Length", "0")])
    assert status == 404
