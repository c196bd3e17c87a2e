"""The subscription on the integration card (panel and buttons) and in the JSON API.

Both show the same `status()` and start actions through `request_action`; they differ only in
how they answer (a flash and a redirect, or JSON with a status code).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, Response, abort, flash, jsonify, redirect, render_template, url_for
from flask_login import current_user

from wfapp.plugin_api import (
    IntegrationInfo,
    Role,
    actor_name,
    counters,
    csrf_exempt,
    find_integration,
    json_error,
    recent_deliveries,
    requires_role,
    span,
    state_get,
    utcnow,
)

from ._bc_client import access_for
from ._bc_notify import CHANNEL, CLIENT_STATE_CHANNEL, MALFORMED_CHANNEL, SOURCE
from ._bc_resource import parse_time, shown
from ._bc_subscriptions import (
    SubscriptionError,
    load,
    notification_url,
    pending_live,
    request_action,
)

bp = Blueprint("bc", __name__, url_prefix="/bc")
api_bp = Blueprint("bc_api", __name__, url_prefix="/api/v1/integrations")
csrf_exempt(api_bp)  # bearer-token requests; no cookie session reaches /api/ paths

PHASES = {"register": "registering", "renew": "renewing", "unregister": "unregistering"}
QUEUED = {"register": "Registration", "renew": "Renewal", "unregister": "Unregistering"}
WARN_BEFORE_SECONDS = 24 * 3600


def _ago(value: Any, now: datetime) -> str | None:
    at = parse_time(value)
    return None if at is None else f"{span((now - at).total_seconds())} ago"


def _health(state: dict[str, Any], phase: str, now: datetime) -> tuple[str, str]:
    """(level, one-line summary): level is ok, info, warning, error or none."""
    error = state.get("last_error") or {}
    pending = state.get("pending") or {}
    expires = parse_time(state.get("expires_at"))
    if phase in PHASES.values():
        queued = _ago(pending["since"], now)
        return "info", f"{QUEUED[pending['action']]} under way (queued {queued})"
    if pending:
        return "warning", (f"The {pending.get('action')} queued {_ago(pending.get('since'), now)} "
                           "has not run: is a worker running?")
    if phase == "expired":
        return "error", f"Expired {_ago(state.get('expires_at'), now)}"
    if phase == "active" and expires is not None:
        left = (expires - now).total_seconds()
        if error:
            return "warning", (f"Expires in {span(left)}; the last {error.get('action')} failed: "
                               f"{error.get('message')}")
        if left < WARN_BEFORE_SECONDS:
            return "warning", f"Expires in {span(left)}"
        return "ok", f"Healthy: expires in {span(left)}"
    if state.get("wanted"):
        return "error", f"Lost: re-creating it failed: {error.get('message', '')}"
    if error:
        return "error", f"The last {error.get('action')} failed: {error.get('message')}"
    return "none", "Not registered"


def status(info: IntegrationInfo) -> dict[str, Any]:
    """The subscription as the card and the API show it (times are ISO 8601, UTC)."""
    now = utcnow()
    state = load(info)
    expires = parse_time(state.get("expires_at"))
    pending = state.get("pending") if isinstance(state.get("pending"), dict) else None
    if pending and pending_live(state, now):
        phase = PHASES.get(pending.get("action"), "pending")
    elif state.get("id"):
        phase = "active" if expires is not None and expires > now else "expired"
    else:
        phase = "not_registered"
    level, summary = _health(state, phase, now)
    note = state_get(info, "bc", "notification") or {}
    handshake = state_get(info, "bc", "handshake") or {}
    dropped = counters(info, CLIENT_STATE_CHANNEL).get("refused")
    unreadable = counters(info, MALFORMED_CHANNEL).get("refused")
    _access, missing = access_for(info)
    return {
        "integration": info.code, "status": phase, "health": level, "summary": summary,
        "subscription": {
            "id": state.get("id"), "expiration_date_time": state.get("expires_at"),
            "etag": state.get("etag"), "resource": state.get("resource"),
            "notification_url": state.get("notification_url"),
            "registered_at": state.get("registered_at"), "renewed_at": state.get("renewed_at"),
            "renewals": state.get("renewals", 0),
        } if state.get("id") else None,
        "pending": {k: pending.get(k) for k in ("action", "since", "by")} if pending else None,
        "last_error": state.get("last_error"), "last_ok": state.get("last_ok"),
        # When the scheduler tries again (renewals and re-creates; a failed Register is not).
        "retry_at": state.get("retry_at") if state.get("last_error") and state.get("wanted")
        else None,
        "last_notification_at": note.get("at"), "last_notification": note or None,
        "last_handshake_at": handshake.get("at"),
        "dropped_client_state": dropped.count if dropped else 0,
        "dropped_unreadable": unreadable.count if unreadable else 0,
        "expansion": state_get(info, "bc", "expansion"),
        "missing_settings": [name for name, _ in missing],
        "notification_url": state.get("notification_url") or notification_url(info),
    }


def render_panel(info: IntegrationInfo) -> str:
    """The card panel: subscription, health, buttons, dropped items and recent deliveries."""
    now = utcnow()
    facts = status(info)
    used = any(facts[name] for name in (
        "subscription", "pending", "last_error", "last_ok", "last_notification_at",
        "dropped_client_state", "dropped_unreadable")) or any(
        info.setting(name) for name in ("bc_tenant", "bc_company", "bc_resource", "bc_client_id"))
    return render_template(
        "bc/panel.html", info=info, s=facts, used=used,
        can_edit=current_user.is_authenticated and current_user.has_role(Role.AUTHOR.value),
        expires_in=_until(facts["subscription"], now),
        ago={name: _ago(facts[name], now) for name in
             ("last_notification_at", "last_handshake_at")},
        deliveries=recent_deliveries(info, CHANNEL, SOURCE, limit=20) if used else [],
        shown=shown)


def _until(subscription: dict[str, Any] | None, now: datetime) -> str | None:
    expires = parse_time((subscription or {}).get("expiration_date_time"))
    if expires is None:
        return None
    left = (expires - now).total_seconds()
    return f"in {span(left)}" if left > 0 else f"{span(-left)} ago"


def _integration(code: str) -> IntegrationInfo | None:
    """The integration, or None (the callers answer 404)."""
    return find_integration(code)


@bp.post("/<code>/subscription/<action>")
@requires_role(Role.AUTHOR)
def card_action(code: str, action: str) -> Any:
    """Register, Renew now or Unregister from the card: queue it, then back to the card."""
    info = _integration(code)
    if info is None or action not in PHASES:
        abort(404, description="No such integration or subscription action.")
    try:
        request_action(info, action, actor_name())
    except SubscriptionError as error:
        fields = "; ".join(f"{d['path']}: {d['message']}" for d in error.details or [])
        flash(f"{error.message}{'. ' + fields if fields else ''}", "danger")
    else:
        flash(f"{QUEUED[action]} queued; this panel shows how it goes.", "info")
    return redirect(url_for("integrations.card", code=info.code) + "#panel-bc")


@bp.get("/<code>/subscription/status")
def card_status(code: str) -> Any:
    """The subscription's status as JSON, for the panel to follow an action under way."""
    info = _integration(code)
    if info is None:
        return json_error(404, "not_found", f"integration {code!r} does not exist")
    return jsonify(status(info))


def _api_action(code: str, action: str) -> Response | tuple[Response, int]:
    info = _integration(code)
    if info is None:
        return json_error(404, "not_found", f"integration {code!r} does not exist")
    try:
        request_action(info, action, actor_name())
    except SubscriptionError as error:
        return json_error(error.status, error.code, error.message, error.details)
    return jsonify(status(info)), 202


@api_bp.get("/<code>/bc/subscription")
def api_status(code: str) -> Any:
    """GET the subscription's status."""
    info = _integration(code)
    if info is None:
        return json_error(404, "not_found", f"integration {code!r} does not exist")
    return jsonify(status(info))


@api_bp.post("/<code>/bc/subscription")
@requires_role(Role.AUTHOR)
def api_register(code: str) -> Any:
    """Queue the registration (202); follow it with GET."""
    return _api_action(code, "register")


@api_bp.post("/<code>/bc/subscription/renew")
@requires_role(Role.AUTHOR)
def api_renew(code: str) -> Any:
    """Queue a renewal now (202)."""
    return _api_action(code, "renew")


@api_bp.delete("/<code>/bc/subscription")
@requires_role(Role.AUTHOR)
def api_unregister(code: str) -> Any:
    """Queue the unregistration (202)."""
    return _api_action(code, "unregister")
