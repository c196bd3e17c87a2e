"""The start page, the header search and the error pages."""

from __future__ import annotations

from typing import Any

from flask import jsonify, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from ..security import api_error, is_api_request
from ..services.search import search
from . import bp


@bp.route("/")
def index() -> Response:
    """The start page is the Integrations list, where the product's navigation begins."""
    return redirect(url_for("integrations.index"))


def _hits(query: str) -> list[dict[str, str]]:
    return [
        {"kind": h.kind, "title": h.title, "subtitle": h.subtitle,
         "url": url_for(h.endpoint, **dict(h.args))}
        for h in search(query)
    ]


@bp.route("/search")
def search_page() -> str | Response:
    """Search results; a single hit opens directly, as Business Central's search does."""
    query = request.args.get("q", "").strip()
    hits = _hits(query)
    if len(hits) == 1 and request.args.get("go"):
        return redirect(hits[0]["url"])
    return render_template("main/search.html", query=query, hits=hits)


@bp.route("/search.json")
def search_json() -> Response:
    """Suggestions for the header search box as the user types."""
    return jsonify({"items": _hits(request.args.get("q", ""))})


@bp.app_errorhandler(HTTPException)
def http_error(error: HTTPException) -> Any:
    """Errors as a page for people, as JSON for the API."""
    if is_api_request():
        return api_error(error.code or 500, (error.name or "error").lower().replace(" ", "_"),
                         error.description or error.name)
    return render_template("errors/error.html", error=error), error.code


@bp.app_context_processor
def navigation() -> dict[str, Any]:
    """The main menu, shown on every page."""
    return {"nav_items": [("integrations.index", "Integrations"), ("workflows.index", "Workflows"),
                          ("instances.index", "Instances"), ("events.index", "Events"),
                          ("runs.index", "Runs")]}
