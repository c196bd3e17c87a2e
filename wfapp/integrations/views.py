"""Integrations list and card."""

from __future__ import annotations

from flask import render_template

from ..services.integrations import list_integrations
from . import bp


@bp.route("/")
def index() -> str:
    """The Integrations list."""
    return render_template("integrations/index.html", rows=list_integrations())


@bp.route("/new")
def new() -> str:
    """Placeholder."""
    return ""


@bp.route("/<code>")
def card(code: str) -> str:
    """Placeholder."""
    return ""
