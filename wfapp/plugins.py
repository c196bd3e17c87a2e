"""The plugin manager and the registries built from it once at start-up."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .triggers import Field, Panel, TriggerType

DEFAULT_PLUGINS = (
    "wfapp.builtin_plugins.manual",
    "wfapp.builtin_plugins.on_import",
    "wfapp.builtin_plugins.on_export",
    "wfapp.builtin_plugins.on_webhook",
    "wfapp.builtin_plugins.on_scheduled_poll",
    "wfapp.builtin_plugins.on_bc_event",
)
BUILTIN_ORDER = ["manual", "on_import", "on_export", "on_webhook", "on_scheduled_poll",
                 "on_bc_event"]


# An integration's own fields; plugin settings sit beside them in the API, so names must differ.
RESERVED_SETTING_NAMES = frozenset({"code", "description", "workflow_code", "instance_mode",
                                    "enabled", "record_url_template", "secrets_set",
                                    "secrets", "secret_names"})


class UnknownTriggerType(KeyError):
    """Raised when a trigger type name is not registered."""

    def __str__(self) -> str:
        return f"unknown trigger type {self.args[0]!r}"


@dataclass
class PluginInfo:
    """One loaded plugin and what it contributed, for the /plugins page."""

    name: str
    module: str
    builtin: bool
    distribution: str = ""
    version: str = ""
    trigger_types: list[str] = field(default_factory=list)
    settings: list[str] = field(default_factory=list)
    blueprints: list[Any] = field(default_factory=list)
    schedules: list[tuple[str, float, str]] = field(default_factory=list)
    panels: list[str] = field(default_factory=list)
    actions: list[Any] = field(default_factory=list)


@dataclass
class Registry:
    """Everything the plugins registered, collected once."""

    trigger_types: dict[str, TriggerType] = field(default_factory=dict)
    integration_settings: dict[str, Field] = field(default_factory=dict)
    panels: list[Panel] = field(default_factory=list)
    plugins: list[PluginInfo] = field(default_factory=list)

    def trigger_type(self, name: str) -> TriggerType:
        """Return the trigger type called `name`; raise UnknownTriggerType otherwise."""
        try:
            return self.trigger_types[name]
        except KeyError:
            raise UnknownTriggerType(name) from None

    def choices(self) -> list[tuple[str, str]]:
        """(identifier, label) pairs for a drop-down of trigger types."""
        return [(t.name, t.label) for t in self.trigger_types.values()]


def _extra_plugins(configured: Any) -> tuple[object, ...]:
    """PLUGINS from config: a list, or a comma-separated string from the environment."""
    if not configured:
        return ()
    if isinstance(configured, str):
        return tuple(name.strip() for name in configured.split(",") if name.strip())
    return tuple(configured)


def get_plugin_manager(extra_plugins: Iterable[object] | str = (),
                       load_entry_points: bool = True) -> pluggy.PluginManager:
    """Build a plugin manager: built-ins, `wfapp` entry points, extras; fail on unknown hooks."""
    pm = pluggy.PluginManager("wfapp")
    pm.add_hookspecs(hookspecs)
    for name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    if load_entry_points:
        pm.load_setuptools_entrypoints("wfapp")
    for plugin in _extra_plugins(extra_plugins):
        if isinstance(plugin, str):
            plugin = importlib.import_module(plugin)
        if not pm.is_registered(plugin):  # also installed as an entry point: once is enough
            pm.register(plugin)
    pm.check_pending()
    return pm


def _results(pm: pluggy.PluginManager, hook: str) -> list[tuple[str, list[Any]]]:
    """(plugin name, items) for every implementation of a registration hook, in call order."""
    out = []
    for impl in reversed(getattr(pm.hook, hook).get_hookimpls()):
        out.append((impl.plugin_name, list(impl.function() or ())))
    return out


def _plugin_info(pm: pluggy.PluginManager, name: str) -> PluginInfo:
    plugin = pm.get_plugin(name)
    module = getattr(plugin, "__name__", type(plugin).__name__)
    info = PluginInfo(name=name, module=module, builtin=name in DEFAULT_PLUGINS)
    for loaded, dist in pm.list_plugin_distinfo():
        if loaded is plugin:
            info.distribution = dist.project_name
            info.version = dist.version
    return info


def build_registry(pm: pluggy.PluginManager) -> Registry:
    """Collect what the plugins register; duplicates are a start-up error."""
    registry = Registry()
    infos: dict[str, PluginInfo] = {}

    def info(name: str) -> PluginInfo:
        if name not in infos:
            infos[name] = _plugin_info(pm, name)
        return infos[name]

    for name in [pm.get_name(p) for p in pm.get_plugins()]:
        if name is not None:
            info(name)
    for name, items in _results(pm, "register_trigger_types"):
        for trigger in items:
            if trigger.name in registry.trigger_types:
                raise RuntimeError(f"trigger type {trigger.name!r} is registered twice")
            registry.trigger_types[trigger.name] = trigger
            info(name).trigger_types.append(trigger.name)
    for name, items in _results(pm, "register_integration_settings"):
        for setting in items:
            if setting.name in registry.integration_settings:
                raise RuntimeError(f"integration setting {setting.name!r} is registered twice")
            if setting.name in RESERVED_SETTING_NAMES:
                raise RuntimeError(f"integration setting {setting.name!r} would shadow the "
                                   "integration's own field of that name")
            registry.integration_settings[setting.name] = setting
            info(name).settings.append(setting.name)
    for name, items in _results(pm, "register_integration_panels"):
        for panel in items:
            registry.panels.append(panel)
            info(name).panels.append(panel.title)
    registry.panels.sort(key=lambda p: (p.order, p.name))
    for name, items in _results(pm, "register_blueprints"):
        info(name).blueprints.extend(items)
    for name, items in _results(pm, "register_schedules"):
        info(name).schedules.extend(tuple(s) for s in items)
    for name, items in _results(pm, "register_transition_actions"):
        info(name).actions.extend(items)
    # Built-ins first, in their documented order; pluggy calls the last registered first.
    order = {name: i for i, name in enumerate(BUILTIN_ORDER)}
    registry.trigger_types = dict(
        sorted(registry.trigger_types.items(), key=lambda kv: (order.get(kv[0], 99), kv[0]))
    )
    registry.plugins = sorted(infos.values(), key=lambda p: (not p.builtin, p.name))
    return registry
