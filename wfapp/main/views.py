"""The start page, the header search and the error pages."""

from __future__ import annotations

from typing import Any, cast

from flask import abort, current_app, jsonify, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BuildError
from werkzeug.wrappers import Response

from ..extensions import db
from ..inbound import also_inbound
from ..security import api_error, database_unavailable, is_api_request, standalone_page
from ..services.errors import is_unavailable
from ..services.search import Hit, best_hit, search
from . import bp

MAX_QUERY = 200


@bp.route("/")
def index() -> Response:
    """The start page is the Integrations list, where the product's navigation begins."""
    return redirect(url_for("integrations.index"))


def _query() -> str:
    """The search text from `?q=`, trimmed and cut to a sane length."""
    return request.args.get("q", "").strip()[:MAX_QUERY]


def _found(query: str) -> list[tuple[Hit, str]]:
    """The hits this user may open, each with its URL (a page not built yet is left out)."""
    out = []
    for hit in search(query, role=current_user.role):
        try:
            out.append((hit, url_for(hit.endpoint, **cast(dict[str, Any], dict(hit.args)))))
        except BuildError:
            continue
    return out


def _as_dict(hit: Hit, url: str) -> dict[str, Any]:
    return {"kind": hit.kind, "title": hit.title, "subtitle": hit.subtitle, "url": url,
            "exact": hit.exact}


@bp.route("/search")
def search_page() -> str | Response:
    """Search results; with `go`, the only hit (or the only exact one) opens directly."""
    query = _query()
    found = _found(query)
    if request.args.get("go"):
        best = best_hit([hit for hit, _ in found])
        if best is not None:
            return redirect(next(url for hit, url in found if hit is best))
    return render_template("main/search.html", query=query,
                           hits=[_as_dict(hit, url) for hit, url in found])


@bp.route("/search.json")
def search_json() -> Response:
    """Suggestions for the header search box as the user types."""
    return jsonify({"items": [_as_dict(hit, url) for hit, url in _found(_query())]})


@bp.before_app_request
@also_inbound
def refuse_nul_in_paths() -> None:
    """A NUL character in a URL names nothing that can exist (no database stores one): 404."""
    if "\x00" in request.path or any(isinstance(v, str) and "\x00" in v
                                      for v in (request.view_args or {}).values()):
        abort(404, description="There is no such page.")


@bp.app_errorhandler(HTTPException)
def http_error(error: HTTPException) -> Any:
    """Errors as a page for people, as JSON for the API."""
    # Keep headers such as Allow (405) on both kinds of answer.
    headers = [(k, v) for k, v in error.get_headers() if k.lower() != "content-type"]
    if is_api_request():
        response = api_error(error.code or 500,
                             (error.name or "error").lower().replace(" ", "_"),
                             error.description or error.name)
        response.headers.extend(headers)
        return response
    return render_template("errors/error.html", error=error), error.code, headers


@bp.app_errorhandler(Exception)
def unexpected_error(error: Exception) -> Any:
    """The database being away answers 503 and recovers by itself; anything else is a 500."""
    if isinstance(error, HTTPException):
        return http_error(error)
    if is_unavailable(error):
        return database_unavailable(error)
    current_app.logger.exception("request failed")
    db.session.rollback()
    if is_api_request():
        return api_error(500, "internal_error", "an unexpected error happened; it has been "
                         "logged")
    return standalone_page("Something went wrong on our side; it has been logged. Nothing "
                           "was changed.", 500), 500


@bp.app_context_processor
def navigation() -> dict[str, Any]:
    """The main menu, shown on every page."""
    return {"nav_items": [("integrations.index", "Integrations"), ("workflows.index", "Workflows"),
                          ("instances.index", "Instances"), ("events.index", "Events"),
                          ("actions.index", "Actions"), ("runs.index", "Runs")]}
