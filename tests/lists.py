"""Test helpers for lists and bulk operations: a small workflow whose instances get stuck."""

from __future__ import annotations

import json
from typing import Any

WORKFLOW_CODE = "STUCKFLOW"
INTEGRATION = "STUCK_ORDERS"
# NEW --(import)--> HOLD (captures ref) --(manual RELEASE)--> DONE; HOLD --(manual DROP)--> DONE
WORKFLOW: dict[str, Any] = {
    "format": "wfapp.workflow/v1",
    "workflow": {
        "code": WORKFLOW_CODE, "description": "Instances that wait for a person",
        "initial_state": "NEW", "enabled": True,
        "states": [
            {"code": "NEW", "description": "New", "is_initial": True, "is_final": False},
            {"code": "HOLD", "description": "On hold", "is_initial": False, "is_final": False},
            {"code": "DONE", "description": "Done", "is_initial": False, "is_final": True},
        ],
        "transitions": [
            {"code": "HOLD", "description": "Imported", "from_state": "NEW",
             "to_state": "HOLD", "trigger_type": "on_import", "enabled": True, "priority": 10,
             "trigger_config": {}, "conditions": [], "capture": {"ref": "record.ref"}},
            {"code": "RELEASE", "description": "Release", "from_state": "HOLD",
             "to_state": "DONE", "trigger_type": "manual", "enabled": True, "priority": 10,
             "trigger_config": {"button_label": "Release"}, "conditions": [],
             "capture": {}},
        ],
    },
}


def make_stuck(count: int, prefix: str = "ORD") -> list[str]:
    """The workflow and integration (once), and `count` instances held in HOLD."""
    from sqlalchemy import select

    from wfapp.extensions import db
    from wfapp.models import Integration, Workflow
    from wfapp.queue import get_queue
    from wfapp.services.definitions import import_document
    from wfapp.services.integrations import create_integration, get_integration
    from wfapp.services.runs import start_run

    if db.session.scalar(select(Workflow.id).where(Workflow.code == WORKFLOW_CODE)) is None:
        import_document(json.loads(json.dumps(WORKFLOW)))
    if db.session.scalar(select(Integration.id).where(Integration.code == INTEGRATION)) is None:
        create_integration({"code": INTEGRATION, "workflow_code": WORKFLOW_CODE,
                            "record_url_template": "https://erp.example/orders/{record_key}"})
    keys = [f"{prefix}{i:05d}" for i in range(count)]
    start_run(get_integration(INTEGRATION), "import",
              [{"key": k, "data": {"ref": f"REF-{k}"}, "status": "success"} for k in keys],
              "tester")
    queue = get_queue()
    if queue.embedded:
        queue.drain(limit=100_000)
    else:  # RQ: the test process evaluates the events itself, no worker needed
        from wfapp.services.processing import process_pending

        process_pending(time_budget=120)
    return keys
