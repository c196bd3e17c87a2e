"""The header search: pages by name and keywords, workflows and integrations by code."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, or_, select

from ..extensions import db
from ..models import Integration, Workflow


@dataclass(frozen=True)
class Page:
    """A page the search box can offer."""

    title: str
    endpoint: str
    keywords: str = ""


@dataclass(frozen=True)
class Hit:
    """One search result: a page or a record."""

    kind: str  # "page", "workflow" or "integration"
    title: str
    subtitle: str
    endpoint: str
    args: tuple[tuple[str, str], ...] = ()


PAGES = (
    Page("Workflows", "workflows.index",
         "integration workflows workflow list state machines lifecycle"),
    Page("Integrations", "integrations.index", "integration list data flows imports exports"),
    Page("New Workflow", "workflows.new", "create workflow add"),
    Page("New Integration", "integrations.new", "create integration add"),
    Page("Import Workflow", "workflows.import_file", "upload workflow json definition"),
    Page("Workflow Instances", "instances.index", "instances records states tracking"),
    Page("Events", "events.index", "events inbox webhooks notifications replay"),
    Page("Runs", "runs.index", "runs imports exports uploads"),
    Page("Users", "auth.users", "users roles accounts tokens administration"),
)


def _words(text: str) -> list[str]:
    return [w for w in text.lower().split() if w]


def search(query: str, limit: int = 20) -> list[Hit]:
    """Pages whose title or keywords contain every word, then matching workflows, integrations."""
    words = _words(query)
    if not words:
        return []
    hits = [
        Hit("page", p.title, "Page", p.endpoint)
        for p in PAGES
        if all(w in f"{p.title} {p.keywords}".lower() for w in words)
    ]
    pattern = f"%{query.strip().lower()}%"
    workflows = db.session.scalars(
        select(Workflow).where(or_(func.lower(Workflow.code).like(pattern),
                                   func.lower(Workflow.description).like(pattern)))
        .order_by(Workflow.code).limit(limit))
    hits += [Hit("workflow", w.code, f"Workflow · {w.description}", "workflows.card",
                 (("code", w.code),)) for w in workflows]
    integrations = db.session.scalars(
        select(Integration).where(or_(func.lower(Integration.code).like(pattern),
                                      func.lower(Integration.description).like(pattern)))
        .order_by(Integration.code).limit(limit))
    hits += [Hit("integration", i.code, f"Integration · {i.description}", "integrations.card",
                 (("code", i.code),)) for i in integrations]
    return hits[:limit]
