"""A real local HTTP receiver for action tests: scripted answers per path, every request recorded.

`server.script("/submit/A1", [500, "drop", (429, {"Retry-After": "1"}), 200])` answers the
next requests to that path in turn (the last answer repeats): a status code, `"drop"` (the
connection is closed without an answer), `("sleep", seconds)` then 200, or (status, headers).
A 2xx answer's body is `server.bodies.get(path, {"ok": True, "id": "C-1"})`. `server.peak` is
the most requests it was answering at once.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from tests.http_server import LocalServer, QuietHandler, Request

Received = Request  # one request the receiver got


class _Handler(QuietHandler):
    server: ActionServer  # type: ignore[assignment]
    counted = False

    def _handle(self) -> None:
        body = self.read_body()
        path = self.path.split("?", 1)[0]
        self.server.record(Received(self.command, self.path, dict(self.headers),
                                    time.monotonic(), body))
        self.server.entered()
        self.counted = True
        try:
            self._answer(path)
        finally:
            self._done()

    def _done(self) -> None:
        """No longer in flight: called before the first byte of the answer goes out, so the
        client cannot have its answer (and start another call) while this one still counts."""
        if self.counted:
            self.counted = False
            self.server.left()

    def _answer(self, path: str) -> None:
        answer = self.server.next_answer(path)
        headers: dict[str, str] = {}
        if answer == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if isinstance(answer, tuple) and answer[0] == "sleep":
            time.sleep(float(answer[1]))
            answer = 200
        if isinstance(answer, tuple):
            answer, headers = answer
        status = int(answer)
        ok = 200 <= status < 300
        payload = self.server.bodies.get(path, {"ok": True, "id": "C-1"}) if ok else \
            {"error": f"scripted {status}"}
        self._done()
        self.send_json(status, payload, headers)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


class ActionServer(LocalServer):
    """The receiver; use as a context manager (it serves on 127.0.0.1 on a free port)."""

    def __init__(self) -> None:
        super().__init__(_Handler)
        self.received: list[Received] = []
        self.scripts: dict[str, list[Any]] = {}
        self.bodies: dict[str, Any] = {}
        #: Requests being answered right now, and the most there ever were at once.
        self.in_flight = 0
        self.peak = 0

    def script(self, path: str, answers: list[Any]) -> None:
        """The answers for the next requests to `path` (the last one repeats)."""
        with self.lock:
            self.scripts[path] = list(answers)

    def next_answer(self, path: str) -> Any:
        with self.lock:
            answers = self.scripts.get(path) or [200]
            return answers.pop(0) if len(answers) > 1 else answers[0]

    def entered(self) -> None:
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)

    def left(self) -> None:
        with self.lock:
            self.in_flight -= 1

    def record(self, item: Received) -> None:
        with self.lock:
            self.received.append(item)

    def requests(self, path: str | None = None) -> list[Received]:
        """The requests received (to `path` only, when given), in order."""
        with self.lock:
            return [r for r in self.received if path is None or r.path.split("?")[0] == path]
