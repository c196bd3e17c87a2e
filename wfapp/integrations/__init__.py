"""The Integrations pages."""

from flask import Blueprint

bp = Blueprint("integrations", __name__, url_prefix="/integrations")

from . import views  # noqa: E402,F401
