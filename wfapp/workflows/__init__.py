"""The Workflows pages: the list, the Workflow Card, states, transitions, import and export."""

from flask import Blueprint

bp = Blueprint("workflows", __name__, url_prefix="/workflows")

from . import simulation, states, transitions, views  # noqa: E402,F401  (modules register routes on bp)
