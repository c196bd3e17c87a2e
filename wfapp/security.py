"""Authentication and roles: every page but the public ones needs a login, views need a role."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import (
    Flask,
    abort,
    current_app,
    flash,
    g,
    has_request_context,
    jsonify,
    redirect,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface
from flask_login import current_user, logout_user

from .extensions import db, login_manager
from .models import Role, User

F = TypeVar("F", bound=Callable[..., Any])


def public(view: F) -> F:
    """Mark a view as reachable without logging in (login page, webhook endpoints)."""
    view._wfapp_public = True  # type: ignore[attr-defined]
    return view


def is_api_request() -> bool:
    """True for the JSON API, which authenticates by bearer token and answers in JSON."""
    return request.blueprint == "api" or request.path.startswith("/api/")


def api_error(status: int, code: str, message: str, details: Any = None) -> Any:
    """A JSON error in the documented shape."""
    response = jsonify({"error": {"code": code, "message": message, "details": details}})
    response.status_code = status
    return response


UNAVAILABLE_MESSAGE = ("The database cannot be reached right now. Nothing was changed; try "
                       "again in a moment.")


def database_unavailable(error: BaseException) -> Any:
    """503 with a clear message (JSON for the API and inbound endpoints, a plain page else).

    The page does not extend base.html: rendering the header would ask the database for the
    logged-in user again.
    """
    current_app.logger.warning("database unavailable: %s", error.__class__.__name__)
    with contextlib.suppress(Exception):  # the connection may be gone; the pool replaces it
        db.session.rollback()
    if is_api_request() or not request.accept_mimetypes.accept_html:
        response = api_error(503, "unavailable", UNAVAILABLE_MESSAGE)
    else:
        response = current_app.make_response((standalone_page(UNAVAILABLE_MESSAGE), 503))
    response.headers["Retry-After"] = "5"
    return response


def standalone_page(message: str, status: int = 503) -> str:
    """An error page that needs nothing else: no context processors, so no user lookup."""
    template = current_app.jinja_env.get_template("errors/unavailable.html")
    return template.render(message=message, status=status, request=request, url_for=url_for)


def current_actor() -> User | None:
    """The user behind this request: the bearer token's for the API, the session's otherwise."""
    if is_api_request():
        return g.get("api_user")
    return current_user if current_user.is_authenticated else None


def actor_name() -> str:
    """The name recorded in history and the audit log for this request's user."""
    user = current_actor()
    return user.username if user is not None else "anonymous"


def requires_role(role: Role) -> Callable[[F], F]:
    """Refuse the view (403) unless the user's role includes `role`."""
    def decorator(view: F) -> F:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            user = current_actor()
            if user is None or not user.has_role(role):
                if is_api_request():
                    return api_error(403, "forbidden", f"this needs the {role.value} role")
                abort(403, description=f"This needs the {role.value} role.")
            return view(*args, **kwargs)
        wrapped._wfapp_role = role  # type: ignore[attr-defined]
        return wrapped  # type: ignore[return-value]
    return decorator


def _authenticate() -> Any:
    """Before each request: bearer token for the API, session login for pages."""
    endpoint = request.endpoint
    if endpoint is None or endpoint == "static" or endpoint.endswith(".static"):
        return None
    view = current_app.view_functions.get(endpoint)
    if getattr(view, "_wfapp_public", False):
        return None
    if is_api_request():
        return _authenticate_token()
    if not current_user.is_authenticated:
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    g.actor = current_user.username
    return _check_idle()


def _authenticate_token() -> Any:
    """The API's bearer token; failures from one client address are throttled."""
    from .services.users import user_for_token
    from .throttle import get_throttle, minutes

    throttle = get_throttle()
    address = request.remote_addr or "unknown"
    wait = throttle.blocked_for(throttle.rules.token, "token", address)
    if wait is not None:
        response = api_error(429, "too_many_requests",
                             f"too many requests with invalid API tokens from {address}; "
                             f"try again in {minutes(wait)}")
        response.headers["Retry-After"] = str(wait)
        return response
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    user = user_for_token(token.strip()) if scheme.lower() == "bearer" and token else None
    if user is None:
        if token:
            throttle.failed(throttle.rules.token, "token", address)
        return api_error(401, "unauthorized",
                         "send a valid API token as 'Authorization: Bearer <token>' (an "
                         "expired or revoked token is no longer valid)")
    g.api_user = user
    g.actor = user.username
    return None


def _check_idle() -> Any:
    """End a session that saw no request for SESSION_IDLE_MINUTES; else note this one."""
    limit = float(current_app.config.get("SESSION_IDLE_MINUTES") or 0) * 60
    now = time.time()
    seen = session.get("seen")
    if limit and isinstance(seen, int | float) and now - seen > limit:
        logout_user()
        session.clear()
        flash(f"Your session ended after {limit / 60:g} minutes without activity; log in "
              "again.", "info")
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    if not isinstance(seen, int | float) or now - seen > 30:
        session["seen"] = int(now)  # written at most every 30 s, not on every request
    return None


class SessionInterface(SecureCookieSessionInterface):
    """Signed-cookie sessions whose cookie is Secure whenever the request came over HTTPS."""

    def open_session(self, app: Flask, request: Any) -> Any:
        """No session (a null one) for paths only inbound endpoints serve: machines send no
        cookie, and parsing and signing one costs as much as a webhook's insert."""
        from .inbound import inbound_prefixes

        prefixes = inbound_prefixes(app)
        if prefixes and request.path.startswith(prefixes):
            return None
        return super().open_session(app, request)

    def get_cookie_secure(self, app: Flask) -> bool:
        """Secure over HTTPS (directly or as TRUSTED_PROXIES report it), or when forced."""
        return bool(app.config.get("SESSION_COOKIE_SECURE")) or (
            has_request_context() and request.is_secure)


def load_user(user_id: str) -> User | None:
    """The session's user, if still active and the session's generation is current."""
    ident, _, generation = user_id.partition(":")
    if not ident.isdigit() or not generation.isdigit() or len(ident) > 18:
        return None  # a session from before generations, or garbage: log in again
    user = db.session.get(User, int(ident))
    if user is None or not user.active or int(generation) != (user.session_generation or 0):
        return None
    return user


CSP = {
    "default-src": "'self'",
    "script-src": "'self'",
    # Bootstrap's components set element styles from script; no inline <script> anywhere.
    "style-src": ["'self'", "'unsafe-inline'"],
    "img-src": ["'self'", "data:"],
    "object-src": "'none'",
    "base-uri": "'self'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}


def init_app(app: Flask) -> None:
    """Attach login handling, sessions and the security headers to the app."""
    from flask_talisman import Talisman

    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message_category = "info"
    login_manager.user_loader(load_user)
    app.session_interface = SessionInterface()
    # Headers on every response. HTTPS itself is the proxy's job (force_https off); HSTS is
    # only sent on requests that came over HTTPS, as the standard requires.
    Talisman(app, force_https=False, frame_options="DENY", content_security_policy=CSP,
             referrer_policy="same-origin", session_cookie_secure=False,
             session_cookie_http_only=True, strict_transport_security=True,
             strict_transport_security_max_age=31_536_000)
    app.before_request(_authenticate)
