"""Errors raised by services; views flash them, the API turns them into JSON."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..engine import RuleError


class ServiceError(Exception):
    """Base of all expected failures: carries a code, a message and structured details."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ValidationFailed(ServiceError):
    """Input broke one or more rules; `errors` names each place."""

    status = 422
    code = "validation_failed"

    def __init__(self, errors: Iterable[RuleError], message: str | None = None) -> None:
        self.errors = list(errors)
        text = message or "; ".join(str(e) for e in self.errors[:5])
        if len(self.errors) > 5:
            text += f" (and {len(self.errors) - 5} more)"
        super().__init__(text, [{"path": e.path, "message": e.message} for e in self.errors])


class NotFound(ServiceError):
    """The named object does not exist."""

    status = 404
    code = "not_found"


class Conflict(ServiceError):
    """The change conflicts with existing data (a code exists, instances are active, ...)."""

    status = 409
    code = "conflict"


class Forbidden(ServiceError):
    """The user's role does not allow this."""

    status = 403
    code = "forbidden"


class Unavailable(ServiceError):
    """A service the request needs (the database, the queue) cannot be reached right now."""

    status = 503
    code = "unavailable"


def is_unavailable(error: BaseException) -> bool:
    """True for errors that mean the database cannot be reached (or is too busy) right now."""
    from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    return isinstance(error, OperationalError | InterfaceError | DisconnectionError |
                      PoolTimeout)
