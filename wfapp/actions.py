"""The objects action plugins declare: action types, what they get, what they answer. Pure Python.

A transition's `actions` run when it fires. An action type either changes the instance inside
the transition's own transaction (`in_transaction`, e.g. `set_variable`: `apply` returns the
variables to set) or has a side effect outside wfapp (`deliver`: an HTTP call, an e-mail), run
after the transition commits from an outbox row, at least once, with retries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .triggers import Field, validate_config

ACTION_ID_PATTERN = r"[A-Za-z0-9_.-]{1,40}"


@dataclass
class ActionContext:
    """What an action sees of the transition that fired: the instance after it moved.

    `secrets` holds the integration's named secrets (for `{secret.<name>}`) and `settings` its
    non-secret settings; both are filled only when a delivery runs, never stored in the outbox.
    An alert's notification has no instance (`instance_id` None) and carries `alert` instead:
    what opened or resolved (`event`, `id`, `rule`, `message`, `value`, times).
    """

    instance_id: int | None
    workflow: str
    integration: str
    record_key: str | None
    run_id: int | None
    transition: str
    from_state: str | None
    to_state: str
    vars: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    delivery_id: int | None = None
    idempotency_key: str = ""
    attempt: int = 1
    secrets: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    alert: dict[str, Any] | None = None


@dataclass
class ActionResult:
    """What one delivery attempt did.

    `retryable` False means trying again cannot help (a 4xx, a template that cannot be filled):
    the delivery fails at once instead of using its attempts. `retry_after` (seconds) is the
    receiver's own `Retry-After`. `vars` are values captured from the response.
    """

    succeeded: bool
    status_code: int | None = None
    response: Any = None
    error: str = ""
    retryable: bool = True
    retry_after: float | None = None
    request: dict[str, Any] = field(default_factory=dict)
    vars: dict[str, Any] = field(default_factory=dict)


@dataclass
class ActionType:
    """A kind of transition action: identifier, label, config fields and what it does.

    Plugins subclass this and override `check_config` and either `apply` (in the transition's
    transaction) or `deliver` (after commit).
    """

    name: str
    label: str
    description: str = ""
    fields: tuple[Field, ...] = field(default_factory=tuple)
    #: True when `apply` runs inside the transition's transaction (no outbox row, no retries).
    in_transaction: bool = False
    #: Default attempts for a delivery when its config has no `max_attempts`.
    default_attempts: int = 5

    def validate(self, config: Any) -> list[tuple[str, str]]:
        """Return (field name, message) pairs for everything wrong in `config`."""
        return validate_config(self.fields, config, f"action type {self.name}",
                               self.check_config)

    def check_config(self, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Plugin-specific checks, run once every field has the right type."""
        return []

    def apply(self, config: Mapping[str, Any], context: ActionContext) -> dict[str, Any]:
        """For an in-transaction action: the workflow variables to set."""
        raise NotImplementedError(f"action type {self.name} is not an in-transaction action")

    def deliver(self, config: Mapping[str, Any], context: ActionContext) -> ActionResult:
        """For a side-effecting action: one attempt; must not raise for an expected failure."""
        raise NotImplementedError(f"action type {self.name} has no delivery")

    def split(self, config: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The deliveries one action makes (one per subscriber for a webhook); default one."""
        return [dict(config)]

    def max_concurrency(self, config: Mapping[str, Any]) -> int | None:
        """How many deliveries of this action may run at once (None: only the integration's
        limit applies); read from the config's `max_concurrency`."""
        value = config.get("max_concurrency")
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 1:
            return None
        return int(value)

    def max_attempts(self, config: Mapping[str, Any]) -> int:
        """How many attempts a delivery of this config gets."""
        value = config.get("max_attempts")
        return int(value) if isinstance(value, int | float) and value >= 1 else \
            self.default_attempts
