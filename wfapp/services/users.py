"""Users, roles and API tokens."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from ..engine import RuleError
from ..extensions import db
from ..models import ApiToken, Role, User, utcnow
from .errors import NotFound, ValidationFailed

TOKEN_PREFIX = "wfa_"


def create_user(username: str, password: str, role: str) -> User:
    """Create a user; the name must be new, the password at least 8 characters."""
    errors = []
    if not username or len(username) > 64 or not username.replace("_", "").replace(
            "-", "").replace(".", "").replace("@", "").isalnum():
        errors.append(RuleError("username", "must be 1-64 letters, digits or _ - . @"))
    elif db.session.scalar(select(User.id).where(User.username == username)):
        errors.append(RuleError("username", f"user {username!r} already exists"))
    if not password or len(password) < 8:
        errors.append(RuleError("password", "must be at least 8 characters"))
    if role not in [r.value for r in Role]:
        errors.append(RuleError("role", f"must be one of {', '.join(r.value for r in Role)}"))
    if errors:
        raise ValidationFailed(errors)
    user = User(username=username, password_hash=generate_password_hash(password), role=role)
    db.session.add(user)
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
    """Return the active user with these credentials, or None."""
    user = _user_named(username)
    if user is None or not user.active or not check_password_hash(user.password_hash, password):
        return None
    return user


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(username: str, name: str = "api") -> str:
    """Create an API token for a user and return it; only its hash is kept."""
    user = _user_named(username)
    if user is None:
        raise NotFound(f"user {username!r} does not exist")
    name = (name or "").strip() or "api"
    if len(name) > 64 or "\x00" in name:
        raise ValidationFailed([RuleError("label", "must be at most 64 characters, no NUL")])
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    db.session.add(ApiToken(user=user, name=name, token_hash=_hash(token)))
    db.session.commit()
    return token


def user_for_token(token: str) -> User | None:
    """The active user a bearer token belongs to, or None."""
    row = db.session.scalar(select(ApiToken).where(ApiToken.token_hash == _hash(token)))
    if row is None or not row.user.active:
        return None
    row.last_used_at = utcnow()
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
    db.session.delete(token)
    db.session.commit()
    return username
