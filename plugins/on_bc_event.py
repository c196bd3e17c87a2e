"""On BC Event: Microsoft Dynamics 365 Business Central API webhook notifications."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from wfapp.hookspecs import hookimpl
from wfapp.triggers import Field, TriggerType

CHANGE_TYPES = (
    ("created", "Insert (created)"),
    ("updated", "Modify (updated)"),
    ("deleted", "Delete (deleted)"),
    ("collection", "Collection"),
)
ENTITY_SET = re.compile(r"[A-Za-z][A-Za-z0-9]*")


class BcTrigger(TriggerType):
    """Matches notifications by entity set and change type."""

    def check_config(self, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        if not ENTITY_SET.fullmatch(config["resource"]):
            return [("resource", "must be an API entity set name such as salesOrders")]
        return []

    def matches(self, config: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
        """Match when the notification's entity set and change type are the configured ones."""
        payload = event.get("payload") or {}
        resource = str(payload.get("resource") or "")
        # .../companies(<id>)/salesOrders(<id>) -> salesOrders
        entity = resource.rsplit("/", 1)[-1].split("(", 1)[0]
        if entity.lower() != str(config.get("resource", "")).lower():
            return False
        wanted = config.get("change_types") or []
        return not wanted or payload.get("changeType") in wanted


ON_BC_EVENT = BcTrigger(
    name="on_bc_event",
    label="On BC Event",
    description="Business Central webhook notifications at /bc/<integration>/notifications.",
    fields=(
        Field("resource", "Resource (Entity Set)", required=True,
              help="The API entity set, e.g. salesOrders (the table in Business Central)."),
        Field("change_types", "Change Types", type="multichoice", choices=CHANGE_TYPES,
              help="Empty reacts to every change type."),
    ),
)

SETTINGS = [
    Field("bc_client_state", "BC Client State", type="secret",
          help="Shared secret Business Central sends back as clientState; write-only."),
]


@hookimpl
def register_trigger_types() -> list[TriggerType]:
    """The On BC Event trigger type."""
    return [ON_BC_EVENT]


@hookimpl
def register_integration_settings() -> list[Field]:
    """The Business Central client state."""
    return SETTINGS
