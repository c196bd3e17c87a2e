"""Fixtures: app, client, runner, auth helper, API tokens; SQLite or WFAPP_TEST_DATABASE_URL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import text

from tests.action_server import ActionServer
from tests.http_server import free_port
from wfapp import create_app
from wfapp.extensions import db

PASSWORD = "secret-pass"
ROLES = ("viewer", "operator", "author", "admin")


def need_service(reason: str) -> None:
    """Skip a test that needs a missing service, visibly; in CI a missing service fails it."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must provide this: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """PostgreSQL when WFAPP_TEST_DATABASE_URL is set, else a SQLite file for this session."""
    url = os.environ.get("WFAPP_TEST_DATABASE_URL")
    if url:
        return url
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.sqlite'}"


@pytest.fixture(scope="session")
def _migrated(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Run the real migrations once per session, on an empty schema."""
    from flask_migrate import downgrade, upgrade

    app = create_app(_config(database_url, tmp_path_factory.mktemp("instance")))
    with app.app_context():
        if database_url.startswith("postgresql"):
            with db.engine.begin() as conn:
                conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        elif _has_version_table():
            downgrade(revision="base")
        upgrade()
        db.engine.dispose()
    return database_url


def _has_version_table() -> bool:
    from sqlalchemy import inspect

    return inspect(db.engine).has_table("alembic_version")


def _config(database_url: str, instance: Path) -> dict[str, Any]:
    return {
        "TESTING": True,
        "SECRET_KEY": "test-secret",
        "SQLALCHEMY_DATABASE_URI": database_url,
        "WTF_CSRF_ENABLED": False,
        "PLUGINS": [],
        # Hermetic: a plugin installed in this venv must not change the suite's results.
        "LOAD_ENTRY_POINTS": False,
        "INSTANCE_PATH": str(instance),
    }


def _truncate() -> None:
    tables = [t.name for t in reversed(db.metadata.sorted_tables)]
    with db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            quoted = ", ".join(f'"{t}"' for t in tables)
            conn.execute(text(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                conn.execute(text(f'DELETE FROM "{table}"'))


@pytest.fixture
def app_config(_migrated: str, tmp_path: Path, request: pytest.FixtureRequest
               ) -> dict[str, Any]:
    """The configuration each test's app gets; tests may change it before using `app`, and a
    test module may set `APP_CONFIG` (a dict) to change it for all its tests."""
    config = _config(_migrated, tmp_path)
    config.update(getattr(request.module, "APP_CONFIG", {}))
    return config


def _app_on_clean_database(config: dict[str, Any]) -> Iterator[Flask]:
    app = create_app(config)
    with app.app_context():
        _truncate()
        yield app
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def app(app_config: dict[str, Any]) -> Iterator[Flask]:
    """A wfapp app on a clean, migrated database; an app context is pushed."""
    yield from _app_on_clean_database(app_config)


@pytest.fixture
def receiver() -> Iterator[ActionServer]:
    """A real HTTP receiver on 127.0.0.1 with scripted answers (see tests/action_server.py)."""
    with ActionServer() as server:
        yield server


@pytest.fixture
def smtp(app: Flask) -> Iterator[list[Any]]:
    """A real SMTP server on 127.0.0.1; the envelopes it received."""
    from aiosmtpd.controller import Controller

    got: list[Any] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            got.append(envelope)
            return "250 OK"

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    app.config.update(SMTP_HOST="127.0.0.1", SMTP_PORT=port)
    try:
        yield got
    finally:
        controller.stop()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client for `app`."""
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    """A CLI runner for `app`."""
    return app.test_cli_runner()


@pytest.fixture
def users(app: Flask) -> dict[str, Any]:
    """One user per role, named after the role, all with PASSWORD."""
    from wfapp.services.users import create_user

    return {role: create_user(role, PASSWORD, role) for role in ROLES}


class AuthActions:
    """Log the test client in and out as one of the role users."""

    def __init__(self, client: FlaskClient) -> None:
        self._client = client

    def login(self, role: str = "admin") -> Any:
        """Log in as the user named `role`."""
        return self._client.post("/auth/login", data={"username": role, "password": PASSWORD})

    def logout(self) -> Any:
        """Log out."""
        return self._client.post("/auth/logout")


@pytest.fixture
def auth(client: FlaskClient, users: dict[str, Any]) -> AuthActions:
    """Log in and out (`auth.login("author")`)."""
    return AuthActions(client)


@pytest.fixture
def tokens(app: Flask, users: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Authorization headers per role for the JSON API."""
    from wfapp.services.users import create_token

    return {role: {"Authorization": f"Bearer {create_token(role)}"} for role in ROLES}


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis: WFAPP_TEST_REDIS_URL, the one on 6379 (db 15), or a server started here."""
    from tests.services import find_or_start_redis

    url, proc, reason = find_or_start_redis(tmp_path_factory.mktemp("redis"))
    if url is None:
        need_service(reason)
    yield url
    if proc is not None:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def rq_app(app_config: dict[str, Any], redis_url: str) -> Iterator[Flask]:
    """An app whose queue is RQ on the real Redis (emptied first)."""
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    app_config.update({"REDIS_URL": redis_url, "LEASE_SECONDS": 2})
    yield from _app_on_clean_database(app_config)


@pytest.fixture
def demo(app: Flask) -> None:
    """Load the demo workflow and integration."""
    from wfapp.demo import ORDER_SYNC, SHOP_ORDERS
    from wfapp.services.definitions import import_document
    from wfapp.services.integrations import create_integration

    import_document(ORDER_SYNC)
    create_integration(dict(SHOP_ORDERS))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """PostgreSQL-only tests are deselected (not skipped) when the suite runs on SQLite, and
    SQLite-only tests (its one write lock) when it runs on PostgreSQL."""
    other = "sqlite" if os.environ.get("WFAPP_TEST_DATABASE_URL", "").startswith(
        "postgresql") else "postgres"
    keep, drop = [], []
    for item in items:
        (drop if item.get_closest_marker(other) else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
