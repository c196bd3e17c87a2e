"""JSON API endpoints."""

from __future__ import annotations

from flask import jsonify
from werkzeug.wrappers import Response

from ..services.workflows import list_workflows
from . import bp


@bp.get("/workflows")
def workflows() -> Response:
    """List workflows."""
    return jsonify({"items": [r.__dict__ for r in list_workflows()], "next": None})
