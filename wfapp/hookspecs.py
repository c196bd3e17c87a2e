"""The hooks wfapp calls on its plugins. Each is a flat, typed, one-line-documented function.

A plugin is a module (or object) with functions marked `@hookimpl` whose names are these.
Every hook here is documented in docs/plugins.md, which quotes these docstrings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from flask import Blueprint

    from .triggers import Field, Panel, TriggerType

hookspec = pluggy.HookspecMarker("wfapp")
hookimpl = pluggy.HookimplMarker("wfapp")


@hookspec
def register_trigger_types() -> list[TriggerType]:
    """Return the trigger types this plugin provides."""


@hookspec
def register_integration_settings() -> list[Field]:
    """Return settings this plugin adds to every integration (shown on the card and in the API)."""


@hookspec
def register_blueprints() -> list[Blueprint]:
    """Return Flask blueprints with the routes this plugin needs (webhook endpoints, ...)."""


@hookspec
def register_integration_panels() -> list[Panel]:
    """Return panels this plugin adds to the integration card (endpoint URL, deliveries, ...)."""


@hookspec
def register_schedules() -> list[tuple[str, float, str]]:
    """Return periodic work as (name, interval in seconds, dotted path of a job function)."""


@hookspec
def register_transition_actions() -> list[Any]:
    """Return `ActionType` objects: what a transition can do when it fires (see plugin_api)."""


@hookspec
def register_metrics() -> list[Any]:
    """Return metric collectors: callables returning MetricFamily values, read at each scrape."""
