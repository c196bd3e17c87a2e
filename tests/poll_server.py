"""A real local HTTP server for poll tests: threaded, started by the test, one path per scenario.

- `/orders/<key>` answers `answers[key]` (default `{"status": "waiting"}`) as JSON;
- `/slow/<key>?s=<seconds>` the same after sleeping;
- `/status/<code>` that status with a short text body;
- `/text` HTML with status 200; `/huge` a 2 MiB JSON body; `/empty` 204; `/list` a JSON list;
  `/redirect` a 302 to `/orders/x`; `/nan` JSON with NaN (not JSON).

Every request is recorded (path, query, headers, time), and the server tracks how many requests
it serves at once, overall and per first path segment after `/t/<tag>/` when present.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.http_server import LocalServer, QuietHandler, Request, free_port

Seen = Request  # one request the server received


class _Handler(QuietHandler):
    server: PollServer  # type: ignore[assignment]

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        path = parts.path
        tag = ""
        if path.startswith("/t/"):
            _, _, tag, path = path.split("/", 3)
            path = "/" + path
        body = self.read_body()
        srv = self.server
        with srv.lock:
            srv.seen.append(Seen(self.command, self.path, dict(self.headers.items()),
                                 time.monotonic(), body, parse_qs(parts.query), tag))
            srv.active += 1
            srv.active_by_tag[tag] += 1
            srv.max_active = max(srv.max_active, srv.active)
            srv.max_by_tag[tag] = max(srv.max_by_tag[tag], srv.active_by_tag[tag])
        try:
            answer = self._answer(path, parse_qs(parts.query))
        finally:
            # Counted as active while it is being worked on, not while the answer goes out: a
            # client that reads the answer and at once asks again on another connection must
            # not look like one request too many.
            with srv.lock:
                srv.active -= 1
                srv.active_by_tag[tag] -= 1
        status, body, content_type, headers = answer
        self.send(status, body, content_type, headers)

    def _answer(self, path: str, query: dict[str, list[str]]
                ) -> tuple[int, bytes, str, dict[str, str] | None]:
        srv = self.server
        if srv.delay:
            time.sleep(srv.delay)
        json_type = "application/json"
        if path.startswith("/orders/") or path.startswith("/slow/"):
            if path.startswith("/slow/"):
                time.sleep(float(query.get("s", ["1"])[0]))
            key = unquote(path.split("/", 2)[2])
            body = json.dumps(srv.answers.get(key, {"status": "waiting"})).encode()
            return 200, body, json_type, None
        if path.startswith("/status/"):
            return int(path.split("/")[2]), b"upstream is unhappy", "text/plain", None
        if path == "/text":
            return 200, b"<html><body>maintenance</body></html>", "text/html", None
        if path == "/huge":
            return 200, b'{"pad": "' + b"x" * (2 * 1024 * 1024) + b'"}', json_type, None
        if path == "/empty":
            return 204, b"", json_type, None
        if path == "/list":
            return 200, b"[1, 2, 3]", json_type, None
        if path == "/nan":
            return 200, b'{"value": NaN}', json_type, None
        if path == "/redirect":
            return 302, b"", json_type, {"Location": "/orders/x"}
        return 404, b"no such scenario", "text/plain", None

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle


class PollServer(LocalServer):
    """The server; `url` is its base URL. Use as a context manager."""

    def __init__(self) -> None:
        super().__init__(_Handler)
        self.seen: list[Seen] = []
        self.answers: dict[str, Any] = {}
        self.delay = 0.0
        self.active = 0
        self.max_active = 0
        self.active_by_tag: Counter[str] = Counter()
        self.max_by_tag: Counter[str] = Counter()

    def requests(self, tag: str | None = None) -> list[Seen]:
        """The requests received so far (of one tag)."""
        with self.lock:
            return [s for s in self.seen if tag is None or s.tag == tag]


def refused_url() -> str:
    """A base URL where nothing listens (connection refused)."""
    return f"http://127.0.0.1:{free_port()}"
