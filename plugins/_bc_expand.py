"""Expanding a `collection` notification into one event per changed record (a queue job).

Business Central sends `collection` instead of single notifications when more than 1,000
records changed within its 30-second window; the item's `resource` is the entity set with a
`$filter=lastModifiedDateTime gt …`. The job reads that URL page by page (following
`@odata.nextLink`, only on the same host) and stores each page's records as events of change
type `updated` — Business Central does not say which were created — deduplicated by the record's
id and lastModifiedDateTime, so running it twice stores nothing twice.
"""

from __future__ import annotations

import time
from typing import Any

from wfapp.plugin_api import (
    DeliveryOutcome,
    IntegrationInfo,
    NewEvent,
    config,
    find_integration,
    job,
    record_delivery,
    state_put,
    store_events,
    utcnow,
)

from ._bc_client import BcAccess, BcError, access_for, read_page
from ._bc_resource import CONTROL, MAX_RECORD_KEY, api_relative, record_dedupe_key

SOURCE = "on_bc_event"
MAX_PAGES = 1000
ATTEMPTS = 3


def _read(access: BcAccess, url: str) -> dict[str, Any]:
    """One page, tried up to three times (a passing network fault should not lose a page)."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return read_page(access, url)
        except BcError as error:
            retry = error.status is None or error.status in (408, 429) or error.status >= 500
            if attempt == ATTEMPTS or not retry:
                raise
            time.sleep(attempt)
    raise AssertionError("unreachable")


def record_event(entity_path: str, item: dict[str, Any], record: Any) -> NewEvent | None:
    """The event for one record read for a collection; None when the record has no usable id."""
    if not isinstance(record, dict):
        return None
    key = record.get("id")
    if not isinstance(key, str) or not key or len(key) > MAX_RECORD_KEY or CONTROL.search(key):
        return None
    modified = record.get("lastModifiedDateTime")
    modified = modified if isinstance(modified, str) else ""
    payload = {"subscriptionId": item.get("subscriptionId"),
               "resource": f"{entity_path}({key})", "changeType": "updated",
               "lastModifiedDateTime": modified,
               "expandedFrom": {"resource": item.get("resource"),
                                "lastModifiedDateTime": item.get("lastModifiedDateTime")},
               "record": record}
    return NewEvent(source=SOURCE, type="updated", record_key=key, payload=payload,
                    dedupe_key=record_dedupe_key(entity_path, key, modified))


def expand(info: IntegrationInfo, item: dict[str, Any]) -> dict[str, Any]:
    """Read the collection's records into events; return what happened (also when it failed)."""
    outcome: dict[str, Any] = {"resource": item.get("resource"), "started_at":
                               utcnow().isoformat(), "pages": 0, "records": 0, "stored": 0,
                               "duplicates": 0, "skipped": 0, "error": None}
    access, missing = access_for(info, for_subscription=False)
    path = api_relative(str(item.get("resource") or ""))
    if access is None:
        outcome["error"] = "no Business Central API access: " + ", ".join(n for n, _ in missing)
        return outcome
    if path is None:
        outcome["error"] = "the collection's resource is not an api/ path; not read"
        return outcome
    entity_path = "/" + path.split("?", 1)[0]
    url: str | None = f"{access.environment_url}/{path}"
    limit = int(config("BC_EXPAND_MAX_PAGES", MAX_PAGES))
    try:
        while url:
            if outcome["pages"] >= limit:
                outcome["error"] = f"stopped after {limit} pages (BC_EXPAND_MAX_PAGES)"
                break
            body = _read(access, url)
            outcome["pages"] += 1
            events = []
            for record in body["value"]:
                event = record_event(entity_path, item, record)
                if event is None:
                    outcome["skipped"] += 1
                else:
                    events.append(event)
            stored = store_events(info, events)
            outcome["records"] += len(body["value"])
            outcome["stored"] += stored.stored
            outcome["duplicates"] += stored.duplicates
            link = body.get("@odata.nextLink")
            url = link if isinstance(link, str) and link else None
    except BcError as error:
        outcome["error"] = error.message
    return outcome


@job
def expand_collection(code: str, item: dict[str, Any]) -> dict[str, Any] | None:
    """Queue job: expand one stored `collection` notification of integration `code`."""
    info = find_integration(code)
    if info is None or not isinstance(item, dict):
        return None
    outcome = expand(info, item)
    outcome["finished_at"] = utcnow().isoformat()
    state_put(info, "bc", "expansion", outcome)
    if outcome["error"]:
        record_delivery(info, "bc", DeliveryOutcome.FAILED,
                        f"expanding a collection failed after {outcome['pages']} pages and "
                        f"{outcome['stored']} new events: {outcome['error']}")
    return outcome
