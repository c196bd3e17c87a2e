"""`POST /hooks/<integration>`: check a webhook delivery, then store it as one event.

The checks run in a fixed order and the first that fails answers: unknown integration 404,
webhook disabled or no secret 403, client address not allowed 403, body too large 413,
timestamp 401, signature 401, body not a JSON object 422, no record key 422. Then the event is
stored: 202 once committed, 200 for a redelivery. A database failure answers 503 (the sender
retries); no input answers 500. Refusals and duplicates go to the delivery log.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flask import Blueprint, Response, request
from werkzeug.exceptions import HTTPException

from wfapp.plugin_api import (
    MISSING,
    InputError,
    IntegrationChanged,
    IntegrationInfo,
    NewEvent,
    StorageUnavailable,
    find_integration,
    inbound,
    json_error,
    parse_json,
    record_delivery,
    resolve_path,
    signing,
    store_event_now,
    utcnow,
)

from ._webhook_settings import DEFAULT_MAX_BYTES, allow_list

log = logging.getLogger(__name__)
SOURCE = "on_webhook"
CHANNEL = "webhook"
MAX_RECORD_KEY = 200
READ_CHUNK = 64 * 1024

bp = Blueprint("on_webhook", __name__, template_folder="templates")


class Refused(Exception):
    """A delivery that cannot be accepted: its status, error code, message and details."""

    def __init__(self, status: int, code: str, message: str, details: Any = None,
                 key: str = "") -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details, self.key = (
            status, code, message, details, key)


@dataclass(frozen=True)
class Verified:
    """What the signature check vouches for: the delivery's dedupe key (None: from the body)."""

    dedupe_key: str | None


def _secret_keys(info: IntegrationInfo, scheme: str) -> list[str]:
    """The secrets a signature may be made with: the current one, and the previous one while
    its grace period lasts."""
    current, previous, rotated_at = info.secret_with_previous("webhook_secret")
    if not current:
        raise Refused(403, "no_secret", "no webhook secret is configured for this integration; "
                      "set one on its card (Generate new secret) or through the API")
    hours = float(info.setting("webhook_secret_grace_hours", 24) or 0)
    in_grace = bool(previous) and rotated_at is not None and \
        utcnow() - rotated_at < timedelta(hours=hours)
    if scheme != "standard":
        return [current, previous] if in_grace else [current]  # type: ignore[list-item]
    try:
        keys: list[Any] = [signing.parse_secret(current)]
    except ValueError as error:
        raise Refused(403, "bad_secret", f"the stored webhook secret {error}; the Standard "
                      "Webhooks scheme needs a whsec_ secret: generate a new one") from None
    if in_grace:
        # A replaced secret that was not a whsec_ one cannot sign: only the current one counts.
        with suppress(ValueError):
            keys.append(signing.parse_secret(previous))  # type: ignore[arg-type]
    return keys


class Body:
    """The request body, read at most once and never more than a limit: Content-Length is
    checked first, then at most limit+1 bytes are read (a chunked body has no length), so
    nothing unbounded is buffered. A second `read` (a fresh copy of the settings may allow
    more) goes on where the first stopped."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.done = False

    def read(self, limit: int) -> bytes:
        """The whole body if it has at most `limit` bytes; Refused (413, 400) otherwise."""
        length = request.content_length
        if length is not None and length > limit:
            raise Refused(413, "too_large", f"the body has {length} bytes; this integration "
                          f"accepts at most {limit}")
        try:
            stream = request.stream
            while not self.done and self.size <= limit:
                chunk = stream.read(min(READ_CHUNK, limit + 1 - self.size))
                if not chunk:
                    self.done = True
                    break
                self.chunks.append(chunk)
                self.size += len(chunk)
        except HTTPException as error:  # Werkzeug's own limit, a broken chunked encoding
            if error.code == 413:
                raise Refused(413, "too_large", "the body is larger than this server accepts"
                              ) from None
            raise Refused(400, "unreadable_body", "the body could not be read") from None
        except (OSError, ValueError):
            raise Refused(400, "unreadable_body", "the body could not be read") from None
        if self.size > limit:
            raise Refused(413, "too_large", f"the body is larger than {limit} bytes, the most "
                          "this integration accepts")
        if len(self.chunks) > 1:
            self.chunks = [b"".join(self.chunks)]
        return self.chunks[0] if self.chunks else b""


def _header(name: str) -> str | None:
    return request.headers.get(name)


def _verify_standard(keys: list[Any], body: bytes) -> Verified:
    msg_id = _header("webhook-id")
    try:
        signing.verify_standard(keys, msg_id, _header("webhook-timestamp"),
                                _header("webhook-signature"), body)
    except signing.SignatureError as error:
        raise Refused(401, "bad_signature", str(error), key=_printable(msg_id)) from None
    return Verified(f"wh:{msg_id}")


def _verify_hmac(info: IntegrationInfo, keys: list[Any], body: bytes) -> Verified:
    stamp_header = info.setting("webhook_hmac_timestamp_header")
    stamp = ""
    header = info.setting("webhook_hmac_header") or ""
    dedupe_header = info.setting("webhook_dedupe_header")
    key = _printable(_header(dedupe_header)) if dedupe_header else ""
    try:
        if stamp_header:
            stamp = str(signing.check_timestamp(
                _header(stamp_header), header=stamp_header,
                tolerance=float(info.setting("webhook_hmac_tolerance_seconds", 300))))
        content = signing.signed_content(
            info.setting("webhook_hmac_signed_content") or "{body}", body, stamp)
        signing.verify_hmac(keys, content, _header(header),
                            algorithm=info.setting("webhook_hmac_algorithm") or "sha256",
                            encoding=info.setting("webhook_hmac_encoding") or "hex",
                            prefix=info.setting("webhook_hmac_prefix") or "", header=header)
    except signing.SignatureError as error:
        raise Refused(401, "bad_signature", str(error), key=key) from None
    if dedupe_header:
        value = _header(dedupe_header)
        if not value or len(value) > signing.MAX_ID_LENGTH or "\x00" in value:
            raise Refused(422, "no_dedupe_key", f"the {dedupe_header} header is missing or "
                          f"longer than {signing.MAX_ID_LENGTH} characters",
                          [{"path": f"headers.{dedupe_header}", "message": "is required"}])
        return Verified(f"wh:{value}")
    return Verified(None)


def _printable(value: str | None) -> str:
    """A header value as the delivery log may show it."""
    return "".join(c for c in (value or "")[:200] if c.isprintable())


def _text_at(payload: Mapping[str, Any], path: str, what: str) -> str:
    """The string or number at a payload path, for a record or dedupe key; Refused otherwise."""
    value = resolve_path(payload, path)
    problem = ""
    if value is MISSING or value is None or value == "":
        problem = "is missing"
    elif isinstance(value, bool) or not isinstance(value, str | int | float):
        problem = "must be a string or a number"
    elif len(str(value)) > MAX_RECORD_KEY:
        problem = f"is longer than {MAX_RECORD_KEY} characters"
    if problem:
        raise Refused(422, f"no_{what}", f"the payload's {path} ({what.replace('_', ' ')}) "
                      f"{problem}", [{"path": path, "message": problem}])
    return str(value)


def _event_type(payload: Mapping[str, Any], path: str) -> str:
    value = resolve_path(payload, path) if path else MISSING
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return ""


def receive(code: str) -> tuple[Response, int] | Response:
    """Check one delivery in the documented order and store it as an event."""
    # This process's copy of the integration and its secret (no read before verifying): the
    # endpoint runs per delivery, and the reads and the decryption cost more than the insert.
    # A copy another process made stale is caught when storing (IntegrationChanged) or, for
    # a refusal, by comparing versions; then everything is checked again on a fresh copy.
    info = find_integration(code, cached=True)
    body = Body()
    while info is not None:
        try:
            return _accept(info, body)
        except Refused as refusal:
            if info.cached:
                fresh = find_integration(code)
                if fresh is None or fresh.version != info.version:
                    info = fresh
                    continue
            record_delivery(info, CHANNEL, "refused", refusal.message,
                            status_code=refusal.status, key=refusal.key)
            return json_error(refusal.status, refusal.code, refusal.message, refusal.details)
        except IntegrationChanged:
            info = find_integration(code)  # fresh: not cached, so no second round
    return json_error(404, "not_found", f"integration {code!r} does not exist")


def _accept(info: IntegrationInfo, reader: Body) -> tuple[Response, int] | Response:
    if not info.enabled:
        raise Refused(403, "disabled", f"integration {info.code} is disabled")
    if not info.setting("webhook_enabled", False):
        raise Refused(403, "disabled", f"webhooks are disabled for {info.code}; turn on "
                      "Webhook Enabled on its card")
    scheme = info.setting("webhook_signature_scheme") or "standard"
    keys = _secret_keys(info, scheme)
    allowed = info.setting("webhook_allowed_ips") or ""
    if allowed and not allow_list(allowed).allows(request.remote_addr):
        raise Refused(403, "ip_not_allowed", f"the client address {request.remote_addr} is not "
                      "in this integration's allow-list")
    body = reader.read(int(info.setting("webhook_max_bytes", DEFAULT_MAX_BYTES)))
    verified = _verify_standard(keys, body) if scheme == "standard" else \
        _verify_hmac(info, keys, body)
    try:
        payload = parse_json(body)
    except InputError as error:
        raise Refused(422, "invalid_body", f"{error.path} {error.message}",
                      [{"path": error.path, "message": error.message}]) from None
    if not isinstance(payload, dict):
        raise Refused(422, "invalid_body", "body must be a JSON object",
                      [{"path": "body", "message": "must be a JSON object"}])
    record_key = _text_at(payload, info.setting("record_key_path") or "id", "record_key")
    dedupe = verified.dedupe_key
    if dedupe is None:
        path = info.setting("webhook_dedupe_path")
        dedupe = "wh:" + (_text_at(payload, path, "dedupe_key") if path else
                          "sha256:" + hashlib.sha256(body).hexdigest())
    event = NewEvent(SOURCE, _event_type(payload, info.setting("event_type_path") or ""),
                     record_key, None, payload, dedupe)
    stored = store_event_now(info, event)
    if not stored.ids:
        record_delivery(info, CHANNEL, "duplicate", "redelivery of an accepted webhook",
                        status_code=200, key=dedupe[3:])
        return {"duplicate": True}, 200  # type: ignore[return-value]
    # Built directly (what jsonify would send): this answer goes out on every delivery.
    return Response(b'{"event_id":%d}\n' % stored.ids[0], 202, mimetype="application/json")


@bp.post("/hooks/<code>")
@inbound
def hook(code: str) -> Any:
    """A webhook delivery for an integration (public: it authenticates by signature)."""
    try:
        return receive(code)
    except StorageUnavailable as error:
        log.warning("webhook for %s not stored: %s", code, error)
        response = json_error(503, "unavailable", "the event could not be stored right now; "
                              "send it again later")
        response.headers["Retry-After"] = "30"
        return response
