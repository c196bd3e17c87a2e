"""On File Drop: JSON files dropped into an integration's folder become events.

A complete third-party wfapp trigger plugin. It imports nothing from wfapp but
`wfapp.plugin_api`, and it only *stores events*: the engine decides what each one does.

- Trigger type `on_file_drop` (config: `pattern`, a file-name pattern).
- Integration settings `file_drop_folder`, `file_drop_record_key_path`,
  `file_drop_event_type_path`, `file_drop_max_bytes`.
- A scheduled job (`wfapp_file_drop.pickup.run`) that picks the files up.
- A card panel: the folder, the files waiting, the last pick-up and the recent deliveries.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from wfapp.plugin_api import Field, Panel, TriggerType, glob_match, hookimpl

from .pickup import (
    EVENT_TYPE_PATH,
    FOLDER,
    MAX_BYTES,
    RECORD_KEY_PATH,
    SOURCE,
    folder_problem_on_save,
)

__version__ = "0.1.0"
PATH_SYNTAX = re.compile(r"[^.\s]+(\.[^.\s]+)*")
DEFAULT_INTERVAL = 10.0


def _file_name(event: Mapping[str, Any]) -> str:
    payload = event.get("payload") or {}
    file = payload.get("file") if isinstance(payload, Mapping) else None
    return str(file.get("name", "")) if isinstance(file, Mapping) else ""


class FileDropTrigger(TriggerType):
    """Fires for files whose name matches the transition's pattern (every file when empty)."""

    def check_config(self, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        """A pattern names files, not paths."""
        pattern = config.get("pattern") or ""
        if "/" in pattern or "\\" in pattern:
            return [("pattern", "is a file-name pattern such as order-*.json, not a path")]
        return []

    def matches(self, config: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
        """Match the dropped file's name against `pattern` (`*` is any run of characters)."""
        pattern = config.get("pattern")
        return not pattern or glob_match(pattern, _file_name(event))

    def explain_mismatch(self, config: Mapping[str, Any], event: Mapping[str, Any]) -> str:
        """Name the file and the pattern it missed."""
        if self.matches(config, event):
            return ""
        return (f"the file {_file_name(event)!r} does not match this transition's pattern "
                f"{config.get('pattern')!r}")

    def check_settings(self, settings: Mapping[str, Any], changed: frozenset[str] = frozenset()
                       ) -> list[tuple[str, str]]:
        """The folder must lie inside FILE_DROP_ROOT; the paths must be dotted paths."""
        errors = []
        if FOLDER in changed:
            problem = folder_problem_on_save(settings.get(FOLDER) or "")
            if problem:
                errors.append((FOLDER, problem))
        for name in (RECORD_KEY_PATH, EVENT_TYPE_PATH):
            value = settings.get(name) or ""
            if name in changed and value and not PATH_SYNTAX.fullmatch(value):
                errors.append((name, "must be a dotted path such as order.id"))
        return errors


ON_FILE_DROP = FileDropTrigger(
    name=SOURCE,
    label="On File Drop",
    description="A JSON file dropped into the integration's File Drop Folder.",
    fields=(
        Field("pattern", "File Name Pattern", max_length=200,
              help="Fire only for files whose name matches, e.g. order-*.json (* matches any "
                   "run of characters). Empty fires for every file."),
    ),
)

SETTINGS = [
    Field(FOLDER, "File Drop Folder",
          help="Folder to pick up *.json files from, relative to FILE_DROP_ROOT (or an absolute "
               "path inside it). Empty: no folder is watched."),
    Field(RECORD_KEY_PATH, "File Drop Record Key Path", max_length=200,
          help="Dotted path of the record key in the file's JSON, e.g. order.id. Empty: the "
               "file name without .json."),
    Field(EVENT_TYPE_PATH, "File Drop Event Type Path", default="type", max_length=200,
          help="Dotted path of the event type in the file's JSON (default type)."),
    Field(MAX_BYTES, "File Drop Max Bytes", type="int", default=1_048_576, min=1,
          max=16 * 1_048_576, help="Larger files are moved to rejected/ unread."),
]


def interval_seconds() -> float:
    """Seconds between pick-ups, from WFAPP_FILE_DROP_INTERVAL (read when wfapp starts)."""
    raw = os.environ.get("WFAPP_FILE_DROP_INTERVAL", "")
    if not raw:
        return DEFAULT_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.5 <= value <= 3600:
        raise ValueError(f"WFAPP_FILE_DROP_INTERVAL must be 0.5-3600 seconds, not {raw!r}")
    return value


@hookimpl
def register_trigger_types() -> list[TriggerType]:
    """The On File Drop trigger type."""
    return [ON_FILE_DROP]


@hookimpl
def register_integration_settings() -> list[Field]:
    """The folder to watch and how to read its files."""
    return SETTINGS


@hookimpl
def register_schedules() -> list[tuple[str, float, str]]:
    """Pick up waiting files every WFAPP_FILE_DROP_INTERVAL seconds (default 10)."""
    return [("file-drop-pickup", interval_seconds(), "wfapp_file_drop.pickup.run")]


@hookimpl
def register_integration_panels() -> list[Panel]:
    """The File Drop panel of the integration card."""
    from .panel import render

    return [Panel("file-drop", "File Drop", render, order=60)]
