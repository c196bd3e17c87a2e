"""The demo's stand-in fulfilment API, served by wfapp itself so `make run` needs no outside system.

`POST /demo/fulfilment/orders/<key>` answers like a fulfilment API would: an order id for an
order it accepts, 422 for one over its credit limit (total above 800), and now and then a 503
with `Retry-After` (DEMO_RECEIVER_FLAKY, a share of requests) so retries show on the Actions
page. A request repeated with the same `Idempotency-Key` gets the same answer. Off unless
DEMO_RECEIVER is set (`make run` sets it): then every request is a 404.
"""

from __future__ import annotations

import random
import threading
import zlib

from flask import Blueprint, abort, current_app, jsonify, request
from werkzeug.wrappers import Response

from .extensions import csrf
from .security import public

bp = Blueprint("demo_receiver", __name__, url_prefix="/demo/fulfilment")
CREDIT_LIMIT = 800
_seen: dict[str, tuple[dict[str, object], int]] = {}
_lock = threading.Lock()


@bp.post("/orders/<key>")
@public
@csrf.exempt
def submit(key: str) -> tuple[Response, int] | tuple[Response, int, dict[str, str]]:
    """Accept (or refuse) one order, as the demo's fulfilment API."""
    if not current_app.config.get("DEMO_RECEIVER"):
        abort(404)
    replay = request.headers.get("Idempotency-Key", "")[:64]
    with _lock:
        if replay and replay in _seen:
            kept, code = _seen[replay]
            return jsonify(kept), code
    if random.random() < float(current_app.config.get("DEMO_RECEIVER_FLAKY", 0.2)):
        return jsonify({"error": "busy, try again"}), 503, {"Retry-After": "2"}
    order = request.get_json(silent=True) or {}
    total = order.get("total")
    if isinstance(total, int | float) and total > CREDIT_LIMIT:
        body: dict[str, object] = {"error": f"order total {total} is over the credit limit "
                                            f"of {CREDIT_LIMIT}"}
        status = 422
    else:
        body, status = {"id": f"FUL-{zlib.crc32(key.encode()) % 1_000_000:06d}",
                        "status": "accepted"}, 201
    with _lock:
        if replay:
            if len(_seen) > 10_000:
                _seen.clear()
            _seen[replay] = (body, status)
    return jsonify(body), status
