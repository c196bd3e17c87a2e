"""The JSON API under /api/v1: bearer-token authentication, JSON errors."""

from typing import Any

from flask import Blueprint

from ..security import api_error
from ..services.errors import ServiceError

bp = Blueprint("api", __name__, url_prefix="/api/v1")


@bp.errorhandler(ServiceError)
def service_error(error: ServiceError) -> Any:
    """Every expected failure of a service becomes the documented JSON error with its status."""
    return api_error(error.status, error.code, error.message, error.details)


from . import runtime, views  # noqa: E402,F401  (modules register routes on bp)
