"""Small display helpers shared by the pages (registered as Jinja filters)."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any
from urllib.parse import quote

from .models import utcnow

PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def span(seconds: float) -> str:
    """'3 d 4 h', '2 h 12 min', '5 min', '45 s' — a length of time as people read it."""
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min"
    return f"{secs} s"


def duration(since: datetime | None, now: datetime | None = None) -> str:
    """'3 d 4 h', '2 h 12 min', '45 s' — how long ago `since` was."""
    if since is None:
        return ""
    return span(((now or utcnow()) - since).total_seconds())


def timestamp(value: datetime | None) -> str:
    """UTC time as people read it."""
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else ""


def pretty_json(value: Any) -> str:
    """Indented JSON for <pre> blocks."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def record_url(template: str, record_key: str | None, run_id: int | None,
               variables: dict[str, Any], data: dict[str, Any]) -> str | None:
    """Fill an integration's record URL template; None when a placeholder has no value."""
    if not template:
        return None
    missing = False

    def fill(match: re.Match[str]) -> str:
        nonlocal missing
        name = match.group(1)
        if name == "record_key":
            value: Any = record_key
        elif name == "run_id":
            value = run_id
        elif name.startswith("vars."):
            value = variables.get(name[5:])
        elif name.startswith("data."):
            value = data
            for part in name[5:].split("."):
                value = value.get(part) if isinstance(value, dict) else None
        else:
            value = None
        if value is None:
            missing = True
            return ""
        return quote(str(value), safe="")

    url = PLACEHOLDER.sub(fill, template)
    return None if missing else url


SUMMARY_CHARS = 80


def notes_parts(notes: str | None) -> tuple[str, str | None]:
    """A history note as (short summary, full text or None): a payload excerpt (JSON) gets a
    one-line summary of its first fields, the payload itself goes behind a disclosure."""
    text = notes or ""
    if not text.startswith(("{", "[")) or len(text) <= 40:
        return text, None
    try:
        value = json.loads(text)
    except ValueError:  # an excerpt cut at the notes limit is no longer valid JSON
        value = None
    if isinstance(value, dict):
        fields = ", ".join(f"{k}: {json.dumps(v, default=str)[:30]}" for k, v in
                           list(value.items())[:4])
        more = f" (+{len(value) - 4} more)" if len(value) > 4 else ""
        summary = f"payload {{{fields}}}{more}"
        detail = json.dumps(value, indent=2, sort_keys=True, default=str)
    else:
        summary, detail = "payload " + text, text
    if len(summary) > SUMMARY_CHARS:
        summary = summary[:SUMMARY_CHARS - 1] + "…"
    return summary, detail
