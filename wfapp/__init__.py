"""wfapp: a workflow engine for integration engineers. create_app() wires the pieces together."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Engine

PACKAGE_DIR = Path(__file__).resolve().parent


def _templates_dir() -> str:
    """Templates ship inside the package when installed; in a checkout they are top-level."""
    inside = PACKAGE_DIR / "templates"
    return str(inside if inside.is_dir() else PACKAGE_DIR.parent / "templates")


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build a wfapp application: config, extensions, plugins, blueprints, CLI."""
    instance_path = (test_config or {}).get("INSTANCE_PATH")
    from .inbound import WfappFlask

    app = WfappFlask(__name__, instance_relative_config=True, template_folder=_templates_dir(),
                instance_path=instance_path)
    app.config.from_object("wfapp.config")
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{Path(app.instance_path) / 'wfapp.sqlite'}"
    if test_config is None:
        app.config.from_pyfile("config.py", silent=True)
        app.config.from_prefixed_env("WFAPP")
    else:
        app.config.from_mapping(test_config)
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    if not app.config.get("SECRET_KEY"):
        if not app.config.get("TESTING"):
            raise RuntimeError(
                "wfapp needs a SECRET_KEY: set WFAPP_SECRET_KEY or SECRET_KEY in "
                f"{Path(app.instance_path) / 'config.py'} (make run writes one for the demo)")
        app.config["SECRET_KEY"] = "testing-only"

    from . import security
    from .extensions import bootstrap, csrf, db, migrate
    from .inputs import IdConverter

    # Every <int:…> in a route is an id: larger than a BIGINT holds is 404, not a database error.
    app.url_map.converters["int"] = IdConverter
    from .plugins import build_registry, config_flag, get_plugin_manager
    from .queue import EmbeddedQueue, make_queue
    from .secretbox import SecretBox
    from .throttle import Throttle

    db.init_app(app)
    migrate.init_app(app, db, directory=str(PACKAGE_DIR / "migrations"))
    csrf.init_app(app)
    bootstrap.init_app(app)
    security.init_app(app)

    if app.config.get("TRUSTED_PROXIES"):
        from werkzeug.middleware.proxy_fix import ProxyFix

        hops = int(app.config["TRUSTED_PROXIES"])
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops,  # type: ignore[method-assign]
                                x_host=hops, x_port=hops)

    pm = get_plugin_manager(app.config.get("PLUGINS") or (), load_entry_points=config_flag(
        app.config.get("LOAD_ENTRY_POINTS", True), "LOAD_ENTRY_POINTS"))
    registry = build_registry(pm)
    queue = make_queue(app)
    app.extensions["wfapp"] = {"plugin_manager": pm, "registry": registry, "queue": queue,
                               "schedules": _schedules(app, registry),
                               "secretbox": SecretBox(app.config), "throttle": Throttle(app)}
    if isinstance(queue, EmbeddedQueue) and app.config.get("EMBEDDED_WORKER"):
        queue.start(app.extensions["wfapp"]["schedules"])

    from . import formatting
    from .actions_ui import bp as actions_bp
    from .admin import bp as admin_bp
    from .alerts import bp as alerts_bp
    from .api import bp as api_bp
    from .audit import bp as audit_bp
    from .auth import bp as auth_bp
    from .demo_receiver import bp as demo_receiver_bp
    from .events import bp as events_bp
    from .instances import bp as instances_bp
    from .integrations import bp as integrations_bp
    from .main import bp as main_bp
    from .operations import bp as operations_bp
    from .ops import bp as ops_bp
    from .runs import bp as runs_bp
    from .workflows import bp as workflows_bp

    for blueprint in (main_bp, auth_bp, workflows_bp, integrations_bp, instances_bp, events_bp,
                      runs_bp, audit_bp, admin_bp, ops_bp, actions_bp, demo_receiver_bp,
                      operations_bp, alerts_bp):
        app.register_blueprint(blueprint)
    app.jinja_env.filters.update(duration=formatting.duration, timestamp=formatting.timestamp,
                                 pretty_json=formatting.pretty_json,
                                 notes_parts=formatting.notes_parts)
    app.register_blueprint(api_bp)
    csrf.exempt(api_bp)
    _register_plugin_blueprints(app, registry)

    from .cli import register_cli

    register_cli(app)
    return app


def _register_plugin_blueprints(app: Flask, registry: Any) -> None:
    """Add the plugins' routes; a blueprint name that is taken names the plugin at start-up."""
    from .plugins import PluginError

    for plugin in registry.plugins:
        for blueprint in plugin.blueprints:
            try:
                app.register_blueprint(blueprint)
            except ValueError as exc:
                raise PluginError(f"plugin {plugin.name!r}: blueprint {blueprint.name!r} cannot "
                                  f"be registered: {exc}") from exc


def _schedules(app: Flask, registry: Any) -> list[tuple[str, float, str]]:
    """Periodic work: the sweep, the demo feed when on, and what plugins register."""
    schedules = [("sweep", float(app.config["SWEEP_INTERVAL"]), "wfapp.jobs.sweep"),
                 ("delivery-prune", 600.0, "wfapp.jobs.prune_deliveries"),
                 ("retention", float(app.config["RETENTION_INTERVAL"]), "wfapp.jobs.retention"),
                 ("actions", float(app.config["ACTION_INTERVAL"]), "wfapp.jobs.deliver_actions"),
                 ("alerts", float(app.config["ALERT_INTERVAL"]), "wfapp.jobs.evaluate_alerts")]
    if app.config.get("DEMO_FEED_INTERVAL"):
        schedules.append(("demo-feed", float(app.config["DEMO_FEED_INTERVAL"]),
                          "wfapp.demo.feed"))
    for plugin in registry.plugins:
        schedules.extend(plugin.schedules)
    return schedules


@event.listens_for(Engine, "connect")
def _sqlite_foreign_keys(dbapi_connection: Any, connection_record: Any) -> None:
    """SQLite settings per connection: enforce foreign keys (so ON DELETE CASCADE works), let
    readers and the writer work side by side (WAL) and wait for a busy database, not fail."""
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()
