"""Password rules: long enough, not a common password, not the user name (NIST SP 800-63B)."""

from __future__ import annotations

from functools import cache
from importlib import resources

MIN_LENGTH = 8
MAX_LENGTH = 200


@cache
def common_passwords() -> frozenset[str]:
    """The deny-list shipped in wfapp/data/common-passwords.txt (lower-case)."""
    text = resources.files("wfapp").joinpath("data/common-passwords.txt").read_text("utf-8")
    return frozenset(line.strip().lower() for line in text.splitlines()
                     if line.strip() and not line.startswith("#"))


def password_problem(password: str, username: str = "") -> str | None:
    """Why this password may not be used, or None when it may."""
    if not password or len(password) < MIN_LENGTH:
        return f"must be at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"must be at most {MAX_LENGTH} characters"
    if "\x00" in password:
        return "must not contain NUL characters"
    lowered = password.lower()
    if lowered in common_passwords():
        return "is one of the most common passwords; choose another"
    if len(set(lowered)) <= 2:
        return "repeats one or two characters; choose another"
    if username and lowered in (username.lower(), username.lower()[::-1]):
        return "must not be the user name"
    return None
