"""The plugin manager and the registries built from it once at start-up.

Plugins come from three places, in this order: the built-in trigger types, the distributions
installed under the `wfapp` entry-point group (unless LOAD_ENTRY_POINTS is off), and the modules
named in PLUGINS. Anything wrong with one of them stops start-up with a message that names the
plugin: a plugin that half-loads would look installed while doing nothing.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .actions import ActionType
from .triggers import Field, Panel, TriggerType

GROUP = "wfapp"
DEFAULT_PLUGINS = (
    "wfapp.builtin_plugins.manual",
    "wfapp.builtin_plugins.on_import",
    "wfapp.builtin_plugins.on_export",
    "wfapp.builtin_plugins.on_webhook",
    "wfapp.builtin_plugins.on_scheduled_poll",
    "wfapp.builtin_plugins.on_bc_event",
    "wfapp.builtin_plugins.on_action_result",
    "wfapp.builtin_plugins.actions",
)
BUILTIN_ORDER = ["manual", "on_import", "on_export", "on_webhook", "on_scheduled_poll",
                 "on_bc_event", "on_action_result"]
ACTION_ORDER = ["http_request", "send_webhook", "set_variable", "send_email"]


# An integration's own fields; plugin settings sit beside them in the API, so names must differ.
RESERVED_SETTING_NAMES = frozenset({"code", "description", "workflow_code", "instance_mode",
                                    "enabled", "record_url_template", "secrets_set",
                                    "secrets", "secret_names"})
# Event sources the core writes itself; a trigger type of that name would be confused with them.
RESERVED_TRIGGER_NAMES = frozenset({"timeout", "reset"})
# Trigger type names are stored in 40-character columns (transition, event source, timer).
TRIGGER_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
# Settings are form fields and top-level JSON fields of an integration; secrets live in a
# 64-character name column.
SETTING_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
CORE_SCHEDULES = frozenset({"sweep", "delivery-prune", "demo-feed", "retention", "actions",
                            "alerts"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


class PluginError(RuntimeError):
    """A plugin cannot be loaded, or registers something wfapp cannot use: start-up stops."""


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
    #: "built-in", "entry point" or "PLUGINS": how wfapp found it.
    origin: str = ""
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
    action_types: dict[str, ActionType] = field(default_factory=dict)
    #: Metric collectors the plugins registered (GET /metrics runs them after the core's).
    metrics: list[Any] = field(default_factory=list)

    def trigger_type(self, name: str) -> TriggerType:
        """Return the trigger type called `name`; raise UnknownTriggerType otherwise."""
        try:
            return self.trigger_types[name]
        except KeyError:
            raise UnknownTriggerType(name) from None

    def choices(self) -> list[tuple[str, str]]:
        """(identifier, label) pairs for a drop-down of trigger types."""
        return [(t.name, t.label) for t in self.trigger_types.values()]

    def action_choices(self) -> list[tuple[str, str]]:
        """(identifier, label) pairs for a drop-down of action types."""
        return [(a.name, a.label) for a in self.action_types.values()]


class PluginManager(pluggy.PluginManager):
    """pluggy's manager that also remembers where each plugin came from."""

    def __init__(self) -> None:
        super().__init__(GROUP)
        #: plugin name -> (origin, distribution name, version)
        self.origins: dict[str, tuple[str, str, str]] = {}


def config_flag(value: Any, name: str) -> bool:
    """A boolean setting as the environment may spell it (true/false, 1/0, yes/no, on/off)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise PluginError(f"{name} must be true or false, not {value!r}")


def plugin_names(configured: Any) -> tuple[object, ...]:
    """PLUGINS from config: a list of module names, or a comma-separated string.

    From the environment `WFAPP_PLUGINS='["a.b", "c"]'` arrives as a list and
    `WFAPP_PLUGINS=a.b,c` as a string; tests may also pass plugin objects in the list.
    """
    if configured is None or configured == "" or configured == [] or configured == ():
        return ()
    if isinstance(configured, str):
        text = configured.strip()
        if text.startswith("["):
            raise PluginError(f"PLUGINS is not a valid JSON list: {configured!r}")
        items: list[Any] = [part.strip() for part in text.split(",") if part.strip()]
    elif isinstance(configured, list | tuple):
        items = list(configured)
    else:
        raise PluginError("PLUGINS must be a list of module names or a comma-separated string, "
                          f"not {type(configured).__name__} {configured!r}")
    for index, item in enumerate(items):
        if isinstance(item, str):
            if not MODULE_NAME.fullmatch(item):
                raise PluginError(f"PLUGINS[{index}]: {item!r} is not a module name")
        elif item is None or isinstance(item, bool | int | float | dict | list):
            raise PluginError(f"PLUGINS[{index}] must be a module name, not {item!r}")
    return tuple(items)


def _distribution_of(module: str) -> tuple[str, str]:
    """(distribution, version) that installed a top-level module, or ("", "")."""
    top = module.split(".")[0]
    names = importlib.metadata.packages_distributions().get(top) or []
    for name in names:
        try:
            return name, importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "", ""


def _load_entry_points(pm: PluginManager) -> None:
    """Register every module installed under the `wfapp` entry-point group, once each."""
    for dist in list(importlib.metadata.distributions()):
        for ep in dist.entry_points:
            if ep.group != GROUP or pm.has_plugin(ep.name) or pm.is_blocked(ep.name):
                continue
            label = f"{dist.metadata['Name']} {dist.version}"
            try:
                plugin = ep.load()
            except Exception as exc:  # any import error of foreign code: say whose it is
                raise PluginError(f"the plugin {ep.name!r} = {ep.value!r} of the installed "
                                  f"distribution {label} cannot be loaded: "
                                  f"{type(exc).__name__}: {exc}") from exc
            pm.register(plugin, name=ep.name)
            pm.origins[ep.name] = ("entry point", dist.metadata["Name"], dist.version)


def get_plugin_manager(extra_plugins: Iterable[object] | str = (),
                       load_entry_points: bool = True) -> PluginManager:
    """Build a plugin manager: built-ins, `wfapp` entry points, extras; fail on unknown hooks."""
    pm = PluginManager()
    pm.add_hookspecs(hookspecs)
    try:
        version = importlib.metadata.version("wfapp")
    except importlib.metadata.PackageNotFoundError:  # a checkout that is not installed
        version = ""
    for name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
        pm.origins[name] = ("built-in", "wfapp" if version else "", version)
    if load_entry_points:
        _load_entry_points(pm)
    for plugin in plugin_names(extra_plugins):
        if isinstance(plugin, str):
            try:
                plugin = importlib.import_module(plugin)
            except Exception as exc:
                raise PluginError(f"PLUGINS names {plugin!r}, which cannot be imported: "
                                  f"{type(exc).__name__}: {exc}") from exc
        if pm.is_registered(plugin):  # also installed as an entry point: once is enough
            continue
        # A module goes by its name; an object by its class, so messages can name it.
        name = getattr(plugin, "__name__", None) or \
            f"{type(plugin).__module__}.{type(plugin).__qualname__}"
        if pm.has_plugin(name):
            name = f"{name}#{id(plugin)}"
        pm.register(plugin, name=name)
        pm.origins[name] = ("PLUGINS", *_distribution_of(name))
    pm.check_pending()
    return pm


def _results(pm: pluggy.PluginManager, hook: str) -> list[tuple[str, list[Any]]]:
    """(plugin name, items) for every implementation of a registration hook, in call order."""
    out = []
    for impl in reversed(getattr(pm.hook, hook).get_hookimpls()):
        try:
            result = impl.function()
        except Exception as exc:  # foreign code: say whose hook failed
            raise PluginError(f"plugin {impl.plugin_name!r}: {hook}() failed: "
                              f"{type(exc).__name__}: {exc}") from exc
        if result is None:
            result = ()
        if isinstance(result, str | bytes | dict) or not isinstance(result, Iterable):
            raise PluginError(f"plugin {impl.plugin_name!r}: {hook}() must return a list, "
                              f"not {type(result).__name__}")
        out.append((impl.plugin_name, list(result)))
    return out


def _plugin_info(pm: pluggy.PluginManager, name: str) -> PluginInfo:
    plugin = pm.get_plugin(name)
    module = getattr(plugin, "__name__", type(plugin).__module__)
    origins = getattr(pm, "origins", {})
    origin, distribution, version = origins.get(name, ("PLUGINS", "", ""))
    return PluginInfo(name=name, module=module, builtin=name in DEFAULT_PLUGINS,
                      distribution=distribution, version=version, origin=origin)


def _check_trigger_type(plugin: str, trigger: Any) -> None:
    if not isinstance(trigger, TriggerType):
        raise PluginError(f"plugin {plugin!r}: register_trigger_types() returned "
                          f"{trigger!r}, which is not a TriggerType")
    if not isinstance(trigger.name, str) or not TRIGGER_NAME.fullmatch(trigger.name) \
            or trigger.name in RESERVED_TRIGGER_NAMES:
        raise PluginError(f"plugin {plugin!r}: trigger type name {trigger.name!r} must be "
                          "1-40 lower-case letters, digits and _ (starting with a letter), "
                          f"and not one of {', '.join(sorted(RESERVED_TRIGGER_NAMES))}")
    if not isinstance(trigger.label, str) or not trigger.label.strip():
        raise PluginError(f"plugin {plugin!r}: trigger type {trigger.name!r} needs a label")
    names = [f.name for f in trigger.fields if isinstance(f, Field)]
    if len(names) != len(trigger.fields) or len(set(names)) != len(names):
        raise PluginError(f"plugin {plugin!r}: the fields of trigger type {trigger.name!r} "
                          "must be Field objects with distinct names")


def _check_setting(plugin: str, setting: Any) -> None:
    if not isinstance(setting, Field):
        raise PluginError(f"plugin {plugin!r}: register_integration_settings() returned "
                          f"{setting!r}, which is not a Field")
    if not SETTING_NAME.fullmatch(setting.name):
        raise PluginError(f"plugin {plugin!r}: setting name {setting.name!r} must be 1-64 "
                          "lower-case letters, digits and _ (starting with a letter)")
    if setting.name in RESERVED_SETTING_NAMES:
        raise PluginError(f"integration setting {setting.name!r} would shadow the "
                          "integration's own field of that name")


def _check_schedule(plugin: str, schedule: Any) -> tuple[str, float, str]:
    """A schedule as (name, seconds, job path), its job importable now rather than at run time."""
    shape = f"plugin {plugin!r}: register_schedules() returned {schedule!r}; each schedule is " \
        "(name, interval in seconds > 0, 'dotted.path.to.job')"
    if not isinstance(schedule, list | tuple) or len(schedule) != 3:
        raise PluginError(shape)
    name, seconds, path = schedule
    if not isinstance(name, str) or not name or isinstance(seconds, bool) \
            or not isinstance(seconds, int | float) or not seconds > 0 \
            or not isinstance(path, str) or not MODULE_NAME.fullmatch(path) or "." not in path:
        raise PluginError(shape)
    module, _, attribute = path.rpartition(".")
    try:
        job = getattr(importlib.import_module(module), attribute)
    except Exception as exc:
        raise PluginError(f"plugin {plugin!r}: schedule {name!r} names the job {path!r}, which "
                          f"cannot be imported: {type(exc).__name__}: {exc}") from exc
    if not callable(job):
        raise PluginError(f"plugin {plugin!r}: schedule {name!r}: {path!r} is not a function")
    return name, float(seconds), path


def build_registry(pm: pluggy.PluginManager) -> Registry:
    """Collect what the plugins register; duplicates and malformed items are start-up errors."""
    from flask import Blueprint

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
            _check_trigger_type(name, trigger)
            if trigger.name in registry.trigger_types:
                raise PluginError(f"trigger type {trigger.name!r} is registered twice "
                                  f"(again by plugin {name!r})")
            registry.trigger_types[trigger.name] = trigger
            info(name).trigger_types.append(trigger.name)
    for name, items in _results(pm, "register_integration_settings"):
        for setting in items:
            _check_setting(name, setting)
            if setting.name in registry.integration_settings:
                raise PluginError(f"integration setting {setting.name!r} is registered twice "
                                  f"(again by plugin {name!r})")
            registry.integration_settings[setting.name] = setting
            info(name).settings.append(setting.name)
    for name, items in _results(pm, "register_integration_panels"):
        for panel in items:
            if not isinstance(panel, Panel) or not callable(panel.render):
                raise PluginError(f"plugin {name!r}: register_integration_panels() returned "
                                  f"{panel!r}, which is not a Panel with a render function")
            if any(p.name == panel.name for p in registry.panels):
                raise PluginError(f"card panel {panel.name!r} is registered twice "
                                  f"(again by plugin {name!r})")
            registry.panels.append(panel)
            info(name).panels.append(panel.title)
    registry.panels.sort(key=lambda p: (p.order, p.name))
    for name, items in _results(pm, "register_blueprints"):
        for blueprint in items:
            if not isinstance(blueprint, Blueprint):
                raise PluginError(f"plugin {name!r}: register_blueprints() returned "
                                  f"{blueprint!r}, which is not a flask.Blueprint")
        info(name).blueprints.extend(items)
    seen_schedules = set(CORE_SCHEDULES)
    for name, items in _results(pm, "register_schedules"):
        for item in items:
            schedule = _check_schedule(name, item)
            if schedule[0] in seen_schedules:
                raise PluginError(f"plugin {name!r}: the schedule name {schedule[0]!r} is "
                                  "already taken; schedules run once per name and interval")
            seen_schedules.add(schedule[0])
            info(name).schedules.append(schedule)
    for name, items in _results(pm, "register_transition_actions"):
        for action in items:
            if not isinstance(action, ActionType):
                raise PluginError(f"plugin {name!r}: register_transition_actions() returned "
                                  f"{action!r}, which is not an ActionType")
            if action.name in registry.action_types:
                raise PluginError(f"plugin {name!r}: action type {action.name!r} is already "
                                  "registered")
            registry.action_types[action.name] = action
            info(name).actions.append(action.name)
    action_order = {name: i for i, name in enumerate(ACTION_ORDER)}
    registry.action_types = dict(
        sorted(registry.action_types.items(), key=lambda kv: (action_order.get(kv[0], 99), kv[0])))
    for name, items in _results(pm, "register_metrics"):
        for collector in items:
            if not callable(collector):
                raise PluginError(f"plugin {name!r}: register_metrics() returned {collector!r}, "
                                  "which is not a callable returning MetricFamily values")
        registry.metrics.extend(items)
    # Built-ins first, in their documented order; pluggy calls the last registered first.
    order = {name: i for i, name in enumerate(BUILTIN_ORDER)}
    registry.trigger_types = dict(
        sorted(registry.trigger_types.items(), key=lambda kv: (order.get(kv[0], 99), kv[0]))
    )
    builtins = {name: i for i, name in enumerate(DEFAULT_PLUGINS)}
    registry.plugins = sorted(infos.values(),
                              key=lambda p: (not p.builtin, builtins.get(p.name, 0), p.name))
    return registry
