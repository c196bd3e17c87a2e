"""The Alerts page, the header badge, and the alert rules of the integration card."""

from flask import Blueprint

bp = Blueprint("alerts", __name__, url_prefix="/alerts")

from . import views  # noqa: E402,F401
