"""On Scheduled Poll: every N minutes, an HTTP request per waiting instance decides the transition.

The timers (one per active instance in the From State and transition) live in the database
(`wfapp.plugin_api.claim_due`); a job every 2 s wakes this process's executor
(`_poll_executor.py`), which claims what is due, makes the requests in threads and stores each
answer as an event — the JSON response is the payload — or, when the request failed (timeout,
connection error, non-2xx, not JSON, too large), a *failed* event with the reason. The engine
then decides, like for any event. Polls yield to other events waiting in the inbox (fewer at
once until those are applied): see `_poll_executor.py`. See docs/polls.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import urllib3
from flask import current_app, render_template_string, url_for

from wfapp.plugin_api import (
    MISSING,
    DueInstance,
    Field,
    IntegrationInfo,
    MetricFamily,
    NewEvent,
    Panel,
    TriggerType,
    config,
    counters,
    database_counter,
    hookimpl,
    other_events_waiting,
    resolve_path,
    schedule_summary,
)

from ._poll_executor import PollExecutor, executor_for
from ._poll_request import (
    FAILED_TYPE,
    TemplateError,
    check_headers,
    check_url,
    fill_headers,
    fill_url,
    perform,
    signature,
)

NAME = "on_scheduled_poll"
METHODS = tuple((m, m) for m in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"))
DEFAULT_TIMEOUT = 10.0
SCHEDULE_SECONDS = 2.0

YIELDS = database_counter(
    "wfapp_poll_yields_total",
    "Times a worker's poll executor began yielding to other events waiting in the inbox (no "
    "new poll, or at most POLL_YIELD_CONCURRENCY at once, until they were applied), by trigger "
    "type",
    ("trigger_type",))


def _text(value: Any) -> str:
    """A JSON value as an author types it in Expected Value (true, null, 3 for 3.0)."""
    if value is True or value is False:
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class PollTrigger(TriggerType):
    """Checks the request templates; matches an answer to this transition's request."""

    def check_config(self, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        errors = check_url(config["url"])
        errors += check_headers(config.get("headers") or {})
        if config.get("expected_value") not in (None, "") and not config.get("response_path"):
            errors.append(("response_path", "is required when Expected Value is set"))
        return errors

    def schedule_seconds(self, config: Mapping[str, Any]) -> float | None:
        """Interval (Minutes) in seconds: one timer per waiting instance."""
        minutes = config.get("interval_minutes")
        if isinstance(minutes, bool) or not isinstance(minutes, int | float) or minutes <= 0:
            return None
        return float(minutes) * 60.0

    def _verdict(self, config: Mapping[str, Any], event: Mapping[str, Any]) -> str:
        """"" when the event matches, else why not."""
        payload = event.get("payload") or {}
        kind = str(event.get("type") or "")
        if kind == FAILED_TYPE:
            return f"the poll failed: {payload.get('error') or 'no reason given'}"
        wanted = signature(config)
        if kind and kind != wanted:
            return f"this answer is to another request ({kind}); this transition polls {wanted}"
        path = config.get("response_path")
        if not path:
            return ""
        value = resolve_path(payload, path)
        expected = config.get("expected_value")
        if value is MISSING:
            return f"the response has no {path}" + (
                f"; this transition waits for {expected!r}" if expected not in (None, "") else "")
        if expected not in (None, "") and _text(value) != str(expected):
            return f"response {path} is {_text(value)!r}; this transition waits for {expected!r}"
        return ""

    def matches(self, config: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
        """An answer to this request (not a failure) whose `response_path` value fits."""
        return not self._verdict(config, event)

    def explain_mismatch(self, config: Mapping[str, Any], event: Mapping[str, Any]) -> str:
        """Why the poll's answer does not fire this transition."""
        return self._verdict(config, event)


ON_SCHEDULED_POLL = PollTrigger(
    name=NAME,
    label="On Scheduled Poll",
    description="Every N minutes, an HTTP request for each active instance in the From State.",
    fields=(
        Field("url", "URL", required=True, help="Template: {record_key}, {run_id}, "
              "{vars.<name>}, {data.<field>} are filled in per instance, URL-encoded."),
        Field("method", "Method", type="choice", choices=METHODS, default="GET"),
        Field("headers", "Headers", type="json", help="JSON object of header names to values; "
              "values may use the URL's placeholders and {secret.<name>} (the integration's "
              "named secrets)."),
        Field("interval_minutes", "Interval (Minutes)", type="number", required=True, min=0.01,
              max=43200, default=5),
        Field("timeout_seconds", "Timeout (Seconds)", type="number", min=1, max=60,
              default=DEFAULT_TIMEOUT, help="How long one request may take (at most 60)."),
        Field("response_path", "Response Path", help="Dotted path into the JSON response."),
        Field("expected_value", "Expected Value", help="Fire only when the value at Response "
              "Path equals this."),
    ),
)

SETTINGS = [
    Field("poll_concurrency", "Poll Concurrency", type="int", default=8, min=1, max=256,
          help="Polls of this integration at once, per worker process (default 8)."),
]


# --- one poll -----------------------------------------------------------------------------------


def dedupe_key(item: DueInstance) -> str:
    """One key per instance, transition and claimed due time: a retried run stores nothing."""
    due = item.due_at.isoformat() if item.due_at is not None else str(item.timer_id)
    return f"poll:{item.instance_id}:{item.transition}:{due}"


def needs_secrets(item: DueInstance) -> bool:
    """Whether this transition's headers name a secret."""
    return any("{secret." in str(v) for v in (item.config.get("headers") or {}).values())


def poll(item: DueInstance, secrets: dict[str, str], pool: urllib3.PoolManager,
         max_bytes: int) -> tuple[NewEvent, str | None]:
    """Make one instance's request: (the event to store, the error or None). Never raises."""
    cfg = item.config
    method = str(cfg.get("method") or "GET")
    url = None
    try:
        url = fill_url(str(cfg.get("url") or ""), item)
        headers = fill_headers(cfg.get("headers") or {}, item, secrets)
    except TemplateError as exc:
        outcome_error: str | None = f"cannot build the request: {exc}"
        status, elapsed = None, 0.0
        payload = None
    else:
        timeout = float(cfg.get("timeout_seconds") or DEFAULT_TIMEOUT)
        outcome = perform(pool, method, url, headers, min(timeout, 60.0), max_bytes)
        payload, outcome_error = outcome.payload, outcome.error
        status, elapsed = outcome.status_code, outcome.elapsed
    if outcome_error is None and payload is not None:
        return NewEvent(NAME, signature(cfg), item.record_key, item.run_id, payload,
                        dedupe_key(item)), None
    error = outcome_error or "no answer"
    # The URL is shown (it holds no secret: those may stand in headers only).
    details = {"error": error, "transition": item.transition, "request": signature(cfg),
               "url": url, "status_code": status, "elapsed_ms": round(elapsed * 1000)}
    return NewEvent(NAME, FAILED_TYPE, item.record_key, item.run_id, details, dedupe_key(item),
                    failure=f"poll failed: {error}"), error


def _executor() -> PollExecutor:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    return executor_for(app, lambda: PollExecutor(app, NAME, poll, "poll_concurrency",
                                                  needs_secrets, YIELDS))


def run_polls() -> dict[str, int]:
    """The scheduled job: wake this process's poll executor and return at once."""
    return _executor().wake()


def stop_polls(timeout: float = 30.0) -> None:
    """Stop this process's poll executor gently: running polls finish and are stored."""
    _executor().stop(timeout)


# --- the card panel -----------------------------------------------------------------------------

PANEL = """
<p class="small text-body-secondary">Each active instance in a poll transition's From State is
polled every interval, at most {{ cap }} at once per worker process (Poll Concurrency). A failing
poll is stored as a failed event and backs off: interval × 2<sup>n</sup>, at most 10 intervals
and 1 hour.{% if backlog %} Polls yield to other events: while {{ backlog }} or more of them
wait in the inbox, {% if yield_cap %}at most {{ yield_cap }} polls run at once per worker
process{% else %}no new poll starts (after {{ yield_max }} one at a time goes through){% endif %}.
{%- endif %}</p>
{% if yielding %}
<div class="alert alert-info small py-2" id="poll-yielding">Polls are yielding: {{ waiting }}
  or more other events wait in the inbox. {% if yield_cap %}Polls run at most {{ yield_cap }} at
  once per worker process{% else %}No new poll starts{% endif %} until they are applied; then
  they resume at full speed.</div>
{% endif %}
{% if rows %}
<table class="table table-sm" id="poll-schedules">
  <thead><tr><th>Workflow</th><th>Transition</th><th>From State</th><th>Every</th>
    <th>Instances Waiting</th><th>Next Due (UTC)</th><th>Failing</th><th>Last Error</th>
  </tr></thead>
  <tbody>
  {% for r in rows %}
    <tr class="{{ 'table-warning' if r.failing else '' }}">
      <td>{{ r.workflow }}</td><td>{{ r.transition }}{% if not r.enabled %}
        <span class="badge text-bg-secondary">disabled</span>{% endif %}</td>
      <td>{{ r.from_state }}</td><td>{{ every(r.interval_seconds) }}</td>
      <td class="poll-waiting">{{ r.waiting }}</td>
      <td>{{ r.next_due|timestamp if r.next_due else '' }}</td>
      <td class="poll-failing">{{ r.failing }}{% if r.failing %}
        <span class="small text-body-secondary">(up to {{ r.max_failures }} in a row)</span>
        {%- endif %}</td>
      <td class="small text-break poll-last-error">{% if r.last_error %}{{ r.last_error }}
        {%- if r.last_error_at %} <span class="text-body-secondary">at
        {{ r.last_error_at|timestamp }}</span>{% endif %}{% endif %}</td>
    </tr>
  {% endfor %}
  </tbody>
</table>
{% else %}
<p class="small" id="poll-none">This integration's workflow has no On Scheduled Poll transition.</p>
{% endif %}
<p class="small" id="poll-counts">Polls stored: {{ ok.count if ok else 0 }} answered,
  {{ bad.count if bad else 0 }} failed{% if bad and bad.last_reason %}
  (latest: {{ bad.last_reason }}){% endif %}.
  <a href="{{ failed_url }}">Failed polls on the Events page</a></p>
"""


def every(seconds: float) -> str:
    """An interval as people read it: 30 s, 5 min, 1.5 h."""
    if not seconds:
        return ""
    for unit, size in (("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def yield_settings() -> tuple[int, int]:
    """(other events waiting that make polls yield — 0: never —, polls at once while they do)."""
    return (max(0, int(config("POLL_YIELD_BACKLOG", 100))),
            max(0, min(int(config("POLL_YIELD_CONCURRENCY", 0)),
                       int(config("POLL_CONCURRENCY", 32)))))


def yield_metrics() -> list[MetricFamily]:
    """Whether polls yield now: other events waiting reach POLL_YIELD_BACKLOG (1) or not (0)."""
    backlog, _ = yield_settings()
    yielding = bool(backlog) and other_events_waiting(NAME, backlog) >= backlog
    return [MetricFamily("wfapp_poll_yielding", "gauge",
                         "1 while scheduled polls yield to other events waiting in the inbox "
                         "(POLL_YIELD_BACKLOG or more), by trigger type", ("trigger_type",),
                         [((NAME,), 1.0 if yielding else 0.0)])]


def render_panel(integration: IntegrationInfo) -> str:
    """Per poll transition: instances waiting, next due, failing timers, last error."""
    rows = schedule_summary(integration, NAME)
    counts = counters(integration, "poll")
    cap = min(int(integration.setting("poll_concurrency", 8)), int(config("POLL_CONCURRENCY", 32)))
    backlog, yield_cap = yield_settings()
    waiting = other_events_waiting(NAME, backlog) if backlog and rows else 0
    return render_template_string(
        PANEL, rows=rows, cap=cap, every=every, ok=counts.get("accepted"), bad=counts.get("failed"),
        backlog=backlog, yield_cap=yield_cap, waiting=waiting,
        yield_max=every(float(config("POLL_YIELD_MAX_SECONDS", 30))) or "0 s",
        yielding=backlog and waiting >= backlog,
        failed_url=url_for("events.index", integration=integration.code, source=NAME,
                           status="failed"))


@hookimpl
def register_trigger_types() -> list[TriggerType]:
    """The On Scheduled Poll trigger type."""
    return [ON_SCHEDULED_POLL]


@hookimpl
def register_integration_settings() -> list[Field]:
    """Poll Concurrency: how many polls of one integration run at once per worker process."""
    return SETTINGS


@hookimpl
def register_schedules() -> list[tuple[str, float, str]]:
    """Every 2 s: wake the poll executor (it claims what is due and polls in its own threads)."""
    return [("polls", SCHEDULE_SECONDS, "wfapp.builtin_plugins.on_scheduled_poll.run_polls")]


@hookimpl
def register_metrics() -> list[Any]:
    """wfapp_poll_yielding: whether polls yield to other events now."""
    return [yield_metrics]


@hookimpl
def register_integration_panels() -> list[Panel]:
    """Scheduled Polls: waiting instances, next due, failures per poll transition."""
    return [Panel("polls", "Scheduled Polls", render_panel, order=60)]


__all__ = ["NAME", "ON_SCHEDULED_POLL", "dedupe_key", "poll", "run_polls",
           "stop_polls"]
