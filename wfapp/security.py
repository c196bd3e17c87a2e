"""Authentication and roles: every page but the public ones needs a login, views need a role."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Flask, abort, current_app, g, jsonify, redirect, request, url_for
from flask_login import current_user

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
        from .services.users import user_for_token

        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        user = user_for_token(token.strip()) if scheme.lower() == "bearer" and token else None
        if user is None:
            return api_error(401, "unauthorized",
                             "send a valid API token as 'Authorization: Bearer <token>'")
        g.api_user = user
        return None
    if not current_user.is_authenticated:
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    return None


def init_app(app: Flask) -> None:
    """Attach login handling to the app."""
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message_category = "info"

    @login_manager.user_loader
    def load_user(user_id: str) -> User | None:
        user = db.session.get(User, int(user_id))
        return user if user is not None and user.active else None

    app.before_request(_authenticate)
