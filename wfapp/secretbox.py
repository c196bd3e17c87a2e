"""Secrets at rest: integration secrets are stored encrypted (Fernet, AES-128-CBC + HMAC).

The key comes from the environment: `SECRETS_KEY` (`WFAPP_SECRETS_KEY`), one Fernet key or
several separated by commas — the first encrypts, all decrypt, so a key can be rotated. When it
is unset, a key is derived from `SECRET_KEY`, which every host of a deployment shares anyway.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class SecretUnreadable(Exception):
    """A stored secret cannot be decrypted with the configured keys (SECRETS_KEY changed?)."""


def _derived_key(secret_key: str) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"wfapp-secretbox",
                info=b"integration secrets")
    return base64.urlsafe_b64encode(hkdf.derive(secret_key.encode()))


def _configured_keys(config: Mapping[str, Any]) -> list[bytes]:
    configured = config.get("SECRETS_KEY")
    if isinstance(configured, str):
        configured = [k for k in configured.split(",") if k.strip()]
    if configured:
        return [k.strip().encode() if isinstance(k, str) else k for k in configured]
    return [_derived_key(str(config["SECRET_KEY"]))]


class SecretBox:
    """Encrypts and decrypts secret values with the app's keys."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        try:
            self._fernet = MultiFernet([Fernet(k) for k in _configured_keys(config)])
        except ValueError as exc:
            raise RuntimeError(f"SECRETS_KEY is not a valid Fernet key: {exc} (make one with "
                               "python -c 'from cryptography.fernet import Fernet; "
                               "print(Fernet.generate_key().decode())')") from None

    def encrypt(self, value: str) -> str:
        """The ciphertext of `value`, as text."""
        return self._fernet.encrypt(value.encode()).decode()

    def decrypt(self, token: str) -> str:
        """The plain value of a ciphertext; SecretUnreadable when no key opens it."""
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except (InvalidToken, ValueError):
            raise SecretUnreadable("a stored secret cannot be decrypted with the configured "
                                   "SECRETS_KEY; set it again") from None


def generate_key() -> str:
    """A new random key for SECRETS_KEY."""
    return Fernet.generate_key().decode()
