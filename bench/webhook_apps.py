"""The two baselines of bench/webhooks.py, as small WSGI apps served by the same gunicorn:

    gunicorn -w 4 'bench.webhook_apps:noop'      a Flask endpoint that does nothing
    gunicorn -w 4 'bench.webhook_apps:minimal'   verify a Standard Webhooks signature, insert one
                                                 row (ON CONFLICT DO NOTHING), commit

`minimal` reads BENCH_DSN (a psycopg DSN) and BENCH_SECRET (the whsec_ secret).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time

from flask import Flask, jsonify, request

noop = Flask("noop")


@noop.post("/hooks/<code>")
def noop_hook(code: str):
    """Answer 202 without looking at the request."""
    return jsonify({"event_id": 0}), 202


minimal = Flask("minimal")
_state: dict = {}

TABLE = """CREATE TABLE IF NOT EXISTS bench_minimal_event (
    id BIGSERIAL PRIMARY KEY, dedupe_key TEXT NOT NULL UNIQUE, record_key TEXT NOT NULL,
    payload JSONB NOT NULL, received_at TIMESTAMPTZ NOT NULL DEFAULT now())"""


def _connection():
    conn = _state.get("conn")
    if conn is None or conn.closed:
        import psycopg

        conn = _state["conn"] = psycopg.connect(os.environ["BENCH_DSN"])
    return conn


def _key() -> bytes:
    if "key" not in _state:
        _state["key"] = base64.b64decode(os.environ["BENCH_SECRET"].removeprefix("whsec_"))
    return _state["key"]


@minimal.post("/hooks/<code>")
def minimal_hook(code: str):
    """Verify the signature, store one row, commit, answer 202 with its id."""
    body = request.get_data()
    msg_id = request.headers.get("webhook-id", "")
    stamp = request.headers.get("webhook-timestamp", "")
    if not stamp.isdigit() or abs(time.time() - int(stamp)) > 300:
        return jsonify({"error": "timestamp"}), 401
    expected = hmac.new(_key(), f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    given = [base64.b64decode(s.partition(",")[2])
             for s in request.headers.get("webhook-signature", "").split()]
    if not any(hmac.compare_digest(expected, g) for g in given):
        return jsonify({"error": "signature"}), 401
    payload = json.loads(body)
    conn = _connection()
    row = conn.execute(
        "INSERT INTO bench_minimal_event (dedupe_key, record_key, payload) VALUES (%s, %s, %s) "
        "ON CONFLICT (dedupe_key) DO NOTHING RETURNING id",
        (msg_id, str(payload["id"]), json.dumps(payload))).fetchone()
    conn.commit()
    if row is None:
        return jsonify({"duplicate": True}), 200
    return jsonify({"event_id": row[0]}), 202
