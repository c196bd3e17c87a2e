"""The plugin manager and the registries built from it once at start-up."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

import pluggy

from . import hookspecs
from .triggers import Field, TriggerType

DEFAULT_PLUGINS = (
    "wfapp.builtin_plugins.manual",
    "wfapp.builtin_plugins.on_import",
    "wfapp.builtin_plugins.on_export",
    "wfapp.builtin_plugins.on_webhook",
    "wfapp.builtin_plugins.on_scheduled_poll",
    "wfapp.builtin_plugins.on_bc_event",
)


# An integration's own fields; plugin settings sit beside them in the API, so names must differ.
RESERVED_SETTING_NAMES = frozenset({"code", "description", "workflow_code", "instance_mode",
                                    "enabled", "record_url_template", "secrets_set"})


class UnknownTriggerType(KeyError):
    """Raised when a trigger type name is not registered."""

    def __str__(self) -> str:
        return f"unknown trigger type {self.args[0]!r}"


@dataclass
class Registry:
    """Everything the plugins registered, collected once."""

    trigger_types: dict[str, TriggerType] = field(default_factory=dict)
    integration_settings: dict[str, Field] = field(default_factory=dict)

    def trigger_type(self, name: str) -> TriggerType:
        """Return the trigger type called `name`; raise UnknownTriggerType otherwise."""
        try:
            return self.trigger_types[name]
        except KeyError:
            raise UnknownTriggerType(name) from None

    def choices(self) -> list[tuple[str, str]]:
        """(identifier, label) pairs for a drop-down of trigger types."""
        return [(t.name, t.label) for t in self.trigger_types.values()]


def get_plugin_manager(extra_plugins: tuple[object, ...] = ()) -> pluggy.PluginManager:
    """Build a plugin manager: built-ins, `wfapp` entry points, extras; fail on unknown hooks."""
    pm = pluggy.PluginManager("wfapp")
    pm.add_hookspecs(hookspecs)
    for name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    pm.load_setuptools_entrypoints("wfapp")
    for plugin in extra_plugins:
        if isinstance(plugin, str):
            plugin = importlib.import_module(plugin)
        if not pm.is_registered(plugin):  # also installed as an entry point: once is enough
            pm.register(plugin)
    pm.check_pending()
    return pm


def build_registry(pm: pluggy.PluginManager) -> Registry:
    """Collect trigger types and integration settings; duplicates are a start-up error."""
    registry = Registry()
    for group in pm.hook.register_trigger_types():
        for trigger in group or ():
            if trigger.name in registry.trigger_types:
                raise RuntimeError(f"trigger type {trigger.name!r} is registered twice")
            registry.trigger_types[trigger.name] = trigger
    for group in pm.hook.register_integration_settings():
        for setting in group or ():
            if setting.name in registry.integration_settings:
                raise RuntimeError(f"integration setting {setting.name!r} is registered twice")
            if setting.name in RESERVED_SETTING_NAMES:
                raise RuntimeError(f"integration setting {setting.name!r} would shadow the "
                                   "integration's own field of that name")
            registry.integration_settings[setting.name] = setting
    # Built-ins first, in their documented order; pluggy calls the last registered first.
    order = {name: i for i, name in enumerate(["manual", "on_import", "on_export", "on_webhook",
                                               "on_scheduled_poll", "on_bc_event"])}
    registry.trigger_types = dict(
        sorted(registry.trigger_types.items(), key=lambda kv: (order.get(kv[0], 99), kv[0]))
    )
    return registry
