"""The Workflows pages."""

from flask import Blueprint

bp = Blueprint("workflows", __name__, url_prefix="/workflows")

from . import views  # noqa: E402,F401
