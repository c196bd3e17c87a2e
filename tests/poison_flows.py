"""The poison test plugin's workflow and inbox layout, shared by the RQ and embedded tests."""

from __future__ import annotations

from wfapp.services.definitions import FORMAT, import_document
from wfapp.services.events import NewEvent, partition_of
from wfapp.services.integrations import create_integration


def poison_setup() -> None:
    """Workflow TOGGLE (A ⇄ B on every on_poison event) and integration POISON."""
    import_document({"format": FORMAT, "workflow": {
        "code": "TOGGLE", "initial_state": "A", "states": [
            {"code": "A", "is_initial": True}, {"code": "B"}],
        "transitions": [
            {"code": "AB", "from_state": "A", "to_state": "B", "trigger_type": "on_poison"},
            {"code": "BA", "from_state": "B", "to_state": "A", "trigger_type": "on_poison"}]}})
    create_integration({"code": "POISON", "workflow_code": "TOGGLE"})


def same_partition_keys(integration_id: int, count: int) -> list[str]:
    """Record keys that share one inbox partition, so a poison event sits among good ones."""
    target = partition_of(integration_id, "K0", None)
    keys = [f"K{i}" for i in range(5000) if partition_of(integration_id, f"K{i}", None) == target]
    return keys[:count]


def poisoned_events(keys: list[str], poisons: dict[int, str]) -> list[NewEvent]:
    """12 good events over four keys (each key toggled three times, ending in B), with a poison
    event `{"poison": kind}` on key `n % 4` after the `n`-th good one for each `n: kind`."""
    events = []
    for i in range(12):
        events.append(NewEvent("on_poison", "good", keys[i % 4], None, {"n": i}))
        if i in poisons:
            events.append(NewEvent("on_poison", "bad", keys[i % 4], None,
                                   {"poison": poisons[i]}))
    return events
