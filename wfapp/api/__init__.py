"""The JSON API under /api/v1: bearer-token authentication, JSON errors."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, request
from werkzeug.exceptions import HTTPException

from ..engine import RuleError
from ..extensions import db
from ..security import api_error, database_unavailable
from ..services.errors import NotFound, ServiceError, ValidationFailed, is_unavailable

bp = Blueprint("api", __name__, url_prefix="/api/v1")


@bp.before_request
def refuse_nul_characters() -> None:
    """A NUL character cannot be stored (PostgreSQL refuses it): 404 in a path, 422 in a query."""
    for name, value in (request.view_args or {}).items():
        if isinstance(value, str) and "\x00" in value:
            raise NotFound(f"{name} {value!r} does not exist")
    bad = [RuleError(key, "must not contain NUL characters")
           for key, value in request.args.items(multi=True) if "\x00" in key + value]
    if bad:
        raise ValidationFailed(bad)


@bp.errorhandler(ServiceError)
def service_error(error: ServiceError) -> Any:
    """Every expected failure of a service becomes the documented JSON error with its status."""
    db.session.rollback()  # whatever the refused change touched is not written
    return api_error(error.status, error.code, error.message, error.details)


@bp.errorhandler(Exception)
def unexpected_error(error: Exception) -> Any:
    """A bug still answers in the API's JSON shape (and is logged with its traceback)."""
    if is_unavailable(error):
        return database_unavailable(error)
    if isinstance(error, HTTPException):
        response = api_error(error.code or 500,
                             (error.name or "error").lower().replace(" ", "_"),
                             error.description or error.name)
        for name, value in error.get_headers():
            if name.lower() != "content-type":  # keep Allow, Retry-After, WWW-Authenticate
                response.headers[name] = value
        return response
    current_app.logger.exception("API request failed")
    db.session.rollback()  # a failed flush must not poison the rest of this app context
    return api_error(500, "internal_error", "an unexpected error happened; it has been logged")


from . import actions, alerts, bulk, openapi, runtime, views  # noqa: E402,F401  (modules register routes on bp)
