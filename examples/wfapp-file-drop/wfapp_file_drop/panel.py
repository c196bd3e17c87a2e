"""The File Drop panel of the integration card: folder, files waiting, last pick-up."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from flask import render_template_string

from wfapp.plugin_api import IntegrationInfo, counters, recent_deliveries, state_get

from .pickup import CHANNEL, FOLDER, SOURCE, STATE, resolve_folder, waiting_files

LIMIT = 10_000

# Rendered with render_template_string, which escapes every value: file names and reasons are
# untrusted text.
TEMPLATE = (Path(__file__).parent / "panel.html").read_text(encoding="utf-8")


def _shown_time(value: Any) -> Any:
    """An ISO timestamp of the status as people read it; anything else as it is."""
    try:
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (TypeError, ValueError):
        return value


def render(integration: IntegrationInfo) -> str:
    """The panel's HTML for one integration."""
    setting = integration.setting(FOLDER) or ""
    context: dict[str, Any] = {"setting": setting, "code": integration.code}
    if setting:
        folder, problem = resolve_folder(setting)
        waiting = None
        if folder is not None:
            try:
                waiting = waiting_files(folder, LIMIT)
            except OSError as exc:
                problem = f"cannot be listed: {exc.strerror}"
        refused = counters(integration, CHANNEL).get("refused")
        context.update(
            folder=str(folder) if folder is not None else "", problem=problem, waiting=waiting,
            limit=LIMIT, enabled=integration.enabled, mode=integration.instance_mode,
            status={k: _shown_time(v) if k.endswith("_at") else v
                    for k, v in (state_get(integration, STATE, "status") or {}).items()},
            refused=refused.count if refused is not None else 0,
            rows=recent_deliveries(integration, CHANNEL, SOURCE, limit=10))
    return render_template_string(TEMPLATE, **context)
