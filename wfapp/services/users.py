"""Users, roles and API tokens."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from ..engine import RuleError
from ..extensions import db
from ..models import ApiToken, Role, User, utcnow
from ..passwords import password_problem
from . import audit
from .errors import NotFound, ValidationFailed

TOKEN_PREFIX = "wfa_"
# Checked against when the user name is unknown, so an unknown name takes as long as a wrong
# password (user names cannot be found by timing the log-in).
_DUMMY_HASH = generate_password_hash("wfapp-timing-equaliser")
# A token's last use is written at most this often, not on every API request.
LAST_USED_RESOLUTION = timedelta(minutes=1)
MAX_TOKEN_DAYS = 3650


def create_user(username: str, password: str, role: str) -> User:
    """Create a user; the name must be new, the password at least 8 characters."""
    errors = []
    if not username or len(username) > 64 or not username.replace("_", "").replace(
            "-", "").replace(".", "").replace("@", "").isalnum():
        errors.append(RuleError("username", "must be 1-64 letters, digits or _ - . @"))
    elif db.session.scalar(select(User.id).where(User.username == username)):
        errors.append(RuleError("username", f"user {username!r} already exists"))
    problem = password_problem(password or "", username or "")
    if problem:
        errors.append(RuleError("password", problem))
    if role not in [r.value for r in Role]:
        errors.append(RuleError("role", f"must be one of {', '.join(r.value for r in Role)}"))
    if errors:
        raise ValidationFailed(errors)
    user = User(username=username, password_hash=generate_password_hash(password), role=role)
    db.session.add(user)
    audit.record("create", "user", username, {"role": role})
    try:
        db.session.commit()
    except IntegrityError:  # created by someone else since the check above
        db.session.rollback()
        raise ValidationFailed([RuleError("username", f"user {username!r} already exists")]
                               ) from None
    return user


def _user_named(username: str) -> User | None:
    """The user with this name, or None (a NUL character, which no database stores, too)."""
    if not username or "\x00" in username:
        return None
    return db.session.scalar(select(User).where(User.username == username))


def authenticate(username: str, password: str) -> User | None:
    """Return the active user with these credentials, or None (same work either way)."""
    user = _user_named(username)
    if user is None:
        check_password_hash(_DUMMY_HASH, password or "")
        return None
    if not check_password_hash(user.password_hash, password or "") or not user.active:
        return None
    return user


def end_sessions(user: User) -> None:
    """End every session of this user (in the current transaction): they log in again."""
    user.session_generation = (user.session_generation or 0) + 1


def log_out(user_id: int) -> None:
    """Logging out ends every session of the user, on every browser."""
    user = db.session.get(User, user_id)
    if user is not None:
        end_sessions(user)
        db.session.commit()


def set_password(username: str, password: str, *, current: str | None = None) -> User:
    """Change a password (checking `current` when given); every session of the user ends."""
    user = _user_named(username)
    if user is None:
        raise NotFound(f"user {username!r} does not exist")
    if current is not None and not check_password_hash(user.password_hash, current):
        raise ValidationFailed([RuleError("current_password", "is not your current password")])
    problem = password_problem(password, username)
    if problem:
        raise ValidationFailed([RuleError("password", problem)])
    user.password_hash = generate_password_hash(password)
    user.password_changed_at = utcnow()
    end_sessions(user)
    audit.record("password", "user", username,
                 {"by": "the user" if current is not None else "an admin"})
    db.session.commit()
    return user


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(username: str, name: str = "api", expires_days: int | None = None) -> str:
    """Create an API token for a user (optionally expiring) and return it; its hash is kept."""
    user = _user_named(username)
    if user is None:
        raise NotFound(f"user {username!r} does not exist")
    name = (name or "").strip() or "api"
    if len(name) > 64 or "\x00" in name:
        raise ValidationFailed([RuleError("label", "must be at most 64 characters, no NUL")])
    if expires_days is not None and not 1 <= expires_days <= MAX_TOKEN_DAYS:
        raise ValidationFailed([RuleError("expires_days",
                                          f"must be between 1 and {MAX_TOKEN_DAYS} days")])
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires = utcnow() + timedelta(days=expires_days) if expires_days else None
    db.session.add(ApiToken(user=user, name=name, token_hash=_hash(token), expires_at=expires))
    audit.record("token", "user", username,
                 {"token": name, "expires_at": expires.isoformat() if expires else None})
    db.session.commit()
    return token


def user_for_token(token: str) -> User | None:
    """The active user an unexpired bearer token belongs to, or None."""
    if len(token) > 200:
        return None
    row = db.session.scalar(select(ApiToken).where(ApiToken.token_hash == _hash(token)))
    now = utcnow()
    if row is None or not row.user.active or (row.expires_at is not None
                                              and row.expires_at <= now):
        return None
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
        row.last_used_at = now
        db.session.commit()
    return row.user


def list_users() -> list[User]:
    """All users by name."""
    return list(db.session.scalars(select(User).order_by(User.username)))


def update_user(username: str, role: str, active: bool) -> User:
    """Change a user's role or deactivate them; the last active admin stays an active admin."""
    user = _user_named(username)
    if user is None:
        raise NotFound(f"user {username!r} does not exist")
    if role not in [r.value for r in Role]:
        raise ValidationFailed([RuleError("role", f"must be one of "
                                          f"{', '.join(r.value for r in Role)}")])
    losing_admin = user.role == Role.ADMIN.value and user.active and (
        role != Role.ADMIN.value or not active)
    if losing_admin:
        # Lock the active admins' rows (PostgreSQL), so two admins demoting each other at the
        # same moment cannot both pass this check.
        admins = db.session.scalars(select(User.id).where(
            User.role == Role.ADMIN.value, User.active.is_(True)).with_for_update()).all()
        if len(admins) <= 1:
            db.session.rollback()
            what = "deactivated" if not active else "given another role"
            raise ValidationFailed([RuleError(
                "role" if active else "active",
                f"{username} is the last active admin and cannot be {what}; "
                "make someone else admin first")])
    if user.role != role or user.active != active:
        end_sessions(user)  # the new role (or the deactivation) applies from the next request
        audit.record("update", "user", username, {"changes": audit.field_changes(
            {"role": user.role, "active": user.active}, {"role": role, "active": active})})
    user.role = role
    user.active = active
    db.session.commit()
    return user


def list_tokens() -> dict[int, list[ApiToken]]:
    """Every API token (never the token itself), by user id, oldest first."""
    tokens: dict[int, list[ApiToken]] = {}
    for token in db.session.scalars(select(ApiToken).order_by(ApiToken.id)):
        tokens.setdefault(token.user_id, []).append(token)
    return tokens


def revoke_token(token_id: int) -> str:
    """Delete an API token; return the name of the user it belonged to."""
    token = db.session.get(ApiToken, token_id)
    if token is None:
        raise NotFound(f"API token {token_id} does not exist")
    username = token.user.username
    audit.record("revoke", "user", username, {"token": token.name})
    db.session.delete(token)
    db.session.commit()
    return username
