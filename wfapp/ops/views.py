"""Health, readiness and metrics: no login (probes and scrapers have none); /metrics has its own
access rule (METRICS_TOKEN, METRICS_ALLOW)."""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any

from flask import current_app, jsonify, request
from werkzeug.wrappers import Response

from ..metrics import collect, exposition
from ..security import api_error, public
from ..services.health import readiness
from ..services.metrics import CORE_COLLECTORS
from ..services.registry import get_registry
from . import bp

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


@bp.get("/healthz")
@public
def healthz() -> Any:
    """The process answers (nothing else is checked: a liveness probe)."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
@public
def readyz() -> Any:
    """200 when the database and Redis answer and migrations are at head; 503 naming what not."""
    checks = readiness()
    failed = sorted(name for name, result in checks.items() if result != "ok")
    body = {"status": "unavailable" if failed else "ready", "failed": failed, "checks": checks}
    response = jsonify(body)
    response.status_code = 503 if failed else 200
    return response


def _allowed() -> str | None:
    """None when this request may read /metrics; else why not."""
    token = current_app.config.get("METRICS_TOKEN") or ""
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if token and scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token):
        return None
    allow = current_app.config.get("METRICS_ALLOW")
    if isinstance(allow, str):
        allow = [part.strip() for part in allow.split(",") if part.strip()]
    try:
        address = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return "unknown client address"
    for network in allow or ():
        if address in ipaddress.ip_network(network, strict=False):
            return None
    return (f"{address} is not in METRICS_ALLOW" +
            (" and sent no valid METRICS_TOKEN" if token else ""))


@bp.get("/metrics")
@public
def metrics() -> Any:
    """Prometheus text exposition of wfapp's figures (see docs/operations.md)."""
    refused = _allowed()
    if refused is not None:
        return api_error(403, "forbidden", f"metrics: {refused}")
    families = collect([*CORE_COLLECTORS, *get_registry().metrics])
    return Response(exposition(families), mimetype=None, content_type=PROMETHEUS_TEXT)
