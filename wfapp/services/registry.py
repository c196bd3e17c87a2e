"""Access to the per-app objects built at start-up (plugin registry, ...)."""

from __future__ import annotations

from flask import current_app

from ..plugins import Registry


def get_registry() -> Registry:
    """The trigger types and integration settings the plugins registered for this app."""
    return current_app.extensions["wfapp"]["registry"]
