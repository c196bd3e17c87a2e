"""Test helpers for the real services: a Redis server and `flask --app wfapp worker` processes."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.http_server import free_port as _free_port

ROOT = Path(__file__).resolve().parent.parent


def _ping(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except Exception:
        return False


def find_or_start_redis(workdir: Path) -> tuple[str | None, subprocess.Popen[bytes] | None, str]:
    """A Redis URL: WFAPP_TEST_REDIS_URL, a server on 6379, or one started here."""
    url = os.environ.get("WFAPP_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    if _ping(url):
        return url, None, ""
    binary = shutil.which("redis-server")
    if binary is None:
        return None, None, "no Redis server: set WFAPP_TEST_REDIS_URL or install redis-server"
    port = _free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(50):
        if _ping(url):
            return url, proc, ""
        time.sleep(0.1)
    proc.kill()
    return None, None, "redis-server did not start"


def worker_env(config: dict[str, Any], **extra: str) -> dict[str, str]:
    """Environment for a worker subprocess that uses the test's database and Redis."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WFAPP_")}
    env.update({
        "WFAPP_SECRET_KEY": config.get("SECRET_KEY", "test-worker"),
        "WFAPP_LOAD_ENTRY_POINTS": "false",
        "WFAPP_SQLALCHEMY_DATABASE_URI": config["SQLALCHEMY_DATABASE_URI"],
        "WFAPP_REDIS_URL": config["REDIS_URL"],
        "WFAPP_LEASE_SECONDS": str(config.get("LEASE_SECONDS", 60)),
        "WFAPP_EVENT_BATCH_SIZE": str(config.get("EVENT_BATCH_SIZE", 200)),
    })
    env.update(extra)
    return env


def start_worker(config: dict[str, Any], burst: bool = True, **extra: str
                 ) -> subprocess.Popen[str]:
    """Start `flask --app wfapp worker [--burst]` in a subprocess."""
    flask = str(Path(sys.executable).parent / "flask")
    args = [flask, "--app", "wfapp", "worker"] + (["--burst"] if burst else [])
    return subprocess.Popen(args, cwd=str(ROOT), env=worker_env(config, **extra),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run_workers(config: dict[str, Any], count: int = 1, timeout: float = 120) -> list[str]:
    """Run `count` burst workers at once until they exit; return their output."""
    procs = [start_worker(config) for _ in range(count)]
    outputs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, out
        outputs.append(out)
    return outputs


class TcpProxy:
    """A TCP forwarder to a real server that a test can cut and restore (a database outage)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = _free_port()
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = __import__("threading").Lock()

    def start(self) -> None:
        """Accept connections and forward them."""
        import threading

        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        import threading

        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._server is not server:  # stopped meanwhile: refuse this one too
                    client.close()
                    upstream.close()
                    return
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        """Refuse new connections and cut the open ones, as a server that went away."""
        if self._server is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone leaves it listening.
            with contextlib.suppress(OSError):
                self._server.shutdown(socket.SHUT_RDWR)
            self._server.close()
            self._server = None
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            # Linger 0: close() sends a reset, as a server that died would, not a polite FIN.
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()


def start_server(config: dict[str, Any], log: Path, **extra: str
                 ) -> tuple[str, subprocess.Popen[bytes]]:
    """`flask --app wfapp run` on a free port with the embedded worker, on the test database.

    `extra` adds environment variables (WFAPP_LOAD_ENTRY_POINTS is false unless set there).
    Returns the base URL once the server answers, and the process (the caller stops it).
    """
    import urllib.request

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WFAPP_")}
    env.update({
        "WFAPP_SECRET_KEY": config.get("SECRET_KEY", "test-server"),
        "WFAPP_LOAD_ENTRY_POINTS": "false",
        "WFAPP_SQLALCHEMY_DATABASE_URI": config["SQLALCHEMY_DATABASE_URI"],
        "WFAPP_EMBEDDED_WORKER": "true",
        "WFAPP_SWEEP_INTERVAL": "1",
    })
    env.update(extra)
    flask = str(Path(sys.executable).parent / "flask")
    with log.open("wb") as out:
        proc = subprocess.Popen([flask, "--app", "wfapp", "run", "--port", str(port)],
                                cwd=str(ROOT), env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(150):
        if proc.poll() is not None:
            break
        try:
            urllib.request.urlopen(f"{url}/auth/login", timeout=1)
            return url, proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    proc.wait(timeout=10)
    raise RuntimeError(f"server did not start: {log.read_text()}")


def start_gunicorn(config: dict[str, Any], log: Path, workers: int = 2, **extra: str
                   ) -> tuple[str, subprocess.Popen[bytes]]:
    """`gunicorn -w N wsgi:app` on a free port with the test's database and Redis.

    Returns the base URL once it answers, and the process (the caller stops it); raises
    RuntimeError with the server's log when it does not start.
    """
    import urllib.request

    port = _free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "-w", str(workers), "-b",
             f"127.0.0.1:{port}", "--timeout", "60", "wsgi:app"],
            cwd=str(ROOT), env=worker_env(config, **extra), stdout=out,
            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(150):
        if proc.poll() is not None:
            break
        try:
            urllib.request.urlopen(f"{url}/auth/login", timeout=1)
            return url, proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    proc.wait(timeout=10)
    raise RuntimeError(f"gunicorn did not start: {log.read_text()}")


def stop(*procs: subprocess.Popen[Any]) -> None:
    """SIGTERM the processes, then SIGKILL what has not exited after 15 s."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
