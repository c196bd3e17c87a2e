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
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass
class Seen:
    """One request the server received."""

    method: str
    path: str  # as sent, still URL-encoded
    query: dict[str, list[str]]
    headers: dict[str, str]
    at: float
    tag: str


class _Handler(BaseHTTPRequestHandler):
    server: PollServer  # type: ignore[assignment]
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle's algorithm on, the client's delayed
    # ACK would add ~40 ms to every answer of a kept-alive connection.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 — quiet
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json",
              extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        path = parts.path
        tag = ""
        if path.startswith("/t/"):
            _, _, tag, path = path.split("/", 3)
            path = "/" + path
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        srv = self.server
        with srv.lock:
            srv.seen.append(Seen(self.command, self.path, parse_qs(parts.query),
                                 dict(self.headers.items()), time.monotonic(), tag))
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
        self._send(*answer)

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


class PollServer(ThreadingHTTPServer):
    """The server; `url` is its base URL. Use as a context manager."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.seen: list[Seen] = []
        self.answers: dict[str, Any] = {}
        self.delay = 0.0
        self.active = 0
        self.max_active = 0
        self.active_by_tag: Counter[str] = Counter()
        self.max_by_tag: Counter[str] = Counter()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (a poll that timed out, a killed worker) is no error here."""

    def __enter__(self) -> PollServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()

    def requests(self, tag: str | None = None) -> list[Seen]:
        """The requests received so far (of one tag)."""
        with self.lock:
            return [s for s in self.seen if tag is None or s.tag == tag]


def refused_url() -> str:
    """A base URL where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"
