"""A small local HTTP server for tests: threaded, on 127.0.0.1 and a free port, quiet, used as
a context manager. `tests/poll_server.py` and `tests/action_server.py` answer on top of it."""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Request:
    """One request a test server received."""

    method: str
    path: str  # as sent, still URL-encoded, with its query
    headers: dict[str, str]
    at: float  # time.monotonic() when it came
    body: bytes = b""
    query: dict[str, list[str]] = field(default_factory=dict)
    tag: str = ""


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive, no request log, and one way to send an answer."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle's algorithm on, the client's delayed
    # ACK would add ~40 ms to every answer of a kept-alive connection.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 — quiet
        pass

    def read_body(self) -> bytes:
        """The request body (empty without a Content-Length)."""
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send(self, status: int, body: bytes, content_type: str = "application/json",
             headers: dict[str, str] | None = None) -> None:
        """Answer with `status`, `body` and extra `headers` (a HEAD gets no body)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status: int, value: Any, headers: dict[str, str] | None = None) -> None:
        """Answer with `value` as JSON."""
        self.send(status, json.dumps(value).encode(), headers=headers)


class LocalServer(ThreadingHTTPServer):
    """A threaded server on 127.0.0.1 (a free port); `url` is its base URL. Serves in a daemon
    thread between `with` and the end of the block."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.lock = threading.Lock()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (a timed-out call, a scripted drop) is no error here."""

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
