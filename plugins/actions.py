"""The built-in transition actions: http_request, send_webhook, set_variable, send_email.

Templates use the poll's placeholders (`{record_key}`, `{run_id}`, `{vars.<name>}`,
`{data.<field>}`, `{secret.<name>}`) and its filling code, so a placeholder means the same
everywhere. Deliveries never raise for a failure the receiver causes: they answer an
ActionResult saying whether trying again can help.
"""

from __future__ import annotations

import json
import re
import smtplib
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import urllib3

from wfapp.plugin_api import (
    MISSING,
    ActionContext,
    ActionResult,
    ActionType,
    Field,
    config,
    hookimpl,
    resolve_path,
    signing,
    utcnow,
)

from . import _poll_request as req

METHODS = tuple((m, m) for m in ("POST", "PUT", "PATCH", "GET", "DELETE"))
MAX_BYTES = 1024 * 1024
MAX_RETRY_AFTER = 3600.0
USER_AGENT = "wfapp-actions/1"
WEBHOOK_SECRET = "outbound_webhook_secret"
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")
BODY_NAMES = re.compile(rf"record_key|run_id|vars\.[A-Za-z_]\w*|data\.[\w.-]+|"
                        rf"secret\.{req.SECRET_NAME}")

_pool: urllib3.PoolManager | None = None


def _http() -> urllib3.PoolManager:
    """One connection pool per process (created on first use, after any fork).

    As many kept connections per host as there are delivery threads, so busy threads calling
    one receiver reuse their connections instead of opening and dropping new ones.
    """
    global _pool
    if _pool is None:
        size = max(10, int(config("ACTION_THREADS", 8) or 8))
        _pool = urllib3.PoolManager(num_pools=50, maxsize=size, block=False)
    return _pool


def _item(context: ActionContext) -> Any:
    """The object the poll's template code fills placeholders from."""
    return SimpleNamespace(record_key=context.record_key, run_id=context.run_id,
                           vars=context.vars, data=context.data,
                           integration=SimpleNamespace(code=context.integration))


def _fill_text(template: str, context: ActionContext, secrets: Mapping[str, str]) -> str:
    item = _item(context)
    return req.PLACEHOLDER.sub(lambda m: req._value(m.group(1), item, secrets), template)


def fill_value(template: Any, context: ActionContext, secrets: Mapping[str, str]) -> Any:
    """A JSON template filled in: a string that is one placeholder keeps the value's type."""
    if isinstance(template, str):
        whole = req.PLACEHOLDER.fullmatch(template)
        if whole and not whole.group(1).startswith("secret."):
            kind, _, path = whole.group(1).partition(".")
            if kind in ("vars", "data"):
                value = resolve_path(dict(context.vars if kind == "vars" else context.data),
                                     path)
                if value is not MISSING:
                    return value
            elif kind == "record_key":
                return context.record_key
            elif kind == "run_id":
                return context.run_id
        return _fill_text(template, context, secrets)
    if isinstance(template, list):
        return [fill_value(v, context, secrets) for v in template]
    if isinstance(template, dict):
        return {k: fill_value(v, context, secrets) for k, v in template.items()}
    return template


def _placeholder_errors(value: Any, where: str, names: re.Pattern[str]) -> list[tuple[str, str]]:
    errors = []
    if isinstance(value, str):
        for name in req.PLACEHOLDER.findall(value):
            if not names.fullmatch(name):
                errors.append((where, f"unknown placeholder {{{name}}}; use {{record_key}}, "
                                      "{run_id}, {vars.<name>}, {data.<field>} or "
                                      "{secret.<name>}"))
    elif isinstance(value, list):
        for v in value:
            errors.extend(_placeholder_errors(v, where, names))
    elif isinstance(value, dict):
        for v in value.values():
            errors.extend(_placeholder_errors(v, where, names))
    return errors


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or an HTTP date), capped at an hour."""
    value = (headers or {}).get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - utcnow()).total_seconds()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _statuses(value: Any) -> list[int] | None:
    """Expected status codes as a list of ints (a list, or "200, 201" from a form); None if bad."""
    if value in (None, "", []):
        return []
    items = value if isinstance(value, list) else str(value).replace(",", " ").split()
    out = []
    for item in items:
        try:
            number = int(item)
        except (TypeError, ValueError):
            return None
        if isinstance(item, bool) or not 100 <= number <= 599:
            return None
        out.append(number)
    return out


def _send(method: str, url: str, headers: dict[str, str], body: bytes | None, timeout: float,
          expected: list[int], shown: dict[str, Any]) -> ActionResult:
    """One HTTP attempt, as an ActionResult (4xx but 408/429 cannot be helped by retrying)."""
    outcome = req.perform(_http(), method, url, headers, timeout, MAX_BYTES, body,
                          require_json=False)
    status = outcome.status_code
    wanted = status in expected if expected else status is not None and 200 <= status < 300
    response = outcome.payload if outcome.payload is not None else (
        {"text": outcome.excerpt} if outcome.excerpt else None)
    if outcome.error is None or (wanted and status is not None):
        if wanted:
            return ActionResult(True, status, response, request=shown)
        return ActionResult(False, status, response, f"unexpected HTTP {status}",
                            retryable=True, request=shown)
    retryable = status is None or status >= 500 or status in (408, 425, 429)
    return ActionResult(False, status, response, outcome.error, retryable=retryable,
                        retry_after=retry_after(outcome.headers), request=shown)


class HttpRequest(ActionType):
    """Calls the next system: a templated request with an Idempotency-Key stable across retries."""

    def validate(self, config: Any) -> list[tuple[str, str]]:
        if not isinstance(config, Mapping):
            return [("", "must be an object")]
        # expected_status is a list of codes: no form field type fits it, so it is checked here.
        rest = {k: v for k, v in config.items() if k != "expected_status"}
        errors = super().validate(rest)
        if _statuses(config.get("expected_status")) is None:
            errors.append(("expected_status", "must be a list of HTTP status codes (100–599)"))
        return errors

    def check_config(self, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        url = str(config.get("url") or "")
        # Unlike a poll's, an action's URL may hold a secret (an API key in the query); the
        # delivery's recorded request shows it masked.
        errors = [e for e in req.check_url(url) if "secrets may stand" not in e[1]]
        errors.extend(req.check_headers(config.get("headers") or {}))
        errors.extend(_placeholder_errors(config.get("body"), "body", BODY_NAMES))
        for name, path in (config.get("capture") or {}).items():
            if not NAME_RE.fullmatch(str(name)):
                errors.append(("capture", f"{name!r} is not a variable name"))
            if not isinstance(path, str) or not path:
                errors.append(("capture", f"variable {name!r}: the path must be a string"))
        return errors

    def deliver(self, config: Mapping[str, Any], context: ActionContext) -> ActionResult:
        method = str(config.get("method") or "POST")
        masked = {k: "***" for k in context.secrets}
        try:
            item = _item(context)
            url = req.PLACEHOLDER.sub(
                lambda m: quote(req._value(m.group(1), item, context.secrets), safe=""),
                str(config.get("url") or ""))
            shown_url = req.PLACEHOLDER.sub(
                lambda m: quote(req._value(m.group(1), item, masked), safe="*"),
                str(config.get("url") or ""))
            headers = req.fill_headers(config.get("headers") or {}, item, context.secrets)
            body_value = fill_value(config.get("body"), context, context.secrets) \
                if config.get("body") is not None else None
        except req.TemplateError as exc:
            return ActionResult(False, error=str(exc), retryable=False)
        headers["User-Agent"] = USER_AGENT
        headers["Idempotency-Key"] = context.idempotency_key
        body = None
        if body_value is not None and method not in ("GET", "DELETE"):
            body = json.dumps(body_value, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        shown = {"method": method, "url": shown_url,
                 "headers": {k: ("***" if k.lower() in ("authorization", "x-api-key") or
                                 any(s and s in v for s in context.secrets.values()) else v)
                             for k, v in headers.items()},
                 "body": fill_value(config.get("body"), context, masked)
                 if body is not None else None}
        result = _send(method, url, headers, body, float(config.get("timeout_seconds") or 10),
                       _statuses(config.get("expected_status")) or [], shown)
        if result.succeeded and config.get("capture"):
            source = result.response if isinstance(result.response, dict) else {}
            for name, path in config["capture"].items():
                value = resolve_path(source, path)
                if value is not MISSING:
                    result.vars[name] = value
        return result


class SendWebhook(ActionType):
    """Tells subscribers of the transition, signed per Standard Webhooks; a delivery per URL."""

    def validate(self, config: Any) -> list[tuple[str, str]]:
        if not isinstance(config, Mapping):
            return [("", "must be an object")]
        # urls may also be one string, a URL a line (older documents): checked as its list.
        urls = _urls(config.get("urls"))
        errors = super().validate({**config, "urls": urls} if "urls" in config else config)
        for url in urls:
            errors.extend(("urls", m) for _, m in req.check_url(url))
            if "{" in url:
                errors.append(("urls", f"{url}: subscriber URLs take no placeholders"))
        return errors

    def split(self, config: Mapping[str, Any]) -> list[dict[str, Any]]:
        """One delivery per subscriber, so one slow or failing subscriber holds up no other."""
        return [{**config, "urls": [url]} for url in _urls(config.get("urls"))]

    def deliver(self, config: Mapping[str, Any], context: ActionContext) -> ActionResult:
        secret = context.secrets.get(WEBHOOK_SECRET)
        if not secret:
            return ActionResult(False, error=f"integration {context.integration} has no "
                                f"{WEBHOOK_SECRET}", retryable=False)
        if context.alert is not None:  # an alert rule's notification, not a transition's
            message = {"type": f"alert.{context.alert.get('event', 'opened')}",
                       "timestamp": utcnow().isoformat(),
                       "data": {**context.alert, "integration": context.integration}}
        else:
            message = {"type": "instance.transitioned", "timestamp": utcnow().isoformat(),
                       "data": {"instance_id": context.instance_id,
                                "record_key": context.record_key, "run_id": context.run_id,
                                "workflow": context.workflow,
                                "integration": context.integration,
                                "from": context.from_state, "to": context.to_state,
                                "transition": context.transition, "vars": context.vars}}
        body = json.dumps(message, separators=(",", ":"), default=str).encode()
        # The message id is the idempotency key: a retried message is the same message.
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                   **signing.standard_headers(secret, context.idempotency_key, body)}
        url = _urls(config.get("urls"))[0]
        shown = {"method": "POST", "url": url, "body": message,
                 "headers": {"webhook-id": headers["webhook-id"]}}
        return _send("POST", url, headers, body, float(config.get("timeout_seconds") or 10), [],
                     shown)


def _urls(value: Any) -> list[str]:
    if isinstance(value, str):
        return [u.strip() for u in value.splitlines() if u.strip()]
    if isinstance(value, list):
        return [str(u).strip() for u in value if str(u).strip()]
    return []


class SetVariable(ActionType):
    """Sets workflow variables from literals or templates, in the transition's transaction."""

    def check_config(self, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        values = config.get("values") or {}
        errors = [("values", f"{name!r} is not a variable name") for name in values
                  if not NAME_RE.fullmatch(str(name))]
        names = re.compile(r"record_key|run_id|vars\.[A-Za-z_]\w*|data\.[\w.-]+")
        for name, value in values.items():
            for where, message in _placeholder_errors(value, "values", names):
                errors.append((where, f"{name}: {message} (secrets are never copied into "
                                      "variables)" if "secret" in message else
                               f"{name}: {message}"))
        return errors

    def apply(self, config: Mapping[str, Any], context: ActionContext) -> dict[str, Any]:
        out = {}
        for name, template in (config.get("values") or {}).items():
            try:
                out[name] = fill_value(template, context, {})
            except req.TemplateError:
                out[name] = None  # a missing source leaves the variable empty, as capture does
        return out


class SendEmail(ActionType):
    """An e-mail through the SMTP server of the settings (WFAPP_SMTP_HOST, …)."""

    def check_config(self, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        names = re.compile(r"record_key|run_id|vars\.[A-Za-z_]\w*|data\.[\w.-]+")
        errors = []
        for key in ("to", "subject", "body"):
            errors.extend(_placeholder_errors(config.get(key), key, names))
        for address in str(config.get("to") or "").replace(";", ",").split(","):
            if address.strip() and "@" not in address and "{" not in address:
                errors.append(("to", f"{address.strip()!r} is not an e-mail address"))
        return errors

    def deliver(self, config: Mapping[str, Any], context: ActionContext) -> ActionResult:
        host = config_value("SMTP_HOST")
        if not host:
            return ActionResult(False, error="no SMTP server configured (SMTP_HOST)",
                                retryable=False)
        try:
            to = [a.strip() for a in _fill_text(str(config.get("to") or ""), context, {})
                  .replace(";", ",").split(",") if a.strip()]
            subject = _fill_text(str(config.get("subject") or ""), context, {})
            text = _fill_text(str(config.get("body") or ""), context, {})
        except req.TemplateError as exc:
            return ActionResult(False, error=str(exc), retryable=False)
        message = EmailMessage()
        message["From"] = config_value("SMTP_FROM") or "wfapp@localhost"
        message["To"] = ", ".join(to)
        message["Subject"] = subject.replace("\r", " ").replace("\n", " ")
        message["Message-ID"] = f"<{context.idempotency_key}@wfapp>"
        message.set_content(text)
        shown = {"to": to, "subject": message["Subject"], "smtp": host}
        port = int(config_value("SMTP_PORT") or 25)
        timeout = float(config.get("timeout_seconds") or 10)
        try:
            with smtplib.SMTP(host, port, timeout=timeout) as smtp:
                if config_value("SMTP_STARTTLS"):
                    smtp.starttls(context=ssl.create_default_context())
                user = config_value("SMTP_USERNAME")
                if user:
                    smtp.login(user, config_value("SMTP_PASSWORD") or "")
                refused = smtp.send_message(message)
        except smtplib.SMTPResponseException as exc:
            return ActionResult(False, exc.smtp_code, None, f"SMTP {exc.smtp_code}: "
                                f"{exc.smtp_error!r}"[:300], retryable=exc.smtp_code >= 400
                                and exc.smtp_code < 500, request=shown)
        except (OSError, smtplib.SMTPException) as exc:  # timeouts are OSErrors
            return ActionResult(False, None, None, f"SMTP: {type(exc).__name__}: {exc}"[:300],
                                request=shown)
        if refused:
            return ActionResult(False, 250, {"refused": sorted(refused)},
                                f"refused recipients: {', '.join(sorted(refused))}",
                                retryable=False, request=shown)
        return ActionResult(True, 250, {"sent_to": to}, request=shown)


def config_value(name: str) -> Any:
    """An SMTP setting of the app's configuration."""
    return config(name)


TIMEOUT = Field("timeout_seconds", "Timeout (seconds)", type="number", min=0.1, max=120,
                default=10)
ATTEMPTS = Field("max_attempts", "Max Attempts", type="int", min=1, max=50, default=5)
CONCURRENCY = Field("max_concurrency", "Max Concurrency", type="int", min=1, max=100,
                    help="Deliveries of this action running at once, across all workers; "
                         "empty = only the integration's limit.")

HTTP_REQUEST = HttpRequest(
    name="http_request", label="HTTP Request",
    description="Calls another system's API; sends an Idempotency-Key stable across retries.",
    fields=(
        Field("method", "Method", type="choice", choices=METHODS, default="POST"),
        Field("url", "URL", required=True, max_length=2000,
              help="Placeholders: {record_key} {run_id} {vars.<name>} {data.<field>} "
                   "{secret.<name>}"),
        Field("headers", "Headers", type="map",
              help="Header name → value template; a secret as {secret.<name>}, never its "
                   "value."),
        Field("body", "Body", type="json", help="A JSON object; placeholders in its strings."),
        TIMEOUT, ATTEMPTS, CONCURRENCY,
        Field("expected_status", "Expected Status", type="list", item="int", min=100, max=599,
              help="Status codes that count as success; empty: any 2xx."),
        Field("capture", "Capture", type="map",
              help="Variable name → dotted path in the JSON response."),
    ),
)
SEND_WEBHOOK = SendWebhook(
    name="send_webhook", label="Send Webhook",
    description="Notifies subscriber URLs of the transition, signed per Standard Webhooks with "
                "the integration's outbound webhook secret.",
    fields=(Field("urls", "Subscriber URLs", type="list", required=True, max_length=2000,
                  help="One URL a line; no placeholders."), TIMEOUT, ATTEMPTS, CONCURRENCY),
)
SET_VARIABLE = SetVariable(
    name="set_variable", label="Set Variable", in_transaction=True,
    description="Sets workflow variables in the transition's own transaction.",
    fields=(Field("values", "Values", type="json", required=True,
                  help="Variable name → literal or template ({vars.x}, {data.y}, …)."),),
)
SEND_EMAIL = SendEmail(
    name="send_email", label="Send E-mail",
    description="Sends an e-mail through the configured SMTP server.",
    fields=(Field("to", "To", required=True, max_length=1000),
            Field("subject", "Subject", required=True, max_length=300),
            Field("body", "Body", type="text", max_length=20000), TIMEOUT, ATTEMPTS,
            CONCURRENCY),
)


@hookimpl
def register_transition_actions() -> list[ActionType]:
    """The built-in action types."""
    return [HTTP_REQUEST, SEND_WEBHOOK, SET_VARIABLE, SEND_EMAIL]


@hookimpl
def register_integration_settings() -> list[Field]:
    """The secret that signs outbound webhooks (send_webhook)."""
    return [Field(WEBHOOK_SECRET, "Outbound Webhook Secret", type="secret",
                  help="whsec_… secret that signs send_webhook messages (Standard Webhooks).")]
