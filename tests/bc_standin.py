"""A local stand-in of the Business Central API, for the tests and for people trying wfapp.

A real, threaded HTTP server (werkzeug) that serves:
- the OAuth2 token endpoint (client credentials; checks the client id and secret),
- `subscriptions` POST / PATCH / DELETE / GET with Business Central's rules: the validation
  handshake against the notificationUrl on create and on renew (a failed handshake refuses the
  subscription), `@odata.etag` and `If-Match` (412 on a stale one), expiry after three days
  (changeable), 404 for unknown or expired subscriptions,
- entity sets of one company, read with `$filter=lastModifiedDateTime gt …` and paged with
  `@odata.nextLink`,
- and it SENDS notifications (created, updated, deleted, collection) to the subscribed
  notificationUrl, reacting to the answer as Business Central does: it deletes the subscription
  after any status but 2xx, 408, 429 and 5xx.

Run it by hand: `python -m tests.bc_standin --port 8765` prints what it serves and the settings
to give an integration; `/_standin` answers a small control API (see docs/business-central.md).
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

TENANT = "contoso.example"
ENVIRONMENT = "production"
COMPANY = "f64eba74-dacd-4854-a584-1834f68cfc3a"
CLIENT_ID = "wfapp-standin-client"
CLIENT_SECRET = "standin-secret"
SUB_ONE = re.compile(r"/subscriptions\('([^']*)'\)$")
ENTITY = re.compile(r"/companies\(([^)]*)\)/([A-Za-z][A-Za-z0-9]*)$")
FILTER = re.compile(r"\s*(lastModifiedDateTime|lastDateTimeModified)\s+gt\s+(\S+)\s*$")


def now() -> datetime:
    """The stand-in's clock (UTC)."""
    return datetime.now(UTC)


def iso(value: datetime) -> str:
    """Business Central's time format: ISO 8601 with a Z."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _error(status: int, code: str, message: str) -> Response:
    return Response(json.dumps({"error": {"code": code, "message": message}}), status,
                    mimetype="application/json")


def _json(value: Any, status: int = 200) -> Response:
    return Response(json.dumps(value), status, mimetype="application/json")


@dataclass
class Delivery:
    """One notification the stand-in sent, and what the subscriber answered."""

    url: str
    items: list[dict[str, Any]]
    status: int | None
    body: str
    deleted_subscription: bool = False


@dataclass
class StandIn:
    """The stand-in's state and its HTTP server; tests drive it through these methods."""

    client_id: str = CLIENT_ID
    client_secret: str = CLIENT_SECRET
    tenant: str = TENANT
    environment: str = ENVIRONMENT
    company: str = COMPANY
    lifetime: timedelta = timedelta(days=3)
    page_size: int = 100
    handshake_timeout: float = 5.0
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    tokens: dict[str, datetime] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)
    handshakes: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    token_requests: int = 0
    #: Tests set this to make `@odata.nextLink` point at another host (which wfapp must refuse).
    next_link_base: str | None = None
    url: str = ""

    def __post_init__(self) -> None:
        self.lock = threading.RLock()
        self._etags = 0
        self._server: Any = None
        self._thread: threading.Thread | None = None

    # --- running ------------------------------------------------------------------------------

    def start(self, port: int = 0, host: str = "127.0.0.1") -> str:
        """Serve on a free port (or `port`) in a daemon thread; return the base URL."""
        self._server = make_server(host, port, self.wsgi, threaded=True)
        self.url = f"http://{host}:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="bc-standin")
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def api_base_url(self) -> str:
        """What an integration's BC API Base URL should be."""
        return f"{self.url}/v2.0"

    @property
    def token_url(self) -> str:
        """What an integration's BC Token URL should be."""
        return f"{self.url}/{self.tenant}/oauth2/v2.0/token"

    def settings(self, resource: str = "salesOrders") -> dict[str, str]:
        """The integration settings (API field names) that point wfapp at this stand-in."""
        return {"bc_api_base_url": self.api_base_url, "bc_tenant": self.tenant,
                "bc_environment": self.environment, "bc_company": self.company,
                "bc_resource": resource, "bc_client_id": self.client_id,
                "bc_client_secret": self.client_secret, "bc_token_url": self.token_url}

    # --- what tests and people do -------------------------------------------------------------

    def add_records(self, entity: str, count: int, modified: datetime | None = None
                    ) -> list[dict[str, Any]]:
        """Add `count` records to an entity set, modified at `modified` (now); return them."""
        at = modified or now()
        with self.lock:
            rows = self.records.setdefault(entity, [])
            new = [{"id": str(uuid.uuid4()), "number": f"{entity[:2].upper()}{len(rows) + i:06d}",
                    "lastModifiedDateTime": iso(at + timedelta(milliseconds=i))}
                   for i in range(count)]
            rows.extend(new)
        return new

    def item(self, subscription_id: str, change_type: str, record_id: str | None = None, *,
             since: datetime | None = None, client_state: str | None = None) -> dict[str, Any]:
        """One notification item as Business Central writes it."""
        sub = self.subscriptions[subscription_id]
        base = sub["resource"].lstrip("/")
        if change_type == "collection":
            stamp = iso(since or now() - timedelta(minutes=1))
            resource = f"{base}?$filter=lastModifiedDateTime%20gt%20{stamp}"
        else:
            resource = f"{base}({record_id})"
        return {"subscriptionId": subscription_id,
                "clientState": sub.get("clientState") if client_state is None else client_state,
                "expirationDateTime": sub["expirationDateTime"], "resource": resource,
                "changeType": change_type, "lastModifiedDateTime": iso(now())}

    def send(self, url: str, items: list[dict[str, Any]], timeout: float = 30.0) -> Delivery:
        """POST a notification to `url`; delete the subscriptions as BC would on a 4xx."""
        try:
            response = requests.post(url, json={"value": items}, timeout=timeout)
            status, body = response.status_code, response.text
        except requests.RequestException as error:
            status, body = None, f"{type(error).__name__}: {error}"
        delivery = Delivery(url, items, status, body)
        if status is not None and not (200 <= status < 300 or status in (408, 429)
                                       or status >= 500):
            with self.lock:
                for item in items:
                    if self.subscriptions.pop(item.get("subscriptionId"), None) is not None:
                        delivery.deleted_subscription = True
        self.deliveries.append(delivery)
        return delivery

    def notify(self, subscription_id: str, changes: list[tuple[str, str | None]],
               **item_options: Any) -> Delivery:
        """Send one notification with an item per (change type, record id) to the subscriber."""
        sub = self.subscriptions[subscription_id]
        items = [self.item(subscription_id, change, record, **item_options)
                 for change, record in changes]
        return self.send(sub["notificationUrl"], items)

    def forget(self, subscription_id: str) -> None:
        """Drop a subscription, as Business Central does after an error status or expiry."""
        with self.lock:
            self.subscriptions.pop(subscription_id, None)

    def expire_in(self, subscription_id: str, seconds: float) -> None:
        """Move a subscription's expiry to `seconds` from now."""
        with self.lock:
            self.subscriptions[subscription_id]["expirationDateTime"] = iso(
                now() + timedelta(seconds=seconds))

    def requests_to(self, method: str, fragment: str = "") -> list[dict[str, Any]]:
        """The logged API requests with this method whose path holds `fragment`."""
        return [r for r in self.log if r["method"] == method and fragment in r["path"]]

    # --- the HTTP side ------------------------------------------------------------------------

    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        """The WSGI entry point."""
        request = Request(environ)
        try:
            response = self._route(request)
        except Exception as error:  # a stand-in bug must show, not hang the caller
            response = _error(500, "StandInError", f"{type(error).__name__}: {error}")
        return response(environ, start_response)

    def _route(self, request: Request) -> Response:
        path = request.path
        if path == f"/{self.tenant}/oauth2/v2.0/token" and request.method == "POST":
            return self._token(request)
        if path.startswith("/_standin"):
            return self._control(request)
        prefix = f"/v2.0/{self.tenant}/{self.environment}/api/v2.0"
        if not path.startswith(prefix):
            return _error(404, "BadRequest_NotFound", f"no such endpoint: {path}")
        rest = path[len(prefix):]
        self.log.append({"method": request.method, "path": rest, "at": iso(now()),
                         "if_match": request.headers.get("If-Match"),
                         "body": request.get_json(silent=True)})
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        with self.lock:
            expires = self.tokens.get(token)
        if expires is None or expires < now():
            return _error(401, "Unauthorized", "The credentials provided are incorrect")
        if rest == "/subscriptions":
            if request.method == "POST":
                return self._create(request)
            if request.method == "GET":
                with self.lock:
                    return _json({"value": [self._public(s) for s in self._live()]})
        found = SUB_ONE.fullmatch(rest)
        if found:
            return self._one(request, found.group(1))
        found = ENTITY.fullmatch(rest)
        if found and request.method == "GET":
            return self._read(request, found.group(1), found.group(2))
        return _error(405 if found else 404, "BadRequest", f"{request.method} {rest}")

    def _token(self, request: Request) -> Response:
        self.token_requests += 1
        form = request.form
        if form.get("grant_type") != "client_credentials":
            return _json({"error": "unsupported_grant_type"}, 400)
        if form.get("client_id") != self.client_id or form.get("client_secret") != \
                self.client_secret:
            return _json({"error": "invalid_client", "error_description":
                          "AADSTS7000215: Invalid client secret provided."}, 401)
        token = uuid.uuid4().hex
        with self.lock:
            self.tokens[token] = now() + timedelta(hours=1)
        return _json({"token_type": "Bearer", "expires_in": 3599, "access_token": token})

    def _live(self) -> list[dict[str, Any]]:
        """Subscriptions that have not expired (expired ones are dropped, as BC does)."""
        for sub_id, sub in list(self.subscriptions.items()):
            if datetime.fromisoformat(sub["expirationDateTime"]) <= now():
                del self.subscriptions[sub_id]
        return list(self.subscriptions.values())

    def _public(self, sub: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in sub.items() if not k.startswith("_")}

    def _etag(self) -> str:
        self._etags += 1
        return 'W/"' + base64.b64encode(f"'{self._etags};{uuid.uuid4().hex[:8]}'".encode()
                                       ).decode() + '"'

    def _handshake(self, url: str) -> str | None:
        """Call the subscriber like BC: `?validationToken=`; None when it answered right."""
        token = uuid.uuid4().hex + "/+= é"
        target = url + ("&" if "?" in url else "?") + urlencode({"validationToken": token})
        try:
            response = requests.post(target, timeout=self.handshake_timeout)
        except requests.RequestException as error:
            outcome = f"the handshake failed: {type(error).__name__}"
        else:
            ok = response.status_code == 200 and response.text == token
            outcome = None if ok else (f"the handshake failed: the subscriber answered "
                                       f"{response.status_code} {response.text[:80]!r}")
        self.handshakes.append({"url": url, "at": iso(now()), "error": outcome})
        return outcome

    def _fields(self, request: Request) -> tuple[dict[str, Any] | None, Response | None]:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return None, _error(400, "BadRequest", "the body must be a JSON object")
        url, resource = body.get("notificationUrl"), body.get("resource")
        if not isinstance(url, str) or not re.match(r"https?://", url):
            return None, _error(400, "BadRequest", "notificationUrl must be an http(s) URL")
        expected = re.compile(rf"/?api/v2\.0/companies\({re.escape(self.company)}\)/[A-Za-z]+")
        if not isinstance(resource, str) or not expected.fullmatch(resource):
            return None, _error(400, "BadRequest", f"resource {resource!r} is not an entity "
                                "set of this company")
        state = body.get("clientState")
        if state is not None and (not isinstance(state, str) or len(state) > 2048):
            return None, _error(400, "BadRequest", "clientState must be a string of at most "
                                "2048 characters")
        return body, None

    def _create(self, request: Request) -> Response:
        body, error = self._fields(request)
        if error is not None:
            return error
        assert body is not None
        failure = self._handshake(body["notificationUrl"])
        if failure:
            return _error(400, "BadRequest", f"Could not register the subscription: {failure}")
        sub_id = uuid.uuid4().hex
        with self.lock:
            sub = {"subscriptionId": sub_id, "notificationUrl": body["notificationUrl"],
                   "resource": body["resource"], "clientState": body.get("clientState"),
                   "userId": "00000000-0000-0000-0000-000000000001",
                   "lastModifiedDateTime": iso(now()),
                   "expirationDateTime": iso(now() + self.lifetime), "@odata.etag": self._etag()}
            self.subscriptions[sub_id] = sub
            return _json(self._public(sub), 201)

    def _one(self, request: Request, sub_id: str) -> Response:
        with self.lock:
            self._live()
            sub = self.subscriptions.get(sub_id)
        if sub is None:
            return _error(404, "BadRequest_ResourceNotFound",
                          f"The subscription {sub_id} does not exist.")
        if request.method == "GET":
            return _json(self._public(sub))
        if request.method not in ("PATCH", "DELETE"):
            return _error(405, "BadRequest_MethodNotAllowed", request.method)
        match = request.headers.get("If-Match")
        if not match:
            return _error(400, "BadRequest", "If-Match is required")
        if match not in ("*", sub["@odata.etag"]):
            return _error(412, "Request_EntityChanged", "Another user has already changed "
                          "the record.")
        if request.method == "DELETE":
            self.forget(sub_id)
            return Response(status=204)
        body, error = self._fields(request)
        if error is not None:
            return error
        assert body is not None
        failure = self._handshake(body["notificationUrl"])
        if failure:
            return _error(400, "BadRequest", f"Could not renew the subscription: {failure}")
        with self.lock:
            sub.update(notificationUrl=body["notificationUrl"], resource=body["resource"],
                       clientState=body.get("clientState"), lastModifiedDateTime=iso(now()),
                       expirationDateTime=iso(now() + self.lifetime))
            sub["@odata.etag"] = self._etag()
            return _json(self._public(sub))

    def _read(self, request: Request, company: str, entity: str) -> Response:
        if company != self.company:
            return _error(404, "BadRequest_NotFound", f"company {company} does not exist")
        rows = sorted(self.records.get(entity, []),
                      key=lambda r: (r["lastModifiedDateTime"], r["id"]))
        text = request.args.get("$filter")
        if text:
            found = FILTER.fullmatch(text)
            if not found:
                return _error(400, "BadRequest", f"unsupported $filter {text!r}")
            since = datetime.fromisoformat(found.group(2))
            rows = [r for r in rows if datetime.fromisoformat(r["lastModifiedDateTime"]) > since]
        start = int(request.args.get("$skiptoken") or 0)
        page = rows[start:start + self.page_size]
        body: dict[str, Any] = {"value": page}
        if start + self.page_size < len(rows):
            args = {k: v for k, v in request.args.items() if k != "$skiptoken"}
            args["$skiptoken"] = str(start + self.page_size)
            base = self.next_link_base or request.host_url.rstrip("/")
            body["@odata.nextLink"] = f"{base}{request.path}?" + urlencode(args, quote_via=quote)
        return _json(body)

    # --- the control API, for a person running the stand-in by hand ---------------------------

    def describe(self) -> dict[str, Any]:
        """What the stand-in serves and holds."""
        with self.lock:
            return {"token_url": self.token_url, "api_base_url": self.api_base_url,
                    "settings": self.settings(), "subscriptions": [self._public(s)
                                                                    for s in self._live()],
                    "records": {k: len(v) for k, v in self.records.items()},
                    "lifetime_seconds": self.lifetime.total_seconds(),
                    "page_size": self.page_size}

    def _control(self, request: Request) -> Response:
        body = request.get_json(silent=True, force=True) or {}  # curl -d without Content-Type
        parts = request.path.strip("/").split("/")
        if request.method == "GET" and parts == ["_standin"]:
            return _json(self.describe())
        if request.method != "POST":
            return _error(405, "BadRequest", "the control API takes POST")
        if parts == ["_standin", "records"]:
            rows = self.add_records(str(body.get("entity", "salesOrders")),
                                    int(body.get("count", 1)))
            return _json({"added": len(rows), "ids": [r["id"] for r in rows[:20]]})
        if parts == ["_standin", "config"]:
            if "lifetime_seconds" in body:
                self.lifetime = timedelta(seconds=float(body["lifetime_seconds"]))
            if "page_size" in body:
                self.page_size = max(1, int(body["page_size"]))
            return _json(self.describe())
        if parts == ["_standin", "notify"]:
            sub_id = body.get("subscription_id") or next(iter(self.subscriptions), None)
            if sub_id not in self.subscriptions:
                return _error(404, "BadRequest_NotFound", "no such subscription")
            change = str(body.get("change_type", "updated"))
            ids = body.get("ids") or [str(uuid.uuid4())]
            changes = [(change, None)] if change == "collection" else [(change, i) for i in ids]
            sent = self.notify(sub_id, changes)
            return _json({"status": sent.status, "answer": sent.body[:500],
                          "deleted_subscription": sent.deleted_subscription})
        if len(parts) == 4 and parts[:2] == ["_standin", "subscriptions"]:
            if parts[3] == "forget":
                self.forget(parts[2])
                return _json({"forgotten": parts[2]})
            if parts[3] == "expire" and parts[2] in self.subscriptions:
                self.expire_in(parts[2], float(body.get("in_seconds", 0)))
                return _json(self._public(self.subscriptions[parts[2]]))
        return _error(404, "BadRequest_NotFound", f"no such control endpoint: {request.path}")


def main() -> None:
    """Run the stand-in until Ctrl+C, printing what it serves."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--client-id", default=CLIENT_ID)
    parser.add_argument("--client-secret", default=CLIENT_SECRET)
    parser.add_argument("--lifetime-seconds", type=float, default=3 * 86400)
    args = parser.parse_args()
    standin = StandIn(client_id=args.client_id, client_secret=args.client_secret,
                      lifetime=timedelta(seconds=args.lifetime_seconds))
    standin.add_records("salesOrders", 3)
    url = standin.start(args.port, args.host)
    print(f"Business Central stand-in on {url}")
    print(f"  token endpoint      POST {standin.token_url}")
    print(f"  subscriptions       {standin.api_base_url}/{standin.tenant}/{standin.environment}"
          "/api/v2.0/subscriptions  (GET, POST; ('<id>'): GET, PATCH, DELETE)")
    print(f"  entity sets         .../api/v2.0/companies({standin.company})/<entitySet>"
          "  ($filter=lastModifiedDateTime gt <time>, @odata.nextLink paging)")
    print(f"  control API         GET {url}/_standin; POST {url}/_standin/records "
          '{"entity", "count"}, /_standin/notify {"change_type", "ids"}, /_standin/config '
          '{"lifetime_seconds", "page_size"}, /_standin/subscriptions/<id>/forget|expire')
    print("Integration settings (PATCH /api/v1/integrations/<code> with these):")
    print(json.dumps(standin.settings(), indent=2))
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        standin.stop()


if __name__ == "__main__":
    main()
