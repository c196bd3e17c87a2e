"""`/bc/<integration>/notifications`: Business Central's handshake and its notifications.

What Business Central does with our answers decides the status codes here. It retries a
notification for up to 36 hours after a 408, a 429 or any 5xx, and it DELETES the subscription
after any other error status. So a well-formed notification always gets 202 — items that cannot
be used (a wrong clientState, no record id) are dropped and counted, never answered with a 4xx —
and 503 only when storing failed and a retry can help. A body that is not a notification at all
(not JSON, no `value` list) gets 400: Business Central never sends one, so whoever did is not
Business Central, and there is no subscription to lose.
"""

from __future__ import annotations

import hmac
import logging
from collections import Counter
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from wfapp.plugin_api import (
    DeliveryOutcome,
    InputError,
    IntegrationInfo,
    NewEvent,
    config,
    count_delivery,
    csrf_exempt,
    enqueue,
    find_integration,
    json_error,
    parse_json,
    public,
    record_delivery,
    state_get,
    state_put,
    store_events,
    utcnow,
)

from ._bc_resource import COLLECTION, BadItem, notification_dedupe_key, parse_time, read_item

log = logging.getLogger(__name__)
bp = Blueprint("bc_notifications", __name__)

SOURCE = "on_bc_event"
CHANNEL = "bc"
#: Counters of dropped items, shown on the card.
CLIENT_STATE_CHANNEL = "bc.client_state"
MALFORMED_CHANNEL = "bc.malformed"
MAX_TOKEN = 1024
MAX_BODY = 16 * 1024 * 1024
EXPAND_JOB = "wfapp.builtin_plugins._bc_expand.expand_collection"


def _iso(value: datetime) -> str:
    return value.isoformat()


def _handshake(info: IntegrationInfo, token: str) -> Response:
    """Answer Business Central's validation request: 200, text/plain, exactly the token."""
    if len(token) > MAX_TOKEN:
        return json_error(400, "bad_request", f"validationToken is longer than {MAX_TOKEN} "
                          "characters; Business Central never sends such a token")
    try:
        state_put(info, "bc", "handshake", {"at": _iso(utcnow())})
    except Exception:  # the handshake must succeed even when its time cannot be noted
        log.warning("could not note the BC handshake time of %s", info.code, exc_info=True)
    response = Response(token, status=200, mimetype="text/plain")
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    return response


def expected_client_states(info: IntegrationInfo) -> list[str]:
    """The clientState values accepted now: the current one, and the one it replaced while
    Business Central may still hold it (until a register or renewal sent the new one)."""
    value, previous, rotated_at = info.secret_with_previous("bc_client_state")
    accepted = [value] if value else []
    if previous and rotated_at is not None:
        sent = parse_time((state_get(info, "bc", "subscription") or {}).get(
            "client_state_sent_at"))
        if sent is None or sent < rotated_at:
            accepted.append(previous)
    return accepted


def _client_state_ok(item: dict[str, Any], accepted: list[str]) -> bool:
    given = item.get("clientState")
    if not isinstance(given, str):
        return False
    # Compare with every accepted value, always, so the time taken says nothing about which.
    ok = False
    for expected in accepted:
        ok |= hmac.compare_digest(given.encode(), expected.encode())
    return ok


def _read_body() -> tuple[list[Any] | None, Response | None]:
    """The notification's `value` list, or an error response for a body that is not one."""
    request.max_content_length = int(config("BC_MAX_BODY_BYTES", MAX_BODY))
    try:
        raw = request.get_data(cache=False)
    except RequestEntityTooLarge:
        return None, json_error(413, "too_large", "the notification is larger than "
                                f"{request.max_content_length} bytes")
    try:
        body = parse_json(raw)
    except InputError as error:
        return None, json_error(400, "bad_request", f"the body {error.message}",
                                [{"path": error.path, "message": error.message}])
    if not isinstance(body, dict) or not isinstance(body.get("value"), list):
        return None, json_error(400, "bad_request", 'the body must be a notification: '
                                '{"value": [...]}', [{"path": "value",
                                                      "message": "must be a list"}])
    return body["value"], None


def _note(info: IntegrationInfo, what: str, **counts: Any) -> None:
    """Keep the last notification's time and counts for the card (never fails the request)."""
    try:
        state_put(info, "bc", "notification", {"at": _iso(utcnow()), "what": what, **counts})
    except Exception:
        log.warning("could not note the BC notification time of %s", info.code, exc_info=True)


@bp.route("/bc/<code>/notifications", methods=["GET", "POST"])
@public
def notifications(code: str) -> Response | tuple[Response, int]:
    """The handshake (`?validationToken=T`) or a notification: one event per usable item."""
    info = find_integration(code)
    if info is None:
        return json_error(404, "not_found", f"integration {code!r} does not exist")
    token = request.args.get("validationToken")
    if token is not None:
        return _handshake(info, token)
    if request.method == "GET":
        return json_error(400, "bad_request", "a GET is only the handshake: send "
                          "?validationToken=<token>")
    items, error = _read_body()
    if error is not None:
        return error
    assert items is not None
    if not info.enabled:
        # 503, not 403: Business Central keeps the subscription and retries for 36 hours, so
        # re-enabling the integration within that time loses nothing.
        record_delivery(info, CHANNEL, DeliveryOutcome.REFUSED, "the integration is disabled; "
                        "answered 503 so Business Central retries", status_code=503)
        response = json_error(503, "disabled", f"integration {info.code} is disabled")
        response.headers["Retry-After"] = "300"
        return response
    return _accept(info, items)


def _accept(info: IntegrationInfo, items: list[Any]) -> Response | tuple[Response, int]:
    """Turn the usable items into events, all in one transaction; count the rest."""
    try:
        accepted = expected_client_states(info)
    except Exception:  # SECRETS_KEY changed? BC retries after a 503; the log says why
        log.exception("the BC client state of %s cannot be read", info.code)
        return json_error(503, "client_state_unreadable", "the integration's client state "
                          "cannot be read; retry later")
    events: list[NewEvent] = []
    collections: list[dict[str, Any]] = []
    wrong_state = 0
    malformed: Counter[str] = Counter()
    for raw in items:
        if isinstance(raw, dict) and not _client_state_ok(raw, accepted):
            wrong_state += 1
            continue
        try:
            item = read_item(raw)
        except BadItem as problem:
            malformed[str(problem)] += 1
            continue
        events.append(NewEvent(source=SOURCE, type=item.change_type, record_key=item.record_key,
                               payload=item.data, dedupe_key=notification_dedupe_key(item.data)))
        if item.change_type == COLLECTION:
            collections.append(item.data)
    try:
        stored = store_events(info, events)
    except Exception:
        log.exception("storing a BC notification for %s failed", info.code)
        try:
            record_delivery(info, CHANNEL, DeliveryOutcome.FAILED, "storing the notification "
                            "failed; answered 503 so Business Central retries", status_code=503)
        except Exception:
            log.warning("could not log the failed BC delivery", exc_info=True)
        return json_error(503, "store_failed", "the notification could not be stored; "
                          "retry later")
    refused = wrong_state + sum(malformed.values())
    _count(info, len(items), wrong_state, malformed, stored.duplicates, bool(accepted))
    if stored.ids and collections:
        _queue_expansions(info, collections)
    if events:  # only a notification that knew the client state counts as one from BC
        _note(info, "notification", items=len(items), stored=stored.stored,
              duplicates=stored.duplicates, refused=refused)
    return jsonify({"stored": stored.stored, "duplicates": stored.duplicates,
                    "refused": refused}), 202


def _count(info: IntegrationInfo, total: int, wrong_state: int, malformed: Counter[str],
           duplicates: int, has_state: bool) -> None:
    """Log what did not become a new event, and count dropped items for the card."""
    if wrong_state:
        why = "clientState does not match the integration's BC Client State" if has_state \
            else "the integration has no BC Client State set"
        count_delivery(info, CLIENT_STATE_CHANNEL, DeliveryOutcome.REFUSED, why, by=wrong_state)
        record_delivery(info, CHANNEL, DeliveryOutcome.REFUSED,
                        f"{wrong_state} of {total} items dropped: {why}", status_code=202)
    if malformed:
        why = "; ".join(f"{n} × {reason}" for reason, n in malformed.most_common(3))
        count_delivery(info, MALFORMED_CHANNEL, DeliveryOutcome.REFUSED, why,
                       by=sum(malformed.values()))
        record_delivery(info, CHANNEL, DeliveryOutcome.REFUSED,
                        f"{sum(malformed.values())} of {total} items unreadable: {why}",
                        status_code=202)
    if duplicates:
        record_delivery(info, CHANNEL, DeliveryOutcome.DUPLICATE,
                        f"{duplicates} of {total} items were already stored", status_code=202)


def _queue_expansions(info: IntegrationInfo, collections: list[dict[str, Any]]) -> None:
    """Ask a job to read the records behind each `collection` item (when BC access is set)."""
    from ._bc_client import access_for

    access, _missing = access_for(info, for_subscription=False)
    if access is None:
        return
    for item in collections:
        try:
            enqueue(EXPAND_JOB, info.code, item)
        except Exception:  # the events are stored; say on the card that the expansion is not
            log.warning("could not queue a BC collection expansion", exc_info=True)
            record_delivery(info, CHANNEL, DeliveryOutcome.FAILED, "the collection is stored, "
                            "but its expansion could not be queued (queue unreachable)",
                            status_code=202)


csrf_exempt(notifications)  # Business Central posts here; the clientState authenticates it
