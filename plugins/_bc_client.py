"""The Business Central API over HTTP: OAuth2 client credentials, subscriptions, entity reads.

Plain `requests` (no msal): the token endpoint is one form POST, and a configurable token URL
lets the tests point it at the local stand-in. Every request has a timeout, so no job hangs;
failures raise BcError with a message fit for the card.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from wfapp.plugin_api import IntegrationInfo, config

SUBSCRIPTION_ID = re.compile(r"[A-Za-z0-9_.-]{1,100}")
ETAG = re.compile(r"[\x20-\x7e]{1,500}")
ACCESS_TOKEN = re.compile(r"[\x21-\x7e]{1,16384}")
MAX_MESSAGE = 300
#: (connect, read) seconds; Business Central's own handshake with us is limited to 5 seconds.
TIMEOUT = (5.0, 30.0)
TOKEN_TIMEOUT = (5.0, 15.0)

_tokens: dict[tuple[str, ...], tuple[str, float]] = {}
_tokens_lock = threading.Lock()


class BcError(Exception):
    """A Business Central request failed; `status` is the HTTP status (None: no answer)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message[:MAX_MESSAGE])
        self.message = message[:MAX_MESSAGE]
        self.status = status


@dataclass(frozen=True)
class BcAccess:
    """How to reach one integration's Business Central environment."""

    base_url: str
    tenant: str
    environment: str
    company: str
    api_path: str
    resource: str
    client_id: str
    client_secret: str
    token_url: str
    scope: str

    @property
    def environment_url(self) -> str:
        """The environment's URL, which resource paths (`api/v2.0/...`) are relative to."""
        return (f"{self.base_url.rstrip('/')}/{quote(self.tenant, safe='')}/"
                f"{quote(self.environment, safe='')}")

    @property
    def subscriptions_url(self) -> str:
        """Where subscriptions are created."""
        return f"{self.environment_url}/{self.api_path}/subscriptions"

    def subscription_url(self, subscription_id: str) -> str:
        """One subscription, by its id (OData key syntax)."""
        if not SUBSCRIPTION_ID.fullmatch(subscription_id):
            raise BcError(f"unusable subscription id {subscription_id[:40]!r}")
        return f"{self.subscriptions_url}('{subscription_id}')"

    @property
    def resource_path(self) -> str:
        """The subscribed resource: `/api/v2.0/companies(<id>)/<entity set>`."""
        return f"/{self.api_path}/companies({self.company})/{self.resource}"


REQUIRED = {"bc_tenant": "BC Tenant", "bc_environment": "BC Environment",
            "bc_company": "BC Company Id", "bc_resource": "BC Subscription Resource",
            "bc_client_id": "BC OAuth Client Id", "bc_client_secret": "BC OAuth Client Secret",
            "bc_api_base_url": "BC API Base URL"}


def access_for(info: IntegrationInfo, *, for_subscription: bool = True
               ) -> tuple[BcAccess | None, list[tuple[str, str]]]:
    """The integration's BC access, or None and (setting, message) for each missing setting.

    Reading records (a collection) needs no company or resource; a subscription needs both.
    """
    def text(name: str) -> str:
        value = info.setting(name)
        return value.strip() if isinstance(value, str) else ""

    try:
        secret = info.secret("bc_client_secret") or ""
    except Exception:  # not decryptable with the configured keys (SECRETS_KEY changed)
        return None, [("bc_client_secret", "cannot be decrypted: set it again")]
    values = {name: text(name) for name in REQUIRED if name != "bc_client_secret"}
    values["bc_client_secret"] = secret
    needed = REQUIRED if for_subscription else {
        k: v for k, v in REQUIRED.items() if k not in ("bc_company", "bc_resource")}
    missing = [(name, f"{label} is required to use the Business Central API")
               for name, label in needed.items() if not values[name]]
    if missing:
        return None, missing
    tenant = values["bc_tenant"]
    token_url = text("bc_token_url") or \
        f"https://login.microsoftonline.com/{quote(tenant, safe='')}/oauth2/v2.0/token"
    return BcAccess(
        base_url=values["bc_api_base_url"], tenant=tenant, environment=values["bc_environment"],
        company=values["bc_company"], api_path=text("bc_api_path") or "api/v2.0",
        resource=values["bc_resource"], client_id=values["bc_client_id"], client_secret=secret,
        token_url=token_url,
        scope=text("bc_token_scope") or "https://api.businesscentral.dynamics.com/.default",
    ), []


def _timeout(default: tuple[float, float]) -> tuple[float, float]:
    read = config("BC_HTTP_TIMEOUT")
    return (default[0], float(read)) if read else default


def _message(response: requests.Response) -> str:
    """Business Central's (or the token endpoint's) error message, else the status line."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return f"{response.status_code}: {error['message']}"
        if isinstance(body.get("error_description"), str):
            return f"{response.status_code}: {body['error_description'].splitlines()[0]}"
        if isinstance(error, str):
            return f"{response.status_code}: {error}"
    return f"{response.status_code} {response.reason or ''}".strip()


def _send(method: str, url: str, timeout: tuple[float, float], **kwargs: Any
          ) -> requests.Response:
    try:
        return requests.request(method, url, timeout=timeout, allow_redirects=False, **kwargs)
    except requests.Timeout:
        raise BcError(f"{method} {_where(url)} timed out") from None
    except requests.RequestException as error:
        raise BcError(f"{method} {_where(url)} failed: {type(error).__name__}") from None


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _cache_key(access: BcAccess) -> tuple[str, ...]:
    secret = hashlib.sha256(access.client_secret.encode()).hexdigest()
    return (access.token_url, access.client_id, access.scope, secret)


def token(access: BcAccess, *, fresh: bool = False) -> str:
    """An access token from the client-credentials flow, cached until shortly before it expires."""
    key = _cache_key(access)
    with _tokens_lock:
        cached = _tokens.get(key)
    if cached is not None and not fresh and cached[1] > time.monotonic():
        return cached[0]
    response = _send("POST", access.token_url, _timeout(TOKEN_TIMEOUT), data={
        "grant_type": "client_credentials", "client_id": access.client_id,
        "client_secret": access.client_secret, "scope": access.scope})
    if response.status_code != 200:
        raise BcError(f"token request refused: {_message(response)}", response.status_code)
    body = _json(response, "the token endpoint")
    value, lifetime = body.get("access_token"), body.get("expires_in", 3600)
    if not isinstance(value, str) or not ACCESS_TOKEN.fullmatch(value):
        raise BcError("the token endpoint answered without a usable access_token")
    try:
        seconds = float(lifetime)
    except (TypeError, ValueError):
        seconds = 3600.0
    # Renew a minute early so a token never runs out between taking it and using it.
    with _tokens_lock:
        _tokens[key] = (value, time.monotonic() + max(0.0, seconds - 60))
    return value


def _json(response: requests.Response, who: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise BcError(f"{who} answered {response.status_code} without JSON") from None
    if not isinstance(body, dict):
        raise BcError(f"{who} answered {response.status_code} with JSON that is not an object")
    return body


def call(access: BcAccess, method: str, url: str, *, json: Any = None,
         headers: dict[str, str] | None = None) -> requests.Response:
    """A Business Central API request with the bearer token (fetched again once after a 401)."""
    for attempt in (1, 2):
        sent = {"Authorization": f"Bearer {token(access, fresh=attempt == 2)}",
                "Accept": "application/json", **(headers or {})}
        response = _send(method, url, _timeout(TIMEOUT), json=json, headers=sent)
        if response.status_code != 401:
            return response
    return response


def _check(response: requests.Response, what: str, ok: tuple[int, ...]) -> None:
    if response.status_code not in ok:
        raise BcError(f"{what}: {_message(response)}", response.status_code)


def _subscription(response: requests.Response, what: str) -> dict[str, Any]:
    """A subscription object from Business Central, its id and etag checked."""
    body = _json(response, what)
    sub_id = body.get("subscriptionId")
    if not isinstance(sub_id, str) or not SUBSCRIPTION_ID.fullmatch(sub_id):
        raise BcError(f"{what}: Business Central answered without a usable subscriptionId")
    etag = body.get("@odata.etag")
    if etag is not None and (not isinstance(etag, str) or not ETAG.fullmatch(etag)):
        raise BcError(f"{what}: Business Central answered with an unusable @odata.etag")
    if not isinstance(body.get("expirationDateTime"), str):
        raise BcError(f"{what}: Business Central answered without expirationDateTime")
    return body


def create_subscription(access: BcAccess, notification_url: str, client_state: str
                        ) -> dict[str, Any]:
    """POST a subscription; Business Central calls `notification_url` back before answering."""
    response = call(access, "POST", access.subscriptions_url, json={
        "notificationUrl": notification_url, "resource": access.resource_path,
        "clientState": client_state})
    _check(response, "registering the subscription", (200, 201))
    return _subscription(response, "registering the subscription")


def renew_subscription(access: BcAccess, subscription_id: str, etag: str | None,
                       notification_url: str, client_state: str) -> dict[str, Any]:
    """PATCH a subscription with If-Match (a handshake again); BcError(status=404) when gone."""
    response = call(access, "PATCH", access.subscription_url(subscription_id), json={
        "notificationUrl": notification_url, "resource": access.resource_path,
        "clientState": client_state}, headers={"If-Match": etag or "*"})
    _check(response, "renewing the subscription", (200,))
    return _subscription(response, "renewing the subscription")


def get_subscription(access: BcAccess, subscription_id: str) -> dict[str, Any]:
    """GET one subscription (for a fresh etag); BcError(status=404) when gone."""
    response = call(access, "GET", access.subscription_url(subscription_id))
    _check(response, "reading the subscription", (200,))
    return _subscription(response, "reading the subscription")


def delete_subscription(access: BcAccess, subscription_id: str, etag: str | None) -> None:
    """DELETE a subscription; BcError(status=404) when Business Central no longer has it."""
    response = call(access, "DELETE", access.subscription_url(subscription_id),
                    headers={"If-Match": etag or "*"})
    _check(response, "deleting the subscription", (200, 204))


def same_origin(url: str, base: str) -> bool:
    """Whether `url` is on the scheme, host and port of `base` (where the token may go)."""
    a, b = urlsplit(url), urlsplit(base)
    return (a.scheme, a.netloc.lower()) == (b.scheme, b.netloc.lower())


def read_page(access: BcAccess, url: str) -> dict[str, Any]:
    """GET one page of an entity set (`value` and maybe `@odata.nextLink`)."""
    if not same_origin(url, access.environment_url):
        raise BcError("a page link points away from the Business Central API; not followed")
    response = call(access, "GET", url)
    _check(response, "reading records", (200,))
    body = _json(response, "reading records")
    if not isinstance(body.get("value"), list):
        raise BcError("reading records: the answer has no value list")
    return body


def find_subscription(access: BcAccess, notification_url: str) -> dict[str, Any] | None:
    """An existing subscription of this resource to this notification URL, if BC has one.

    Registering adopts it instead of creating a second one: a registration whose answer was
    lost (a timeout after Business Central created it) is found again this way.
    """
    response = call(access, "GET", access.subscriptions_url)
    _check(response, "listing subscriptions", (200,))
    found = _json(response, "listing subscriptions").get("value")
    wanted = access.resource_path.lstrip("/").lower()
    for sub in found if isinstance(found, list) else []:
        if (isinstance(sub, dict) and sub.get("notificationUrl") == notification_url
                and str(sub.get("resource") or "").lstrip("/").lower() == wanted):
            return sub
    return None
