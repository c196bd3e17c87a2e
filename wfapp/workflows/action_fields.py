"""The transition page's action editor: an ordered list of actions, each a type and the fields
that type's plugin declares (`wfapp.actions.ActionType.fields`).

Inputs post as `act-<i>-type`, `act-<i>-id`, `act-<i>-f-<field>` (a key/value field as
`act-<i>-f-<field>-<j>-k|v`); `act-<i>-shown` names the type whose fields were shown, so a type
picked without scripts first shows its fields. Submit buttons named `act-op` add, remove and
move actions on the server, so the editor works without JavaScript. Parsing only turns text into
typed JSON; the rules are the action type's own `validate`, run by the service as for the API.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..actions import ActionType
from ..engine import RuleError
from ..inputs import InputError, parse_json
from ..triggers import Field

PREFIX = "act"
RAW = "__raw__"  # an action whose type is not installed: its config as JSON text
MAX_ROWS = 40  # the service refuses more than its limit; this only bounds parsing
OP_RE = re.compile(r"(add|refresh)|(remove|up|down)-(\d+)|pair-(\d+)-(\w+)")
ERROR_RE = re.compile(r"actions\[(\d+)\](?:\.(id|type|config))?(?:\.(\w+))?(.*)")


@dataclass
class ActionRow:
    """One action as the editor shows it: what was typed, and the errors at its inputs."""

    type: str
    id: str = ""
    #: field name → text (str), ticked (bool), picked (list[str]) or pairs (list[tuple]).
    values: dict[str, Any] = field(default_factory=dict)
    #: field name ("id", "type", "" for the whole action) → messages.
    errors: dict[str, list[str]] = field(default_factory=dict)
    #: extra empty key/value rows to show per field (an "Add row" press adds one).
    blank: dict[str, int] = field(default_factory=dict)

    def error(self, name: str, message: str) -> None:
        """Add an error at one of this action's inputs."""
        self.errors.setdefault(name, []).append(message)


def _display(spec: Field, value: Any) -> Any:
    """A stored config value as its input shows it."""
    if value is None:
        return [] if spec.type in ("map", "multichoice") else False if spec.type == "bool" \
            else ""
    if spec.type == "bool":
        return bool(value)
    if spec.type == "multichoice":
        return [str(v) for v in value] if isinstance(value, list) else []
    if spec.type == "map" and isinstance(value, Mapping):
        return [(str(k), v if isinstance(v, str) else json.dumps(v)) for k, v in value.items()]
    if spec.type == "list" and isinstance(value, list):
        return "\n".join(str(v) for v in value)
    if spec.type in ("json", "map", "list"):
        return json.dumps(value, indent=2)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def rows_from_actions(actions: Any, types: Mapping[str, ActionType]) -> list[ActionRow]:
    """The editor's rows for a transition's stored actions."""
    rows = []
    for action in actions if isinstance(actions, list) else []:
        action = action if isinstance(action, Mapping) else {}
        kind = str(action.get("type") or "")
        found_config = action.get("config")
        config: Mapping[str, Any] = found_config if isinstance(found_config, Mapping) else {}
        row = ActionRow(type=kind, id=str(action.get("id") or ""))
        found = types.get(kind)
        if found is None:
            row.values[RAW] = json.dumps(config, indent=2)
        else:
            row.values = {f.name: _display(f, config.get(f.name)) for f in found.fields}
        rows.append(row)
    return rows


def _indexes(form: Mapping[str, Any], head: str) -> list[int]:
    found = set()
    for key in form:
        if key.startswith(head):
            number = key[len(head):].split("-", 1)[0]
            if number.isdigit() and int(number) < 10_000:
                found.add(int(number))
    return sorted(found)


def _read_values(form: Any, i: int, kind: ActionType | None, shown: str,
                 types: Mapping[str, ActionType]) -> dict[str, Any]:
    """What was typed into action i's inputs, for the fields of the type that was shown."""
    base = f"{PREFIX}-{i}-f-"
    shown_type = types.get(shown)
    if shown_type is None:
        return {RAW: form.get(base + RAW, "")} if kind is None else {}
    values: dict[str, Any] = {}
    for spec in shown_type.fields:
        name = base + spec.name
        if spec.type == "bool":
            values[spec.name] = bool(form.get(name))
        elif spec.type == "multichoice":
            values[spec.name] = form.getlist(name)
        elif spec.type == "map":
            pairs = []
            for j in _indexes(form, name + "-"):
                key = (form.get(f"{name}-{j}-k") or "").strip()
                value = form.get(f"{name}-{j}-v") or ""
                if key or value.strip():
                    pairs.append((key, value))
            values[spec.name] = pairs
        else:
            values[spec.name] = form.get(name, "")
    return values


def read_rows(form: Any, types: Mapping[str, ActionType]) -> list[ActionRow]:
    """The actions as posted, in page order; a changed type keeps values of same-named fields."""
    rows = []
    for i in _indexes(form, f"{PREFIX}-")[:MAX_ROWS]:
        if f"{PREFIX}-{i}-type" not in form:
            continue
        kind = (form.get(f"{PREFIX}-{i}-type") or "").strip()
        shown = (form.get(f"{PREFIX}-{i}-shown") or kind).strip()
        values = _read_values(form, i, types.get(kind), shown, types)
        if kind != shown and kind in types:
            names = {f.name for f in types[kind].fields}
            values = {k: v for k, v in values.items() if k in names}
            for spec in types[kind].fields:
                values.setdefault(spec.name, _display(spec, None))
        rows.append(ActionRow(type=kind, id=(form.get(f"{PREFIX}-{i}-id") or "").strip(),
                              values=values))
    return rows


def type_changed(form: Any) -> bool:
    """True when an action's type was changed since its fields were shown."""
    return any((form.get(f"{PREFIX}-{i}-shown") or "") != (form.get(f"{PREFIX}-{i}-type") or "")
               for i in _indexes(form, f"{PREFIX}-") if f"{PREFIX}-{i}-shown" in form)


def apply_op(op: str, rows: list[ActionRow], new_type: str,
             types: Mapping[str, ActionType]) -> tuple[str, int | None]:
    """Add, remove or move an action, or add a key/value row; answers (what happened, the
    action to focus). An unknown op changes nothing."""
    match = OP_RE.fullmatch(op or "")
    if match is None:
        return "", None
    if match.group(1) == "add":
        kind = new_type if new_type in types else next(iter(types), "")
        spec = types.get(kind)
        rows.append(ActionRow(type=kind, values={f.name: _display(f, f.default)
                                                 for f in (spec.fields if spec else ())}))
        return f"Action {len(rows)} added", len(rows) - 1
    if match.group(1) == "refresh":
        return "Action type changed: fill in its fields", None
    if match.group(4) is not None:
        i, name = int(match.group(4)), match.group(5)
        if i < len(rows):
            rows[i].blank[name] = rows[i].blank.get(name, 0) + 1
        return "Row added", i
    verb, i = match.group(2), int(match.group(3))
    if i >= len(rows):
        return "", None
    if verb == "remove":
        del rows[i]
        return f"Action {i + 1} removed", max(0, i - 1) if rows else None
    j = i - 1 if verb == "up" else i + 1
    if 0 <= j < len(rows):
        rows[i], rows[j] = rows[j], rows[i]
        return f"Action {i + 1} moved {verb}", j
    return "", i


def _typed(spec: Field, value: Any) -> tuple[Any, str]:
    """A field's typed value from its input (None = left empty), or why it cannot be read."""
    if spec.type == "bool":
        return bool(value), ""
    if spec.type == "multichoice":
        return (list(value) or None), ""
    if spec.type == "map":
        if any(not k for k, _ in value):
            return None, "every row needs a name"
        names = [k for k, _ in value]
        duplicate = next((k for k in names if names.count(k) > 1), None)
        if duplicate:
            return None, f"{duplicate!r} is given twice"
        return ({k: v for k, v in value} or None), ""
    text = str(value or "").strip()
    if not text:
        return None, ""
    if spec.type in ("int", "number"):
        try:
            number = float(text.replace(",", ".") if "." not in text else text)
        except ValueError:
            return None, "must be a number"
        if number != number or number in (float("inf"), float("-inf")):
            return None, "must be a number"
        if spec.type == "int" and not number.is_integer():
            return None, "must be a whole number"
        return (int(number) if number.is_integer() else number), ""
    if spec.type == "list":
        items = [p.strip() for p in re.split(r"[\n,;]" if spec.item == "int" else r"\n", text)
                 if p.strip()]
        if spec.item == "int":
            if not all(re.fullmatch(r"-?\d{1,9}", p) for p in items):
                return None, "must be whole numbers, one a line or separated by commas"
            return [int(p) for p in items], ""
        return items, ""
    if spec.type == "json":
        try:
            return parse_json(text), ""
        except InputError as exc:
            return None, f"not valid JSON: {exc.message}"
    return text, ""


def to_actions(rows: list[ActionRow], types: Mapping[str, ActionType]) -> list[dict[str, Any]]:
    """The actions list to save; an input that cannot be read gets its error on its row."""
    actions = []
    for row in rows:
        action: dict[str, Any] = {"type": row.type}
        if row.id:
            action["id"] = row.id
        config: dict[str, Any] = {}
        kind = types.get(row.type)
        if kind is None:
            raw = str(row.values.get(RAW) or "").strip()
            try:
                config = parse_json(raw) if raw else {}
            except InputError as exc:
                row.error(RAW, f"not valid JSON: {exc.message}")
        else:
            for spec in kind.fields:
                value, problem = _typed(spec, row.values.get(spec.name))
                if problem:
                    row.error(spec.name, problem)
                elif value is not None:
                    config[spec.name] = value
        action["config"] = config
        actions.append(action)
    return actions


def has_errors(rows: list[ActionRow]) -> bool:
    """Whether any action has an error at one of its inputs."""
    return any(row.errors for row in rows)


def place_errors(errors: list[RuleError], prefix: str, rows: list[ActionRow]
                 ) -> list[RuleError]:
    """Put each `<prefix>.actions[i]…` error on its action's input; return the rest."""
    rest = []
    for error in errors:
        tail = error.path[len(prefix) + 1:] if error.path.startswith(prefix + ".") else ""
        match = ERROR_RE.fullmatch(tail)
        if match is None or int(match.group(1)) >= len(rows):
            rest.append(error)
            continue
        row = rows[int(match.group(1))]
        part, name = match.group(2), match.group(3)
        if part in ("id", "type"):
            row.error(part, error.message)
        elif part == "config" and name and (name in row.values or name == RAW):
            row.error(name, error.message)
        elif part == "config" and RAW in row.values:
            row.error(RAW, error.message)
        else:
            row.error("", (f"{name}: " if name else "") + error.message)
    return rest


def input_id(i: int, name: str, row: ActionRow) -> str:
    """The id of the input an error of action i's `name` is shown at (for links and focus)."""
    if name in ("id", "type"):
        return f"{PREFIX}-{i}-{name}"
    if not name:
        return f"{PREFIX}-{i}-type"
    value = row.values.get(name)
    if isinstance(value, list) and (not value or isinstance(value[0], tuple)):
        return f"{PREFIX}-{i}-f-{name}-0-k"
    return f"{PREFIX}-{i}-f-{name}"


def summary(rows: list[ActionRow]) -> list[dict[str, str]]:
    """Every action error for the list above the editor: `actions[i].<field>`, its message
    and the input it belongs to."""
    out: list[dict[str, str]] = []
    for i, row in enumerate(rows):
        for name, messages in row.errors.items():
            shown = "config" if name == RAW else name
            path = f"actions[{i}]" + (f".{shown}" if shown else "")
            out.extend({"path": path, "message": m, "target": input_id(i, name, row)}
                       for m in messages)
    return out
