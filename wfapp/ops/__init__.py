"""Operations endpoints: /healthz, /readyz and /metrics, for load balancers and Prometheus."""

from flask import Blueprint

bp = Blueprint("ops", __name__)

from . import views  # noqa: E402,F401  (views register routes on bp)
