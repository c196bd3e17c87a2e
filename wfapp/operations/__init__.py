"""Bulk operation pages: start one from a list's filter (after its dry run), watch, cancel."""

from flask import Blueprint

bp = Blueprint("operations", __name__, url_prefix="/operations")

from . import views  # noqa: E402,F401
