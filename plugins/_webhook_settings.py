"""On Webhook's integration settings: the fields, their cross-field checks, the allow-list."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from wfapp.plugin_api import Field, signing

MIB = 1024 * 1024
DEFAULT_MAX_BYTES = MIB
# wfapp refuses bodies over 64 MiB before any view runs (MAX_CONTENT_LENGTH).
LARGEST_MAX_BYTES = 64 * MIB
MAX_ALLOW_LIST = 500
HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}")
PATH = re.compile(r"[^.\s]{1,100}(\.[^.\s]{1,100}){0,19}")
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")

SCHEMES = (("standard", "Standard Webhooks (webhook-id, -timestamp, -signature)"),
           ("hmac", "Generic HMAC (the sender's own header)"))
ALGORITHMS = tuple((a, a.upper().replace("SHA", "SHA-")) for a in signing.ALGORITHMS)
ENCODINGS = (("hex", "hex"), ("base64", "base64"))

SETTINGS = [
    Field("webhook_enabled", "Webhook Enabled", type="bool", default=False,
          help="Accept signed POSTs at /hooks/<integration>. Off: every request answers 403."),
    Field("webhook_secret", "Webhook Secret", type="secret",
          help="Standard Webhooks: whsec_<base64> of 24–64 bytes (use Generate new secret below). "
          "Generic HMAC: the sender's shared secret. Write-only."),
    Field("webhook_secret_grace_hours", "Previous Secret Valid For (Hours)", type="number",
          default=24, min=0, max=24 * 30,
          help="After a new secret is set, the one it replaced is still accepted this long."),
    Field("record_key_path", "Record Key Path", default="id",
          help="Dotted path of the record key in a webhook payload (default id)."),
    Field("event_type_path", "Event Type Path", default="type",
          help="Dotted path of the event type in a webhook payload (default type)."),
    Field("webhook_max_bytes", "Largest Body (Bytes)", type="int", default=DEFAULT_MAX_BYTES,
          min=2, max=LARGEST_MAX_BYTES,
          help="Larger webhook bodies answer 413 (default 1 MiB = 1048576)."),
    Field("webhook_allowed_ips", "Allowed Sender IPs", type="text", default="", max_length=20000,
          help="IPs or CIDRs (IPv4 and IPv6), separated by commas or new lines; empty accepts "
          "any sender. Behind a reverse proxy set TRUSTED_PROXIES, or every request seems to "
          "come from the proxy."),
    Field("webhook_signature_scheme", "Signature Scheme", type="choice", choices=SCHEMES,
          default="standard", required=True),
    Field("webhook_hmac_algorithm", "HMAC Algorithm", type="choice", choices=ALGORITHMS,
          default="sha256", required=True, help="Generic HMAC only."),
    Field("webhook_hmac_header", "HMAC Signature Header", default="",
          help="Generic HMAC: the header with the signature, e.g. X-Hub-Signature-256 (GitHub) "
          "or X-Shopify-Hmac-Sha256 (Shopify)."),
    Field("webhook_hmac_prefix", "HMAC Signature Prefix", default="",
          help="Generic HMAC: text before the signature, e.g. sha256= (GitHub); empty for none."),
    Field("webhook_hmac_encoding", "HMAC Encoding", type="choice", choices=ENCODINGS,
          default="hex", required=True, help="Generic HMAC: hex (GitHub) or base64 (Shopify)."),
    Field("webhook_hmac_signed_content", "HMAC Signed Content", default="{body}",
          help="Generic HMAC: what the sender signs; {body} is the raw body, {timestamp} the "
          "timestamp header (e.g. v0:{timestamp}:{body}). Default {body}."),
    Field("webhook_hmac_timestamp_header", "HMAC Timestamp Header", default="",
          help="Generic HMAC: a header with the send time in Unix seconds, checked against "
          "the tolerance; empty for none."),
    Field("webhook_hmac_tolerance_seconds", "HMAC Timestamp Tolerance (Seconds)", type="int",
          default=300, min=1, max=86400),
    Field("webhook_dedupe_header", "Dedupe Header", default="",
          help="Generic HMAC: the header whose value identifies a delivery, e.g. "
          "X-GitHub-Delivery or X-Shopify-Webhook-Id. Empty: Dedupe Path, else a hash of the "
          "body."),
    Field("webhook_dedupe_path", "Dedupe Path", default="",
          help="Generic HMAC: a dotted payload path that identifies a delivery (instead of a "
          "header)."),
]


@dataclass(frozen=True)
class AllowList:
    """Parsed IP networks; empty means anyone."""

    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    def allows(self, address: str | None) -> bool:
        """Whether a client address (text, as the server saw it) is in the list."""
        if not self.networks:
            return True
        try:
            ip = ipaddress.ip_address((address or "").strip())
        except ValueError:
            return False
        candidates: list[Any] = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        return any(c in n for c in candidates for n in self.networks)


def split_allow_list(text: str) -> list[str]:
    """The entries of an allow-list text (commas, spaces and new lines separate them)."""
    return [item for item in re.split(r"[,\s]+", text or "") if item]


def parse_network(item: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """One allow-list entry as a network; ValueError with a helpful message."""
    try:
        return ipaddress.ip_network(item, strict=True)
    except ValueError as error:
        if "has host bits set" in str(error):
            fixed = ipaddress.ip_network(item, strict=False)
            raise ValueError(f"{item!r} has host bits set; did you mean {fixed}?") from None
        raise ValueError(f"{item!r} is not an IP address or CIDR") from None


@lru_cache(maxsize=256)
def allow_list(text: str) -> AllowList:
    """The parsed allow-list (cached: the hot path parses each distinct text once)."""
    networks = []
    for item in split_allow_list(text):
        try:
            networks.append(parse_network(item))
        except ValueError:
            # Saved lists were checked; an entry that no longer parses must not open the door.
            networks.append(ipaddress.ip_network("0.0.0.0/32"))
    return AllowList(tuple(networks))


def _check_path(name: str, value: Any, required: bool, errors: list[tuple[str, str]]) -> None:
    if not value:
        if required:
            errors.append((name, "is required"))
        return
    if not PATH.fullmatch(value):
        errors.append((name, "must be a dotted path such as data.id (no spaces or empty parts)"))


def _check_header(name: str, value: Any, errors: list[tuple[str, str]]) -> None:
    if value and not HEADER_NAME.fullmatch(value):
        errors.append((name, "must be an HTTP header name (letters, digits and - _ .)"))


def check_settings(settings: Mapping[str, Any], changed: frozenset[str]
                   ) -> list[tuple[str, str]]:
    """Cross-field checks of the webhook settings as they would be saved."""
    errors: list[tuple[str, str]] = []
    _check_path("record_key_path", settings.get("record_key_path"), True, errors)
    _check_path("event_type_path", settings.get("event_type_path"), False, errors)
    bad = []
    entries = split_allow_list(settings.get("webhook_allowed_ips") or "")
    if len(entries) > MAX_ALLOW_LIST:
        errors.append(("webhook_allowed_ips", f"at most {MAX_ALLOW_LIST} entries"))
    for item in entries[:MAX_ALLOW_LIST]:
        try:
            parse_network(item)
        except ValueError as error:
            bad.append(str(error))
    if bad:
        errors.append(("webhook_allowed_ips", "; ".join(bad[:5])))
    scheme = settings.get("webhook_signature_scheme") or "standard"
    secret = settings.get("webhook_secret")
    if scheme == "standard":
        if secret:
            try:
                signing.parse_secret(secret)
            except ValueError as error:
                errors.append(("webhook_secret", str(error)))
        return errors
    _check_hmac(settings, errors)
    return errors


def _check_hmac(settings: Mapping[str, Any], errors: list[tuple[str, str]]) -> None:
    header = settings.get("webhook_hmac_header")
    if not header:
        errors.append(("webhook_hmac_header", "is required for the generic HMAC scheme"))
    _check_header("webhook_hmac_header", header, errors)
    prefix = settings.get("webhook_hmac_prefix") or ""
    if len(prefix) > 50 or any(not 32 < ord(c) < 127 for c in prefix):
        errors.append(("webhook_hmac_prefix", "must be at most 50 printable characters without "
                       "spaces"))
    stamp_header = settings.get("webhook_hmac_timestamp_header")
    _check_header("webhook_hmac_timestamp_header", stamp_header, errors)
    content = settings.get("webhook_hmac_signed_content") or "{body}"
    names = PLACEHOLDER.findall(content)
    if names.count("body") != 1 or any(n not in ("body", "timestamp") for n in names):
        errors.append(("webhook_hmac_signed_content", "must hold {body} exactly once; the only "
                       "other placeholder is {timestamp}"))
    elif "timestamp" in names and not stamp_header:
        errors.append(("webhook_hmac_signed_content", "uses {timestamp}: set the HMAC Timestamp "
                       "Header too"))
    dedupe_header = settings.get("webhook_dedupe_header")
    _check_header("webhook_dedupe_header", dedupe_header, errors)
    _check_path("webhook_dedupe_path", settings.get("webhook_dedupe_path"), False, errors)
    if dedupe_header and settings.get("webhook_dedupe_path"):
        errors.append(("webhook_dedupe_path", "set a Dedupe Header or a Dedupe Path, not both"))
