"""Start page, header search and error pages."""

from flask import Blueprint

bp = Blueprint("main", __name__)

from . import views  # noqa: E402,F401
