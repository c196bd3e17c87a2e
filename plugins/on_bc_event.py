"""On BC Event: Microsoft Dynamics 365 Business Central API webhook notifications.

The plugin is split into modules that each do one thing:
- `_bc_notify` — `/bc/<integration>/notifications`: the handshake and notifications → events;
- `_bc_client` — the Business Central API over HTTP (OAuth2 client credentials, subscriptions,
  entity reads), every request with a timeout;
- `_bc_subscriptions` — the subscription lifecycle (register, renew, re-create, unregister) and
  the expansion of `collection` notifications, as queue jobs;
- `_bc_views` — the integration card panel, its buttons and the JSON API.

See docs/business-central.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint

from wfapp.plugin_api import Field, Panel, TriggerType, hookimpl

from . import _bc_notify, _bc_subscriptions, _bc_views
from ._bc_resource import entity_set

CHANGE_TYPES = (
    ("created", "Insert (created)"),
    ("updated", "Modify (updated)"),
    ("deleted", "Delete (deleted)"),
    ("collection", "Collection"),
)
ENTITY_SET = re.compile(r"[A-Za-z][A-Za-z0-9]*")
GUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
API_PATH = re.compile(r"api(/[A-Za-z0-9_.-]+){1,3}")
#: Seconds between runs of the job that renews subscriptions before they expire (it only
#: reads the stored subscriptions unless one is due, so running it often costs nothing).
RENEW_TICK_SECONDS = 10.0


class BcTrigger(TriggerType):
    """Matches notifications by entity set and change type."""

    def check_config(self, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        if not ENTITY_SET.fullmatch(config["resource"]):
            return [("resource", "must be an API entity set name such as salesOrders")]
        return []

    def matches(self, config: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
        """Match when the notification's entity set and change type are the configured ones."""
        return not self.explain_mismatch(config, event)

    def explain_mismatch(self, config: Mapping[str, Any], event: Mapping[str, Any]) -> str:
        """Say whether the entity set or the change type did not match."""
        payload = event.get("payload") or {}
        entity = entity_set(str(payload.get("resource") or ""))
        wanted_entity = str(config.get("resource", ""))
        if entity.lower() != wanted_entity.lower():
            return (f"the notification is about {entity or 'no entity set'!s}, this transition "
                    f"waits for {wanted_entity}")
        wanted = config.get("change_types") or []
        change = payload.get("changeType")
        if wanted and change not in wanted:
            return (f"change type {change!r} is not one of {', '.join(wanted)}")
        return ""

    def check_settings(self, settings: Mapping[str, Any], changed: frozenset[str] = frozenset()
                       ) -> list[tuple[str, str]]:
        """The Business Central settings' formats (whether enough are set, Register checks)."""
        errors: list[tuple[str, str]] = []

        def value(name: str) -> str:
            found = settings.get(name)
            return found.strip() if isinstance(found, str) else ""

        for name in ("bc_api_base_url", "bc_token_url", "bc_notification_url"):
            url = value(name)
            if url:
                parts = urlsplit(url)
                if parts.scheme not in ("http", "https") or not parts.netloc:
                    errors.append((name, "must be an http:// or https:// URL"))
                elif parts.query or parts.fragment:
                    errors.append((name, "must not have a query or fragment"))
        for name in ("bc_tenant", "bc_environment"):
            if value(name) and not NAME.fullmatch(value(name)):
                errors.append((name, "may hold letters, digits, '.', '_' and '-' only"))
        if value("bc_company") and not GUID.fullmatch(value("bc_company")):
            errors.append(("bc_company", "must be the company's id, a GUID such as "
                                         "f64eba74-dacd-4854-a584-1834f68cfc3a"))
        if value("bc_resource") and not ENTITY_SET.fullmatch(value("bc_resource")):
            errors.append(("bc_resource", "must be an API entity set name such as salesOrders"))
        if value("bc_api_path") and not API_PATH.fullmatch(value("bc_api_path")):
            errors.append(("bc_api_path", "must look like api/v2.0 or "
                                          "api/<publisher>/<group>/<version>"))
        return errors


ON_BC_EVENT = BcTrigger(
    name="on_bc_event",
    label="On BC Event",
    description="Business Central webhook notifications at /bc/<integration>/notifications.",
    # A notification item; items expanded from a collection add expandedFrom and record.
    event_fields=("subscriptionId", "clientState", "expirationDateTime", "resource",
                  "changeType", "lastModifiedDateTime", "expandedFrom", "record"),
    exclusive_fields=("resource",),
    fields=(
        Field("resource", "Resource (Entity Set)", required=True,
              help="The API entity set, e.g. salesOrders (the table in Business Central)."),
        Field("change_types", "Change Types", type="multichoice", choices=CHANGE_TYPES,
              help="Empty reacts to every change type."),
    ),
)

SETTINGS = [
    Field("bc_client_state", "BC Client State", type="secret",
          help="Shared secret Business Central sends back as clientState; write-only. "
               "Registering a subscription generates one when it is not set."),
    Field("bc_api_base_url", "BC API Base URL",
          default="https://api.businesscentral.dynamics.com/v2.0",
          help="Business Central's API endpoint; tenant and environment are appended."),
    Field("bc_tenant", "BC Tenant", help="The Microsoft Entra tenant id or domain."),
    Field("bc_environment", "BC Environment", default="production",
          help="The Business Central environment name, e.g. production or sandbox."),
    Field("bc_company", "BC Company Id", help="The company's id (a GUID) in the API."),
    Field("bc_api_path", "BC API Path", default="api/v2.0",
          help="api/v2.0 for the standard API; api/<publisher>/<group>/<version> for a custom "
               "API page."),
    Field("bc_resource", "BC Subscription Resource",
          help="The entity set the subscription watches, e.g. salesOrders."),
    Field("bc_client_id", "BC OAuth Client Id",
          help="The app registration's client id (client-credentials flow)."),
    Field("bc_client_secret", "BC OAuth Client Secret", type="secret",
          help="The app registration's client secret; write-only, encrypted at rest."),
    Field("bc_token_url", "BC Token URL",
          help="Empty: https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token."),
    Field("bc_token_scope", "BC Token Scope",
          default="https://api.businesscentral.dynamics.com/.default",
          help="The OAuth2 scope asked for with the client credentials."),
    Field("bc_notification_url", "BC Notification URL",
          help="Where Business Central sends notifications. Empty: this app's "
               "/bc/<integration>/notifications (EXTERNAL_URL, else the address you use). "
               "Business Central online needs an https:// URL it can reach."),
]


@hookimpl
def register_trigger_types() -> list[TriggerType]:
    """The On BC Event trigger type."""
    return [ON_BC_EVENT]


@hookimpl
def register_integration_settings() -> list[Field]:
    """The Business Central client state, API access and subscription settings."""
    return SETTINGS


@hookimpl
def register_blueprints() -> list[Blueprint]:
    """The notification endpoint, the card's subscription buttons and the JSON API."""
    return [_bc_notify.bp, _bc_views.bp, _bc_views.api_bp]


@hookimpl
def register_integration_panels() -> list[Panel]:
    """The Business Central subscription panel on the integration card."""
    return [Panel("bc", "Business Central subscription", _bc_views.render_panel, order=60)]


@hookimpl
def register_schedules() -> list[tuple[str, float, str]]:
    """Renew subscriptions before they expire (and re-create lost ones)."""
    return [("bc-renew", RENEW_TICK_SECONDS,
             "wfapp.builtin_plugins._bc_subscriptions.renew_due")]


@hookimpl
def register_metrics() -> list[Any]:
    """The time left on each integration's Business Central subscription."""
    return [_bc_subscriptions.expiry_metrics]
