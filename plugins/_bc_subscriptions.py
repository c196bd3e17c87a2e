"""The subscription lifecycle: register, renew (and re-create), unregister — as queue jobs.

Business Central calls the app back (the handshake) while it handles a POST or PATCH of a
subscription, so those requests are made from a job, never inside a web request: a server with
one worker would otherwise wait for itself. A page or API call checks what it can, marks the
action pending in the subscription's state (plugin state "bc"/"subscription") and queues the
job; the job does the HTTP work and writes the outcome — the new expiry, or the error — back.

The state is owned by whoever holds the pending mark (its token); a second action is refused
while one is under way, and a mark older than PENDING_STALE (a lost job) no longer blocks.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from wfapp.plugin_api import (
    IntegrationInfo,
    MetricFamily,
    config,
    enqueue,
    external_url,
    find_integration,
    job,
    set_secret,
    state_get,
    state_items,
    state_put,
    utcnow,
)

from ._bc_client import (
    BcAccess,
    BcError,
    access_for,
    create_subscription,
    delete_subscription,
    find_subscription,
    get_subscription,
    renew_subscription,
)
from ._bc_resource import parse_time, shown

log = logging.getLogger(__name__)
NS = "bc"
KEY = "subscription"
JOBS = {action: f"wfapp.builtin_plugins._bc_subscriptions.{action}_job"
        for action in ("register", "renew", "unregister")}
#: A pending mark older than this belongs to a job that is not coming (its worker died, or
#: no worker runs): every HTTP request of a job is bounded well below it.
PENDING_STALE = timedelta(minutes=3)
#: Renew when less than this is left of a subscription's three days (so about once a day).
RENEW_BEFORE_HOURS = 48
BACKOFF_FIRST = timedelta(minutes=1)
BACKOFF_CAP = timedelta(hours=1)


class SubscriptionError(Exception):
    """An action that cannot start: `status` 409 (state) or 422 (settings), `details` by field."""

    def __init__(self, status: int, code: str, message: str,
                 details: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def _now() -> datetime:
    return utcnow()


def _iso(value: datetime) -> str:
    return value.isoformat()


def load(info: IntegrationInfo) -> dict[str, Any]:
    """The integration's subscription state ({} when it never had one)."""
    return state_get(info, NS, KEY) or {}


def pending_live(state: dict[str, Any], now: datetime | None = None) -> bool:
    """Whether an action is under way (queued or running, and not given up on)."""
    pending = state.get("pending")
    since = parse_time(pending.get("since")) if isinstance(pending, dict) else None
    return since is not None and (now or _now()) - since < PENDING_STALE


def notification_url(info: IntegrationInfo) -> str:
    """Where Business Central should send notifications: the setting, else this app's URL."""
    configured = info.setting("bc_notification_url")
    if isinstance(configured, str) and configured.strip():
        return configured.strip()
    return external_url(f"/bc/{info.code}/notifications")


def job_notification_url(info: IntegrationInfo, state: dict[str, Any]) -> str:
    """The notification URL a job sends: the setting, else EXTERNAL_URL's, else the one stored
    when Register was clicked (a job has no request to take the app's address from)."""
    configured = info.setting("bc_notification_url")
    if (isinstance(configured, str) and configured.strip()) or config("EXTERNAL_URL"):
        return notification_url(info)
    return state.get("notification_url") or notification_url(info)


def _missing(errors: list[tuple[str, str]]) -> SubscriptionError:
    return SubscriptionError(422, "invalid", "the Business Central settings are incomplete: "
                             + ", ".join(name for name, _ in errors),
                             [{"path": name, "message": message} for name, message in errors])


def request_action(info: IntegrationInfo, action: str, actor: str) -> dict[str, Any]:
    """Check that `action` (register, renew, unregister) can start, mark it pending, queue it.

    Raises SubscriptionError naming what stands in the way; returns the state as queued.
    """
    if action not in JOBS:
        raise SubscriptionError(404, "not_found", f"unknown action {action!r}")
    state = load(info)
    now = _now()
    if pending_live(state, now):
        pending = state["pending"]
        raise SubscriptionError(409, "busy", f"a {pending.get('action')} is already under way "
                                f"(queued {pending.get('since')})")
    _access, missing = access_for(info)
    if action == "register":
        if state.get("id"):
            raise SubscriptionError(409, "conflict", f"subscription {state['id']} is already "
                                    "registered; renew or unregister it")
        if not info.enabled:
            raise SubscriptionError(409, "disabled", f"integration {info.code} is disabled")
        if missing:
            raise _missing(missing)
        url = notification_url(info)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise _missing([("bc_notification_url", "set it (or the app's EXTERNAL_URL): the "
                             "notification URL must be absolute")])
        state["notification_url"] = url
        if not info.secret("bc_client_state"):
            set_secret(info, "bc_client_state", secrets.token_urlsafe(32))
    else:
        if not state.get("id"):
            raise SubscriptionError(409, "conflict", "no subscription is registered")
        if missing:
            raise _missing(missing)
    state["pending"] = {"action": action, "token": uuid.uuid4().hex, "since": _iso(now),
                        "by": actor}
    state_put(info, NS, KEY, state)
    try:
        enqueue(JOBS[action], info.code, state["pending"]["token"])
    except Exception as error:  # the queue (Redis) is away: say so, leave nothing pending
        state["pending"] = None
        state_put(info, NS, KEY, state)
        raise SubscriptionError(503, "queue_unavailable", "the job queue is unreachable; "
                                "try again later") from error
    return state


def _claim(code: str, token: str) -> tuple[IntegrationInfo, dict[str, Any]] | None:
    """The integration and state when this job's pending mark is still the current one."""
    info = find_integration(code)
    if info is None:
        return None
    state = load(info)
    pending = state.get("pending")
    if not isinstance(pending, dict) or pending.get("token") != token:
        return None  # superseded, or given up on as stale: another action owns the state now
    return info, state


def _save(info: IntegrationInfo, state: dict[str, Any], action: str, *, ok: str = "",
          error: str = "") -> None:
    """Finish an action: write its outcome and clear the pending mark."""
    now = _now()
    state["pending"] = None
    if error:
        failures = int(state.get("failures") or 0) + 1
        delay = min(BACKOFF_CAP, BACKOFF_FIRST * 2 ** (failures - 1))
        state.update(failures=failures, retry_at=_iso(now + delay),
                     last_error={"at": _iso(now), "action": action, "message": error})
    else:
        state.update(failures=0, retry_at=None, last_error=None,
                     last_ok={"at": _iso(now), "action": action, "message": ok})
    state_put(info, NS, KEY, state)


def _adopt(state: dict[str, Any], body: dict[str, Any], now: datetime) -> None:
    state.update(id=body["subscriptionId"], etag=body.get("@odata.etag"),
                 expires_at=_iso(parse_time(body["expirationDateTime"]) or now),
                 resource=body.get("resource"), client_state_sent_at=_iso(now), wanted=True)


def _register(info: IntegrationInfo, state: dict[str, Any], access: BcAccess, action: str,
              note: str = "") -> None:
    """Create the subscription (or adopt and renew one BC already has for this URL)."""
    url = job_notification_url(info, state)
    client_state = info.secret("bc_client_state")
    if not client_state:
        client_state = secrets.token_urlsafe(32)
        set_secret(info, "bc_client_state", client_state)
    now = _now()
    try:
        try:
            existing = find_subscription(access, url)
        except BcError:
            existing = None  # listing is a convenience; creating still works without it
        if existing is not None:
            body = renew_subscription(access, existing["subscriptionId"],
                                      existing.get("@odata.etag"), url, client_state)
            verb = f"adopted the existing subscription {body['subscriptionId']}"
        else:
            body = create_subscription(access, url, client_state)
            verb = f"registered subscription {body['subscriptionId']}"
    except BcError as error:
        _save(info, state, action, error=f"{note}{error.message}")
        return
    _adopt(state, body, now)
    state.update(notification_url=url, registered_at=_iso(now), renewed_at=None, renewals=0)
    _save(info, state, action, ok=f"{note}{verb}; it expires {shown(state['expires_at'])}")


def _renew(info: IntegrationInfo, state: dict[str, Any], access: BcAccess) -> None:
    """PATCH with If-Match; a fresh etag once on 412; re-create when BC answers 404."""
    url = job_notification_url(info, state)
    client_state = info.secret("bc_client_state") or ""
    old = state["id"]
    try:
        try:
            body = renew_subscription(access, old, state.get("etag"), url, client_state)
        except BcError as error:
            if error.status != 412:
                raise
            fresh = get_subscription(access, old)  # someone else changed it: take its etag
            body = renew_subscription(access, old, fresh.get("@odata.etag"), url, client_state)
    except BcError as error:
        if error.status == 404:
            state.update(id=None, etag=None, expires_at=None)
            _register(info, state, access, "re-create",
                      note=f"Business Central no longer had subscription {old}; ")
            return
        _save(info, state, "renew", error=error.message)
        return
    now = _now()
    _adopt(state, body, now)
    state.update(notification_url=url, renewed_at=_iso(now),
                 renewals=int(state.get("renewals") or 0) + 1)
    _save(info, state, "renew", ok=f"renewed; it expires {shown(state['expires_at'])}")


def _unregister(info: IntegrationInfo, state: dict[str, Any], access: BcAccess) -> None:
    """DELETE the subscription; one Business Central no longer has counts as deleted."""
    old = state["id"]
    try:
        delete_subscription(access, old, state.get("etag"))
        message = f"unregistered subscription {old}"
    except BcError as error:
        if error.status != 404:
            _save(info, state, "unregister", error=error.message)
            return
        message = f"subscription {old} was already gone from Business Central"
    state.update(id=None, etag=None, expires_at=None, wanted=False, retry_at=None)
    _save(info, state, "unregister", ok=message)


def _run(code: str, token: str, action: str) -> None:
    claimed = _claim(code, token)
    if claimed is None:
        return
    info, state = claimed
    try:
        _act(info, state, action)
    except Exception as error:  # a bug or a database hiccup: show it, do not leave it pending
        log.exception("BC %s of %s failed", action, code)
        _save(info, load(info), action, error=f"unexpected error ({type(error).__name__}); "
              "see the server log")


def _act(info: IntegrationInfo, state: dict[str, Any], action: str) -> None:
    access, missing = access_for(info)
    if access is None:
        _save(info, state, action, error="the Business Central settings are incomplete: "
              + ", ".join(name for name, _ in missing))
    elif action == "register":
        _register(info, state, access, action)
    elif action == "renew" and not state.get("id"):
        _register(info, state, access, "re-create")
    elif action == "renew":
        _renew(info, state, access)
    else:
        _unregister(info, state, access)


@job
def register_job(code: str, token: str) -> None:
    """Queue job: register the integration's subscription."""
    _run(code, token, "register")


@job
def renew_job(code: str, token: str) -> None:
    """Queue job: renew the subscription (or re-create it when Business Central lost it)."""
    _run(code, token, "renew")


@job
def unregister_job(code: str, token: str) -> None:
    """Queue job: delete the subscription in Business Central."""
    _run(code, token, "unregister")


def due(state: dict[str, Any], now: datetime) -> bool:
    """Whether the scheduler should renew (or re-create) this subscription now."""
    if not state.get("wanted") or pending_live(state, now):
        return False
    retry_at = parse_time(state.get("retry_at"))
    if retry_at is not None and now < retry_at:
        return False
    if not state.get("id"):
        return True  # lost (a re-create failed): try again, backing off
    expires = parse_time(state.get("expires_at"))
    before = timedelta(hours=float(config("BC_RENEW_BEFORE_HOURS", RENEW_BEFORE_HOURS)))
    return expires is None or expires - now < before


@job
def renew_due() -> int:
    """Scheduled: queue a renewal for every subscription that expires soon; return how many."""
    now = _now()
    queued = 0
    for info, key, state in state_items(NS):
        if key != KEY or not due(state, now):
            continue
        state["pending"] = {"action": "renew", "token": uuid.uuid4().hex, "since": _iso(now),
                            "by": "scheduler"}
        state_put(info, NS, KEY, state)
        try:
            enqueue(JOBS["renew"], info.code, state["pending"]["token"])
        except Exception:  # the queue is away: the next tick tries again
            state["pending"] = None
            state_put(info, NS, KEY, state)
            raise
        queued += 1
    return queued


def expiry_metrics() -> list[MetricFamily]:
    """Seconds until each integration's BC subscription expires (negative: expired)."""
    now = _now()
    samples = []
    for info, key, state in state_items(NS):
        expires = parse_time(state.get("expires_at")) if key == KEY and state.get("id") else None
        if expires is not None:
            samples.append(((info.code,), (expires - now).total_seconds()))
    return [MetricFamily("wfapp_bc_subscription_expiry_seconds", "gauge",
                         "Seconds until the Business Central subscription expires, by "
                         "integration", ("integration",), samples)]
