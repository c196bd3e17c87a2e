"""Webhook signatures: Standard Webhooks and the generic HMAC scheme. Pure functions, no Flask.

Standard Webhooks (https://www.standardwebhooks.com): the secret is `whsec_<base64>` of 24–64
random bytes; a message is signed as HMAC-SHA256 of `"<id>.<timestamp>.<body>"` and sent as
`webhook-signature: v1,<base64>` — several space-separated signatures when the sender rotates
its key. The generic scheme covers senders that sign their own way (GitHub's
`X-Hub-Signature-256: sha256=<hex>`, Shopify's `X-Shopify-Hmac-Sha256: <base64>`).

Inbound webhooks verify with these functions and outbound webhooks sign with them, so both sides
of wfapp agree by construction. Every comparison of a signature is constant-time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Iterable, Sequence

SECRET_PREFIX = "whsec_"
SECRET_MIN_BYTES = 24
SECRET_MAX_BYTES = 64
#: Standard Webhooks' tolerance both ways, in seconds.
TOLERANCE_SECONDS = 300
#: Longer signature headers are refused unread: no sender needs more, an attacker might send MBs.
MAX_SIGNATURE_HEADER = 4096
MAX_SIGNATURES = 16
MAX_ID_LENGTH = 256
ALGORITHMS = ("sha256", "sha1", "sha512")
ENCODINGS = ("hex", "base64")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_ID = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces


class SignatureError(ValueError):
    """A request's signature, id or timestamp cannot be accepted; the message says why."""


# --- secrets ------------------------------------------------------------------------------------


def parse_secret(secret: str) -> bytes:
    """The key bytes of a `whsec_<base64>` secret; ValueError says what is wrong with it."""
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"must start with {SECRET_PREFIX} (a Standard Webhooks secret)")
    encoded = secret[len(SECRET_PREFIX):]
    try:
        # Unpadded base64 is accepted, as the reference libraries do.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"must be {SECRET_PREFIX} followed by base64") from None
    if not SECRET_MIN_BYTES <= len(key) <= SECRET_MAX_BYTES:
        raise ValueError(f"must encode {SECRET_MIN_BYTES}–{SECRET_MAX_BYTES} bytes "
                         f"(this one has {len(key)})")
    return key


def generate_secret(size: int = 32) -> str:
    """A fresh random `whsec_` secret of `size` bytes."""
    if not SECRET_MIN_BYTES <= size <= SECRET_MAX_BYTES:
        raise ValueError(f"size must be {SECRET_MIN_BYTES}–{SECRET_MAX_BYTES} bytes")
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(size)).decode()


def _key(secret: str | bytes) -> bytes:
    return secret if isinstance(secret, bytes) else parse_secret(secret)


# --- timestamps ---------------------------------------------------------------------------------


def check_timestamp(value: str | None, *, now: float | None = None,
                    tolerance: float = TOLERANCE_SECONDS, header: str = "webhook-timestamp"
                    ) -> int:
    """The timestamp (Unix seconds) of a request; SignatureError when missing, bad or off by
    more than `tolerance` seconds either way."""
    if value is None or value == "":
        raise SignatureError(f"missing {header} header")
    value = value.strip()
    if not _TIMESTAMP.fullmatch(value):
        raise SignatureError(f"{header} must be whole seconds since 1970 (digits only)")
    stamp = int(value)
    now = time.time() if now is None else now
    if stamp < now - tolerance:
        raise SignatureError(f"{header} is too old (more than {tolerance:g} s in the past): "
                             "a replay, or the sender's clock is wrong")
    if stamp > now + tolerance:
        raise SignatureError(f"{header} is in the future (more than {tolerance:g} s ahead): "
                             "the sender's clock is wrong")
    return stamp


# --- Standard Webhooks --------------------------------------------------------------------------


def _standard_digest(key: bytes, msg_id: str, timestamp: int | str, body: bytes) -> bytes:
    message = b"%s.%s.%s" % (msg_id.encode(), str(timestamp).encode(), body)
    return hmac.new(key, message, hashlib.sha256).digest()


def sign_standard(secret: str | bytes, msg_id: str, timestamp: int | str, body: bytes) -> str:
    """The `webhook-signature` value (`v1,<base64>`) for a message (secret: whsec_ or key bytes)."""
    digest = _standard_digest(_key(secret), msg_id, timestamp, body)
    return "v1," + base64.b64encode(digest).decode()


def standard_headers(secret: str | bytes, msg_id: str, body: bytes,
                     timestamp: int | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers for an outbound message."""
    stamp = int(time.time()) if timestamp is None else timestamp
    return {"webhook-id": msg_id, "webhook-timestamp": str(stamp),
            "webhook-signature": sign_standard(secret, msg_id, stamp, body)}


def check_message_id(msg_id: str | None) -> str:
    """The `webhook-id` of a request; SignatureError when missing or not printable ASCII."""
    if not msg_id:
        raise SignatureError("missing webhook-id header")
    if len(msg_id) > MAX_ID_LENGTH or not _ID.fullmatch(msg_id):
        raise SignatureError(f"webhook-id must be 1–{MAX_ID_LENGTH} printable ASCII characters "
                             "without spaces")
    return msg_id


def _signature_values(header: str | None, version: str = "v1") -> list[bytes]:
    """The decoded signatures of one version from a `webhook-signature` header."""
    if not header or not header.strip():
        raise SignatureError("missing webhook-signature header")
    if len(header) > MAX_SIGNATURE_HEADER:
        raise SignatureError(f"webhook-signature header is longer than {MAX_SIGNATURE_HEADER} "
                             "characters")
    parts = header.split()
    if len(parts) > MAX_SIGNATURES:
        raise SignatureError(f"webhook-signature holds more than {MAX_SIGNATURES} signatures")
    out = []
    for part in parts:
        tag, _, value = part.partition(",")
        if tag != version or not value:
            continue  # other versions (v1a: asymmetric) are not ours to check
        try:
            out.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            continue
    if not out:
        raise SignatureError(f"webhook-signature has no {version},<base64> signature")
    return out


def verify_standard(keys: Iterable[str | bytes], msg_id: str | None, timestamp: str | None,
                    signature: str | None, body: bytes, *, now: float | None = None,
                    tolerance: float = TOLERANCE_SECONDS) -> int:
    """Verify a Standard Webhooks request against any of `keys`; return its timestamp.

    Checks the id, then the timestamp, then the signatures (any one `v1` signature made with any
    one key passes); raises SignatureError with the reason otherwise.
    """
    msg_id = check_message_id(msg_id)
    stamp = check_timestamp(timestamp, now=now, tolerance=tolerance)
    given = _signature_values(signature)
    # Signed as the reference library does: the timestamp as a plain integer.
    if not any_match((_standard_digest(_key(k), msg_id, stamp, body) for k in keys), given):
        raise SignatureError("no webhook-signature matches (wrong secret, or the id, timestamp "
                             "or body was changed)")
    return stamp


def any_match(expected: Iterable[bytes], given: Sequence[bytes]) -> bool:
    """Whether any given signature equals any expected one; every pair is compared in full."""
    found = False
    for digest in expected:
        for value in given:
            # No early exit: the time taken does not tell which pair matched.
            found |= hmac.compare_digest(digest, value)
    return found


# --- the generic HMAC scheme --------------------------------------------------------------------


def hmac_digest(algorithm: str, key: bytes, message: bytes) -> bytes:
    """HMAC of `message` with `algorithm` (sha256, sha1 or sha512)."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}")
    return hmac.new(key, message, algorithm).digest()


def encode_signature(digest: bytes, encoding: str, prefix: str = "") -> str:
    """A header value: `prefix` + the digest as lower-case hex or base64."""
    if encoding == "hex":
        return prefix + digest.hex()
    if encoding == "base64":
        return prefix + base64.b64encode(digest).decode()
    raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}")


def sign_hmac(secret: str | bytes, message: bytes, *, algorithm: str = "sha256",
              encoding: str = "hex", prefix: str = "") -> str:
    """The signature header value of the generic scheme (secret: text, used as UTF-8 bytes)."""
    key = secret.encode() if isinstance(secret, str) else secret
    return encode_signature(hmac_digest(algorithm, key, message), encoding, prefix)


def decode_signature(value: str | None, encoding: str, prefix: str = "",
                     header: str = "signature") -> bytes:
    """The digest bytes in a signature header of the generic scheme; SignatureError if unusable."""
    if value is None or not value.strip():
        raise SignatureError(f"missing {header} header")
    if len(value) > MAX_SIGNATURE_HEADER:
        raise SignatureError(f"{header} header is longer than {MAX_SIGNATURE_HEADER} characters")
    value = value.strip()
    if prefix:
        if not value.lower().startswith(prefix.lower()):
            raise SignatureError(f"{header} must start with {prefix!r}")
        value = value[len(prefix):]
    try:
        if encoding == "hex":
            return bytes.fromhex(value)
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{header} is not {encoding}") from None


def verify_hmac(keys: Iterable[str | bytes], message: bytes, value: str | None, *,
                algorithm: str = "sha256", encoding: str = "hex", prefix: str = "",
                header: str = "signature") -> None:
    """Verify a generic-scheme signature against any of `keys`; SignatureError otherwise."""
    given = decode_signature(value, encoding, prefix, header)
    expected = (hmac_digest(algorithm, k.encode() if isinstance(k, str) else k, message)
                for k in keys)
    if not any_match(expected, [given]):
        raise SignatureError(f"{header} does not match (wrong secret, or the body was changed)")


def signed_content(template: str, body: bytes, timestamp: str = "") -> bytes:
    """What the generic scheme signs: `template` with `{body}` (raw bytes) and `{timestamp}`."""
    out = template.encode().replace(b"{timestamp}", timestamp.encode())
    return out.replace(b"{body}", body)
