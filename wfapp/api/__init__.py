"""The JSON API under /api/v1: bearer-token authentication, JSON errors."""

from flask import Blueprint

bp = Blueprint("api", __name__, url_prefix="/api/v1")

from . import views  # noqa: E402,F401
