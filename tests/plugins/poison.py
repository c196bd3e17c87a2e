"""A test plugin whose matching crashes, hangs, spins or raises for chosen payloads (poison)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from wfapp.plugin_api import TriggerType, hookimpl


class PoisonTrigger(TriggerType):
    """Matches every event, except that `{"poison": ...}` kills, hangs, spins or raises first."""

    def matches(self, config: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
        poison = (event.get("payload") or {}).get("poison")
        if poison == "exit":
            os._exit(3)  # the worker process dies in the middle of the batch
        if poison == "hang":
            time.sleep(3600)
        if poison == "spin":
            while True:  # busy, never returns: holds the GIL as much as Python lets it
                pass
        if poison == "raise":
            raise RuntimeError("plugin bug")
        return True


@hookimpl
def register_trigger_types() -> list[TriggerType]:
    return [PoisonTrigger(name="on_poison", label="On Poison")]
