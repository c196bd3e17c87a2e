"""The Instances pages."""

from flask import Blueprint

bp = Blueprint("instances", __name__, url_prefix="/instances")

from . import views  # noqa: E402,F401
