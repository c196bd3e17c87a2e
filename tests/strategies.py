"""Hypothesis strategies for valid workflow definitions (the export format)."""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# Profiles for the database-backed property tests: fast by default, deeper on demand
# (WFAPP_HYPOTHESIS_PROFILE=thorough). Tests reset the database per example themselves.
settings.register_profile("wfapp-fast", max_examples=40, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.register_profile("wfapp-thorough", parent=settings.get_profile("wfapp-fast"),
                          max_examples=500)
DB_PROFILE = settings.get_profile(
    "wfapp-" + os.environ.get("WFAPP_HYPOTHESIS_PROFILE", "fast"))

CODE = st.from_regex(r"[A-Z][A-Z0-9_]{0,11}", fullmatch=True)
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=30)

CONFIGS = {
    "manual": st.fixed_dictionaries({}, optional={"button_label": TEXT.map(lambda s: s[:60]),
                                                  "confirm": st.booleans()}),
    "on_import": st.fixed_dictionaries({}, optional={
        "record_status": st.sampled_from(["success", "error"])}),
    "on_export": st.fixed_dictionaries({}, optional={
        "record_status": st.sampled_from(["success", "error"])}),
    "on_webhook": st.fixed_dictionaries({}, optional={"event_filter": st.sampled_from(
        ["order.*", "order.paid", "*"])}),
    "on_scheduled_poll": st.fixed_dictionaries({
        "url": st.sampled_from(["https://api.example/orders/{record_key}",
                                "http://h/x?n={vars.no}"]),
        "interval_minutes": st.sampled_from([1, 0.5, 15])},
        optional={"method": st.sampled_from(["GET", "POST"]),
                  # Header values may not hold line breaks or NUL, and {..} is a placeholder.
                  "headers": st.dictionaries(st.sampled_from(["X-A", "Accept"]), st.text(
                      st.characters(exclude_characters="{}\r\n\x00",
                                    exclude_categories=("Cs",)), max_size=5), max_size=2),
                  "response_path": st.just("status")}),
    "on_action_result": st.fixed_dictionaries(
        {"action": st.sampled_from(["submit", "http_request", "notify"])},
        optional={"outcome": st.sampled_from(["succeeded", "failed"])}),
    "on_bc_event": st.fixed_dictionaries({"resource": st.sampled_from(["salesOrders",
                                                                       "customers"])},
                                         optional={"change_types": st.lists(st.sampled_from(
                                             ["created", "updated", "deleted"]),
                                             unique=True, max_size=3)}),
}

FIELD = st.sampled_from(["event.total", "event.data.status", "record.country",
                         "instance.vars.order_no", "instance.state", "record.lines.0.qty"])
SCALAR = st.one_of(st.integers(-1000, 1000), st.text(max_size=8),
                   st.floats(allow_nan=False, allow_infinity=False, width=32))


@st.composite
def condition(draw: Any) -> dict[str, Any]:
    """One valid condition of any operator."""
    op = draw(st.sampled_from(["eq", "ne", "gt", "ge", "lt", "le", "in", "not_in", "contains",
                               "starts_with", "exists", "not_exists", "matches"]))
    field = draw(FIELD)
    if op in ("exists", "not_exists"):
        return {"field": field, "operator": op}
    if op in ("in", "not_in"):
        value: Any = draw(st.lists(SCALAR, max_size=3))
    elif op in ("gt", "ge", "lt", "le"):
        value = draw(st.one_of(st.integers(-100, 100), st.sampled_from(
            ["2026-01-31", "12.5", "2026-01-31T10:00:00Z"])))
    elif op in ("matches", "starts_with"):
        value = draw(st.sampled_from([r"SO-\d+", "abc", ".*"]))
    else:
        value = draw(st.one_of(SCALAR, st.booleans(), st.none()))
    return {"field": field, "operator": op, "value": value}


@st.composite
def workflows(draw: Any) -> dict[str, Any]:
    """A valid workflow document."""
    codes = draw(st.lists(CODE, min_size=1, max_size=8, unique=True))
    finals = set(draw(st.lists(st.sampled_from(codes[1:] or codes), max_size=3))) - {codes[0]}
    live = [c for c in codes if c not in finals]
    transitions = []
    tcodes = draw(st.lists(CODE, max_size=10, unique=True))
    for tcode in tcodes:
        trigger = draw(st.sampled_from(sorted(CONFIGS)))
        transitions.append({
            "code": tcode, "description": draw(TEXT),
            "from_state": draw(st.sampled_from(live)), "to_state": draw(st.sampled_from(codes)),
            "trigger_type": trigger, "enabled": draw(st.booleans()),
            "priority": draw(st.integers(-50, 50)), "trigger_config": draw(CONFIGS[trigger]),
            "conditions": draw(st.lists(condition(), max_size=3)),
            "capture": draw(st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,8}",
                                                          fullmatch=True),
                                            st.sampled_from(["event.number", "record.total",
                                                             "event.data.tracking"]),
                                            max_size=2)),
        })
    states = []
    for code in codes:
        leaving = [t["code"] for t in transitions if t["from_state"] == code]
        timed = code not in finals and leaving and draw(st.booleans())
        states.append({
            "code": code, "description": draw(TEXT), "is_initial": code == codes[0],
            "is_final": code in finals,
            "timeout_hours": draw(st.sampled_from([0.25, 1, 24, 1.5])) if timed else None,
            "on_timeout_transition": draw(st.sampled_from(leaving)) if timed else None,
        })
    order = draw(st.permutations(range(len(states))))
    return {"format": "wfapp.workflow/v1", "workflow": {
        "code": draw(CODE), "description": draw(TEXT), "initial_state": codes[0],
        "enabled": draw(st.booleans()), "states": [states[i] for i in order],
        "transitions": transitions}}
