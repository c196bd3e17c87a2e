"""On Scheduled Poll: the request — its templates, checked on save and filled per instance — and
the HTTP call, whose every failure becomes a reason instead of an exception."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from wfapp.plugin_api import MISSING, InputError, parse_json, resolve_path

PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
SECRET_NAME = r"[A-Za-z_][A-Za-z0-9_]{0,63}"
URL_NAMES = re.compile(r"record_key|run_id|vars\.[A-Za-z_]\w*|data\.[\w.-]+")
HEADER_NAMES = re.compile(rf"record_key|run_id|vars\.[A-Za-z_]\w*|data\.[\w.-]+|"
                          rf"secret\.{SECRET_NAME}")
HEADER_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}")
MAX_HEADERS = 50
MAX_HEADER_VALUE = 2000
MAX_URL = 8000
FAILED_TYPE = "poll.failed"
EXCERPT = 300
USER_AGENT = "wfapp-poll/1"
CHUNK = 64 * 1024


# --- checks on save -----------------------------------------------------------------------------


def check_url(url: str) -> list[tuple[str, str]]:
    """Errors of a URL template: http(s), a literal host, known placeholders."""
    errors = []
    literal = PLACEHOLDER.sub("x", url)
    parts = urlsplit(literal)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        errors.append(("url", "must be an http:// or https:// URL"))
    elif "{" in urlsplit(url).netloc:
        errors.append(("url", "placeholders may stand in the path and query, not in the host"))
    if any(c in url for c in "\r\n\t\x00 "):
        errors.append(("url", "must not contain spaces or control characters"))
    for name in PLACEHOLDER.findall(url):
        if name.startswith("secret."):
            errors.append(("url", f"{{{name}}}: secrets may stand in headers only (a URL ends "
                                  "up in logs and on the events page)"))
        elif not URL_NAMES.fullmatch(name):
            errors.append(("url", f"unknown placeholder {{{name}}}; use {{record_key}}, "
                                  "{run_id}, {vars.<name>} or {data.<field>}"))
    return errors


def check_headers(headers: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Errors of the header templates: names, values, placeholders."""
    errors = []
    if len(headers) > MAX_HEADERS:
        errors.append(("headers", f"at most {MAX_HEADERS} headers"))
    for key, value in headers.items():
        if not HEADER_TOKEN.fullmatch(str(key)):
            errors.append(("headers", f"{key!r} is not a valid header name"))
        if not isinstance(value, str):
            errors.append(("headers", f"header {key!r} must have a string value"))
            continue
        if len(value) > MAX_HEADER_VALUE:
            errors.append(("headers", f"header {key!r} must be at most {MAX_HEADER_VALUE} "
                                      "characters"))
        if any(c in value for c in "\r\n\x00"):
            errors.append(("headers", f"header {key!r} must not contain line breaks or NUL"))
        for name in PLACEHOLDER.findall(value):
            if not HEADER_NAMES.fullmatch(name):
                errors.append(("headers", f"header {key!r}: unknown placeholder {{{name}}}; "
                                          "use {record_key}, {run_id}, {vars.<name>}, "
                                          "{data.<field>} or {secret.<name>}"))
    return errors


def signature(config: Mapping[str, Any]) -> str:
    """The event type of a poll's answers: its method and URL template (at most 100 characters).

    A poll's event is evaluated against every poll transition leaving the state; only those
    whose request is this one can match it (two transitions that poll different URLs never
    fire on each other's answers).
    """
    text = f"{config.get('method') or 'GET'} {config.get('url') or ''}"
    if len(text) <= 100:
        return text
    return text[:86] + "…" + hashlib.sha256(text.encode()).hexdigest()[:13]


# --- filling in ---------------------------------------------------------------------------------


class TemplateError(ValueError):
    """A placeholder that cannot be filled for this instance."""


def _value(name: str, item: Any, secrets: Mapping[str, str]) -> str:
    if name == "record_key":
        if item.record_key is None:
            raise TemplateError("{record_key}: this instance has no record key (Per Run)")
        return str(item.record_key)
    if name == "run_id":
        if item.run_id is None:
            raise TemplateError("{run_id}: this instance has no run (Per Record)")
        return str(item.run_id)
    kind, _, path = name.partition(".")
    if kind == "secret":
        if path not in secrets:
            raise TemplateError(f"{{secret.{path}}}: integration {item.integration.code} has "
                                "no secret of that name")
        return secrets[path]
    source = item.vars if kind == "vars" else item.data
    value = resolve_path(dict(source), path)
    if value is MISSING or value is None:
        where = "variable" if kind == "vars" else "record field"
        raise TemplateError(f"{{{name}}}: the instance has no {where} {path!r}")
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def fill_url(template: str, item: Any) -> str:
    """The URL for one instance; every value is URL-encoded (a `/` or `?` in it stays data)."""
    url = PLACEHOLDER.sub(lambda m: quote(_value(m.group(1), item, {}), safe=""), template)
    if len(url) > MAX_URL:
        raise TemplateError(f"the filled-in URL is longer than {MAX_URL} characters")
    return url


def fill_headers(templates: Mapping[str, str], item: Any, secrets: Mapping[str, str]
                 ) -> dict[str, str]:
    """The headers for one instance; a value that would break the header line is refused."""
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    for key, template in templates.items():
        value = PLACEHOLDER.sub(lambda m: _value(m.group(1), item, secrets), template)
        if any(c in value for c in "\r\n\x00"):
            raise TemplateError(f"header {key}: a filled-in value contains a line break or NUL")
        headers[key] = value
    return headers


# --- the call -----------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one poll got: a payload, or the reason it failed."""

    payload: dict[str, Any] | None
    error: str | None
    status_code: int | None = None
    elapsed: float = 0.0


def _excerpt(raw: bytes) -> str:
    text = raw[:EXCERPT].decode("utf-8", "replace").replace("\x00", "")
    return " ".join(text.split())


def _read(response: Any, max_bytes: int, deadline: float) -> bytes | None:
    """The body, or None when it is larger than `max_bytes`; raises TimeoutError past deadline.

    `read1` returns as soon as some bytes arrive, so a server that drips its answer is cut off
    at the deadline (give or take one read timeout), not after every byte's own timeout.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = response.read1(CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > max_bytes:
            return None
        chunks.append(chunk)
        if time.monotonic() > deadline:
            raise TimeoutError


def perform(pool: urllib3.PoolManager, method: str, url: str, headers: Mapping[str, str],
            timeout: float, max_bytes: int) -> Outcome:
    """Make the request; never raises — a failure is an Outcome with its reason.

    Redirects are not followed (they would carry the headers, secrets included, elsewhere):
    a 3xx is a failure like any other non-2xx answer.
    """
    started = time.monotonic()
    try:
        # A non-ASCII value (a record key with accents) goes out as UTF-8, not Latin-1.
        wire: dict[str, Any] = {k: v if v.isascii() else v.encode("utf-8")
                                for k, v in headers.items()}
        response = pool.request(method, url, headers=wire, retries=False,
                                redirect=False, preload_content=False,
                                timeout=urllib3.Timeout(connect=timeout, read=timeout))
    except Exception as exc:  # noqa: BLE001 — every way a request can fail is a reason
        return Outcome(None, _reason(exc, timeout), None, time.monotonic() - started)
    body: bytes | None = None
    try:
        body = _read(response, max_bytes, started + timeout)
    except Exception as exc:  # noqa: BLE001
        response.close()  # a half-read connection must not go back to the pool
        return Outcome(None, _reason(exc, timeout), response.status,
                       time.monotonic() - started)
    finally:
        if body is None:
            response.close()
        response.release_conn()
    elapsed = time.monotonic() - started
    status = response.status
    if body is None:
        return Outcome(None, f"response larger than {max_bytes} bytes", status, elapsed)
    if not 200 <= status < 300:
        excerpt = _excerpt(body)
        return Outcome(None, f"HTTP {status}" + (f": {excerpt}" if excerpt else ""), status,
                       elapsed)
    if not body.strip():
        return Outcome({}, None, status, elapsed)  # 204, HEAD: an answer without a body
    try:
        value = parse_json(body)
    except InputError as exc:
        kind = response.headers.get("Content-Type") or "no content type"
        return Outcome(None, f"response is not JSON ({kind[:60]}): {exc.message}", status,
                       elapsed)
    payload = value if isinstance(value, dict) else {"value": value}
    return Outcome(payload, None, status, elapsed)


def _reason(exc: BaseException, timeout: float) -> str:
    """A short, stable sentence for a failed request."""
    # NewConnectionError is a ConnectTimeoutError in urllib3: ask for it first.
    if isinstance(exc, NewConnectionError):
        return "connection refused" if "refused" in str(exc).lower() else \
            f"cannot connect: {_short(exc)}"
    if isinstance(exc, TimeoutError | ReadTimeoutError | ConnectTimeoutError):
        return f"timed out after {timeout:g} s"
    if isinstance(exc, ProtocolError | HTTPError | OSError):
        return f"connection error: {_short(exc)}"
    return f"request failed: {type(exc).__name__}: {_short(exc)}"


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "reason", None) or exc)
    return text[:200]
