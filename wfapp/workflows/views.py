"""Workflows list and Workflow Card."""

from __future__ import annotations

from flask import render_template

from ..services.workflows import list_workflows
from . import bp


@bp.route("/")
def index() -> str:
    """The Workflows list."""
    return render_template("workflows/index.html", rows=list_workflows())


@bp.route("/new")
def new() -> str:
    """Placeholder."""
    return ""


@bp.route("/import")
def import_file() -> str:
    """Placeholder."""
    return ""


@bp.route("/<code>")
def card(code: str) -> str:
    """Placeholder."""
    return ""
