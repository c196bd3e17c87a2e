"""Access to the per-app objects built at start-up (plugin registry, ...), and what they hold."""

from __future__ import annotations

from typing import Any

from flask import current_app

from ..plugins import PluginInfo, Registry


def get_registry() -> Registry:
    """The trigger types and integration settings the plugins registered for this app."""
    return current_app.extensions["wfapp"]["registry"]


def plugin_routes(plugin: PluginInfo) -> list[dict[str, Any]]:
    """The URL rules this app serves from the blueprints a plugin registered, by rule."""
    names = {bp.name for bp in plugin.blueprints}
    routes = []
    for rule in current_app.url_map.iter_rules():
        owner = rule.endpoint.rpartition(".")[0]
        if not any(owner == n or owner.startswith(n + ".") for n in names):
            continue
        view = current_app.view_functions.get(rule.endpoint)
        role = getattr(view, "_wfapp_role", None)
        routes.append({
            "rule": rule.rule, "endpoint": rule.endpoint,
            "methods": sorted(m for m in (rule.methods or ()) if m not in ("HEAD", "OPTIONS")),
            "public": bool(getattr(view, "_wfapp_public", False)),
            "role": role.value if role is not None else None})
    return sorted(routes, key=lambda r: (r["rule"], r["endpoint"]))


def describe_plugins() -> list[dict[str, Any]]:
    """Every loaded plugin and what it registered, for the /plugins page and `flask plugins`."""
    registry = get_registry()
    out = []
    for plugin in registry.plugins:
        triggers = [registry.trigger_types[n] for n in plugin.trigger_types]
        settings = [registry.integration_settings[n] for n in plugin.settings]
        out.append({
            "name": plugin.name, "module": plugin.module, "builtin": plugin.builtin,
            "origin": plugin.origin, "distribution": plugin.distribution,
            "version": plugin.version,
            "trigger_types": [{"name": t.name, "label": t.label, "description": t.description,
                               "manual": t.manual, "fields": [f.name for f in t.fields]}
                              for t in triggers],
            "integration_settings": [{"name": f.name, "label": f.label, "type": f.type}
                                     for f in settings],
            "routes": plugin_routes(plugin),
            "schedules": [{"name": name, "interval_seconds": seconds, "job": job}
                          for name, seconds, job in plugin.schedules],
            "panels": list(plugin.panels),
            "transition_actions": [str(a) for a in plugin.actions],
        })
    return out
