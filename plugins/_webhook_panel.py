"""The On Webhook panel of the integration card, the signed curl example, "Generate new secret"."""

from __future__ import annotations

import json
import shlex
from datetime import timedelta
from typing import Any

from flask import abort, render_template
from markupsafe import Markup
from werkzeug.wrappers import Response

from wfapp.plugin_api import (
    IntegrationInfo,
    Panel,
    Role,
    counters,
    external_url,
    find_integration,
    recent_deliveries,
    requires_role,
    set_secret,
    signing,
    utcnow,
)

from ._webhook_endpoint import CHANNEL, SOURCE, bp

SECRET_PLACEHOLDER = "<paste the webhook secret here>"
EXAMPLE_KEY = "EX-1001"
EXAMPLE_TYPE = "example.event"
MARKER = "__MSG_ID__"
TO_HEX = "od -An -v -tx1 | tr -d ' \\n'"
TO_BASE64 = "base64 | tr -d '\\n'"


def hook_url(info: IntegrationInfo) -> str:
    """The URL senders post this integration's webhooks to."""
    return external_url(f"/hooks/{info.code}")


def _nested(path: str, value: Any, into: dict[str, Any]) -> None:
    parts = path.split(".")
    for part in parts[:-1]:
        child = into.get(part)
        if not isinstance(child, dict):
            child = into[part] = {}
        into = child
    into[parts[-1]] = value


def example_body(info: IntegrationInfo) -> dict[str, Any]:
    """A small payload with the record key and event type where this integration reads them."""
    body: dict[str, Any] = {}
    _nested(info.setting("event_type_path") or "type", EXAMPLE_TYPE, body)
    _nested(info.setting("record_key_path") or "id", EXAMPLE_KEY, body)
    if info.setting("webhook_signature_scheme") == "hmac" and info.setting("webhook_dedupe_path"):
        _nested(info.setting("webhook_dedupe_path"), MARKER, body)
    return body


def _body_assignment(body: dict[str, Any]) -> str:
    """`BODY=...` in bash; a delivery id inside the body comes from $MSG_ID."""
    text = json.dumps(body, separators=(",", ":"))
    pieces = text.split(MARKER)
    return "BODY=" + '"$MSG_ID"'.join(shlex.quote(p) if p else "''" for p in pieces)


def _template_expression(template: str) -> str:
    """The generic scheme's signed content as a bash word: literals quoted, $TS and $BODY."""
    out = []
    rest = template
    while rest:
        cut = min((i for i in (rest.find("{body}"), rest.find("{timestamp}")) if i >= 0),
                  default=-1)
        if cut < 0:
            out.append(shlex.quote(rest))
            break
        if cut:
            out.append(shlex.quote(rest[:cut]))
        if rest.startswith("{body}", cut):
            out.append('"$BODY"')
            rest = rest[cut + len("{body}"):]
        else:
            out.append('"$TS"')
            rest = rest[cut + len("{timestamp}"):]
    return "".join(out) or "''"


def curl_example(info: IntegrationInfo, secret: str | None = None) -> str:
    """A bash snippet that signs an example payload with openssl and posts it with curl."""
    secret_line = f"SECRET={shlex.quote(secret or SECRET_PLACEHOLDER)}"
    lines = [secret_line, f"URL={shlex.quote(hook_url(info))}",
             'MSG_ID="msg_$(date +%s)_$RANDOM"', "TS=$(date +%s)",
             _body_assignment(example_body(info))]
    headers = ["-H 'Content-Type: application/json'"]
    if (info.setting("webhook_signature_scheme") or "standard") == "standard":
        lines += [
            "KEY=$(printf '%s' \"${SECRET#whsec_}\" | base64 -d | " + TO_HEX + ")",
            "SIG=$(printf '%s' \"$MSG_ID.$TS.$BODY\" | openssl dgst -sha256 -mac HMAC "
            "-macopt \"hexkey:$KEY\" -binary | " + TO_BASE64 + ")"]
        headers += ['-H "webhook-id: $MSG_ID"', '-H "webhook-timestamp: $TS"',
                    '-H "webhook-signature: v1,$SIG"']
    else:
        algorithm = info.setting("webhook_hmac_algorithm") or "sha256"
        encode = TO_HEX if info.setting("webhook_hmac_encoding") == "hex" else TO_BASE64
        content = _template_expression(info.setting("webhook_hmac_signed_content") or "{body}")
        lines.append(f"SIG=$(printf '%s' {content} | openssl dgst -{algorithm} "
                     f"-hmac \"$SECRET\" -binary | {encode})")
        prefix = info.setting("webhook_hmac_prefix") or ""
        headers.append(f'-H {shlex.quote(info.setting("webhook_hmac_header") + ": " + prefix)}'
                       '"$SIG"')
        if info.setting("webhook_hmac_timestamp_header"):
            headers.append(f'-H {shlex.quote(info.setting("webhook_hmac_timestamp_header"))}'
                           '": $TS"')
        if info.setting("webhook_dedupe_header"):
            headers.append(f'-H {shlex.quote(info.setting("webhook_dedupe_header"))}'
                           '": $MSG_ID"')
    command = ["curl -sS -X POST \"$URL\""] + headers + ['--data-binary "$BODY"']
    lines.append(" \\\n  ".join(command))
    return "\n".join(lines) + "\n"


def _secret_state(info: IntegrationInfo) -> dict[str, Any]:
    """Whether a secret is set, whether it suits the scheme, and until when the old one works."""
    current, previous, rotated_at = info.secret_with_previous("webhook_secret")
    state: dict[str, Any] = {"set": bool(current), "problem": "", "previous_until": None}
    scheme = info.setting("webhook_signature_scheme") or "standard"
    if current and scheme == "standard":
        try:
            signing.parse_secret(current)
        except ValueError as error:
            state["problem"] = f"the stored secret {error}"
    if previous and rotated_at is not None:
        until = rotated_at + timedelta(hours=float(info.setting(
            "webhook_secret_grace_hours", 24) or 0))
        if until > utcnow():
            state["previous_until"] = until
    return state


def render_panel(info: IntegrationInfo, new_secret: str | None = None) -> str:
    """The card panel: endpoint, status, curl example, counters and the last 20 deliveries."""
    return render_template(
        "on_webhook/panel.html", info=info, url=hook_url(info), state=_secret_state(info),
        scheme=info.setting("webhook_signature_scheme") or "standard",
        curl=curl_example(info, new_secret), new_secret=new_secret,
        counters=counters(info, CHANNEL),
        deliveries=recent_deliveries(info, CHANNEL, source=SOURCE, limit=20))


PANEL = Panel("webhook", "Webhook", render_panel, order=20)


@bp.post("/integrations/<code>/webhook-secret")
@requires_role(Role.AUTHOR)
def generate_secret(code: str) -> Response:
    """Store a fresh whsec_ secret and show it once, on this response only."""
    info = find_integration(code)
    if info is None:
        abort(404, description=f"integration {code!r} does not exist")
    secret = signing.generate_secret()
    set_secret(info, "webhook_secret", secret)
    html = render_template("on_webhook/secret.html", info=info, secret=secret,
                           panel=Markup(render_panel(info, secret)))
    response = Response(html, 200, mimetype="text/html")
    # Shown once: no cache may keep the page with the secret on it.
    response.headers["Cache-Control"] = "no-store"
    return response
