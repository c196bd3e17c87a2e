"""The objects trigger plugins declare: config fields and trigger types. Pure Python, no Flask."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

FIELD_TYPES = ("string", "text", "bool", "int", "number", "choice", "multichoice", "json", "secret",
               "map", "list")
#: What a "list" field holds: text items, or whole numbers (within min/max when set).
LIST_ITEMS = ("string", "int")


@dataclass(frozen=True)
class Field:
    """One configuration field a plugin declares; rendered as a form field and type-checked."""

    name: str
    label: str
    type: str = "string"
    required: bool = False
    default: Any = None
    help: str = ""
    choices: tuple[tuple[str, str], ...] = ()
    min: float | None = None
    max: float | None = None
    max_length: int = 500
    #: For a "list" field: the type of its items ("string" or "int").
    item: str = "string"

    def __post_init__(self) -> None:
        if self.type not in FIELD_TYPES:
            raise ValueError(f"field {self.name!r}: unknown type {self.type!r}")
        if self.item not in LIST_ITEMS:
            raise ValueError(f"field {self.name!r}: unknown item type {self.item!r}")

    def check(self, value: Any) -> str | None:
        """Return an error message when `value` (already typed, as in JSON) does not fit."""
        if value is None or value == "" or value == []:
            return "is required" if self.required else None
        kind = self.type
        if kind in ("string", "text", "secret"):
            if not isinstance(value, str):
                return "must be a string"
            if len(value) > self.max_length:
                return f"must be at most {self.max_length} characters"
        elif kind == "bool":
            if not isinstance(value, bool):
                return "must be true or false"
        elif kind in ("int", "number"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                return "must be a number"
            if kind == "int" and not (isinstance(value, int) or float(value).is_integer()):
                return "must be a whole number"
            if self.min is not None and value < self.min:
                return f"must be at least {self.min:g}"
            if self.max is not None and value > self.max:
                return f"must be at most {self.max:g}"
        elif kind == "choice":
            allowed = [c for c, _ in self.choices]
            if value not in allowed:
                return f"must be one of {', '.join(allowed)}"
        elif kind == "multichoice":
            allowed = [c for c, _ in self.choices]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                return "must be a list of strings"
            bad = [v for v in value if v not in allowed]
            if bad:
                return f"unknown value {bad[0]!r}; allowed: {', '.join(allowed)}"
        elif kind == "json" and not isinstance(value, dict):
            return "must be an object of names to values"
        elif kind == "map":
            if not isinstance(value, dict) or not all(isinstance(v, str)
                                                      for v in value.values()):
                return "must be an object of names to text values"
        elif kind == "list":
            return self._check_list(value)
        return None

    def _check_list(self, value: Any) -> str | None:
        if not isinstance(value, list):
            return "must be a list"
        for item in value:
            if self.item == "string" and not isinstance(item, str):
                return "must be a list of strings"
            if self.item == "int":
                if isinstance(item, bool) or not isinstance(item, int):
                    return "must be a list of whole numbers"
                if (self.min is not None and item < self.min) or \
                        (self.max is not None and item > self.max):
                    return f"{item} is not between {self.min:g} and {self.max:g}" \
                        if self.min is not None and self.max is not None else \
                        f"{item} is out of range"
        return None


@dataclass
class TriggerType:
    """A kind of trigger: its identifier, label, config fields and event matching.

    Plugins subclass this and override `check_config` (extra validation) and `matches`.
    """

    name: str
    label: str
    description: str = ""
    fields: tuple[Field, ...] = field(default_factory=tuple)
    #: True when people fire it from the instance page instead of events.
    manual: bool = False
    #: The top-level payload fields its events carry (what `event.<name>` can read), for lint;
    #: None (the default) when the payload is whatever the sender sends (webhooks, polls).
    event_fields: tuple[str, ...] | None = None
    #: String config fields where two different values (no `*` in either) never match the same
    #: event, so lint can tell two transitions apart (choice and multichoice fields always can).
    exclusive_fields: tuple[str, ...] = ()

    def validate(self, config: Any) -> list[tuple[str, str]]:
        """Return (field name, message) pairs for everything wrong in `config`."""
        return validate_config(self.fields, config, f"trigger type {self.name}",
                               self.check_config)

    def check_config(self, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Plugin-specific checks, run once every field has the right type."""
        return []

    def matches(self, config: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
        """Whether an event (type, payload, record, source) satisfies this trigger's config."""
        return True

    def explain_mismatch(self, config: Mapping[str, Any], event: Mapping[str, Any]) -> str:
        """Why `matches` said no, for the "why didn't it move?" panel ("" when it matches)."""
        if self.matches(config, event):
            return ""
        return f"the event does not match this {self.label} transition's settings"

    def check_settings(self, settings: Mapping[str, Any], changed: frozenset[str] = frozenset()
                       ) -> list[tuple[str, str]]:
        """Check an integration's settings as they would be saved: (setting, message) pairs.

        `settings` holds every non-secret setting and the secrets posted in this save (stored
        secrets are never decrypted for this); `changed` names the settings this save touches.
        """
        return []

    def schedule_seconds(self, config: Mapping[str, Any]) -> float | None:
        """For a scheduled trigger (a poll): seconds between runs per waiting instance.

        None (the default) means events come from outside; a number makes wfapp keep a timer per
        active instance in the transition's From State (see `wfapp.plugin_api.claim_due`).
        """
        return None


@dataclass(frozen=True)
class Panel:
    """A section a plugin adds to the integration card (endpoint URL, deliveries, ...).

    `render(integration)` gets a `wfapp.plugin_api.IntegrationInfo` and returns HTML (use
    `flask.render_template`, whose output is safe markup); it runs inside the card's request.
    """

    name: str
    title: str
    render: Callable[[Any], str]
    order: int = 50


@lru_cache(maxsize=1024)
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")))


def glob_match(pattern: str, value: str) -> bool:
    """Match `value` against a pattern where `*` stands for any run of characters."""
    if "*" not in pattern:
        return pattern == value
    return _glob(pattern).fullmatch(value) is not None


def validate_config(fields: Sequence[Field], config: Any, owner: str,
                    check_config: Callable[[Mapping[str, Any]], list[tuple[str, str]]]
                    ) -> list[tuple[str, str]]:
    """(field name, message) pairs for a trigger's or an action's config: unknown fields, each
    declared field's own check, then the plugin's `check_config` once the fields are right."""
    if not isinstance(config, Mapping):
        return [("", "must be an object")]
    known = {f.name for f in fields}
    errors = [(k, f"unknown field for {owner}") for k in config if k not in known]
    for f in fields:
        message = f.check(config.get(f.name))
        if message:
            errors.append((f.name, message))
    if not errors:
        errors.extend(check_config(config))
    return errors
