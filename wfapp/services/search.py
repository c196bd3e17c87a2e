"""The header search: pages by name and keywords, workflows and integrations by code or
description, workflow instances by record key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from sqlalchemy import and_, func, or_, select

from ..extensions import db
from ..models import Instance, Integration, Role, Workflow


@dataclass(frozen=True)
class Page:
    """A page the search box can offer; `role` is the role needed to open it."""

    title: str
    endpoint: str
    keywords: str = ""
    role: Role = Role.VIEWER


@dataclass(frozen=True)
class Hit:
    """One search result: a page or a record. `exact` when the query names it exactly."""

    kind: str  # "page", "workflow", "integration" or "instance"
    title: str
    subtitle: str
    endpoint: str
    args: tuple[tuple[str, str], ...] = ()
    exact: bool = False


PAGES = (
    Page("Workflows", "workflows.index",
         "integration workflows workflow list state machines lifecycle definitions"),
    Page("Integrations", "integrations.index",
         "integration list data flows imports exports webhooks start"),
    Page("New Workflow", "workflows.new", "create workflow add", Role.AUTHOR),
    Page("New Integration", "integrations.new", "create integration add", Role.AUTHOR),
    Page("Import Workflow", "workflows.import_file", "upload workflow json definition file",
         Role.AUTHOR),
    Page("Workflow Instances", "instances.index",
         "integration workflow instances records states tracking history"),
    Page("Events", "events.index", "events inbox webhooks notifications replay"),
    Page("Runs", "runs.index", "runs imports exports uploads"),
    Page("Run Import or Export", "runs.new", "new run import export upload records",
         Role.OPERATOR),
    Page("Users", "auth.users", "users roles accounts api tokens administration", Role.ADMIN),
    Page("Plugins", "admin.plugins", "plugins trigger types extensions entry points routes "
         "schedules administration", Role.ADMIN),
)

_KIND_ORDER = {"page": 0, "workflow": 1, "integration": 2, "instance": 3}


def _words(text: str) -> list[str]:
    return [w for w in text.lower().split() if w]


def _like(word: str) -> str:
    """A LIKE pattern containing `word`, with LIKE's own wildcards taken literally."""
    escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _starts_a_word(word: str, text: str) -> bool:
    return any(w.startswith(word) for w in text.split())


def _page_rank(page: Page, query: str, words: list[str]) -> int | None:
    """0 exact title, 1 title starts with the query, 2 every word starts a word of the title,
    3 every word starts a word of the title or keywords ("flows" does not find Workflows)."""
    title = page.title.lower()
    if title == query:
        return 0
    if title.startswith(query):
        return 1
    if all(_starts_a_word(w, title) for w in words):
        return 2
    if all(_starts_a_word(w, f"{title} {page.keywords}") for w in words):
        return 3
    return None


def _code_rank(code: str, query: str) -> int:
    """0 exact code, 1 code starts with the query, 2 code contains it, 3 matched otherwise."""
    code = code.lower()
    if code == query:
        return 0
    if code.startswith(query):
        return 1
    return 2 if query in code else 3


def _coded(model: type[Workflow] | type[Integration], words: list[str], limit: int
           ) -> list[Workflow] | list[Integration]:
    """Rows whose code or description contains every word (any case)."""
    conditions = [or_(func.lower(model.code).like(_like(w), escape="\\"),
                      func.lower(model.description).like(_like(w), escape="\\"))
                  for w in words]
    rows = db.session.scalars(select(model).where(and_(*conditions))
                              .order_by(model.code).limit(limit))
    return cast(list[Workflow] | list[Integration], list(rows))


def _instances(query: str, limit: int) -> list[Instance]:
    """Instances whose record key is exactly the query: one unique-index probe per integration."""
    ids = list(db.session.scalars(select(Integration.id)))
    if not ids or len(query) > 200:
        return []
    return list(db.session.scalars(
        select(Instance).where(Instance.integration_id.in_(ids), Instance.record_key == query)
        .order_by(Instance.id).limit(limit)))


def search(query: str, limit: int = 20, *, role: Role | str | None = None) -> list[Hit]:
    """Pages, workflows, integrations and instances that match `query`, best first.

    Pages match when every word starts a word of their title or keywords; workflows and
    integrations when their code or description contains every word (any part, any case);
    instances when their record key is the query. Pages that need more than `role` are left
    out (all pages when `role` is None).
    """
    # Control characters (NUL above all, which PostgreSQL refuses) separate words like spaces.
    text = " ".join("".join(c if c >= " " else " " for c in query).split())
    words = _words(text)
    if not words:
        return []
    lowered = text.lower()
    rank = Role(role).rank if role is not None else len(Role)
    ranked: list[tuple[int, Hit]] = []
    for page in PAGES:  # in PAGES order, which breaks ties between pages (Workflows first)
        if page.role.rank > rank:
            continue
        score = _page_rank(page, lowered, words)
        if score is not None:
            ranked.append((score, Hit("page", page.title, "Page", page.endpoint,
                                      exact=score == 0)))
    for workflow in _coded(Workflow, words, limit):
        score = _code_rank(workflow.code, lowered)
        ranked.append((score, Hit("workflow", workflow.code,
                                  f"Workflow · {workflow.description}".rstrip(" ·"),
                                  "workflows.card", (("code", workflow.code),), score == 0)))
    for integration in _coded(Integration, words, limit):
        score = _code_rank(integration.code, lowered)
        ranked.append((score, Hit("integration", integration.code,
                                  f"Integration · {integration.description}".rstrip(" ·"),
                                  "integrations.card", (("code", integration.code),),
                                  score == 0)))
    for instance in _instances(text, 5):
        ranked.append((0, Hit("instance", instance.record_key or "",
                              f"Instance · {instance.integration.code} · {instance.state}",
                              "instances.show", (("instance_id", str(instance.id)),), True)))
    # A stable sort: pages keep their PAGES order among equals, records were fetched by code.
    ranked.sort(key=lambda pair: (pair[0], _KIND_ORDER[pair[1].kind]))
    return [hit for _, hit in ranked[:limit]]


def best_hit(hits: list[Hit]) -> Hit | None:
    """The hit Enter opens: the only one, or the only exact match among several."""
    if len(hits) == 1:
        return hits[0]
    exact = [h for h in hits if h.exact]
    return exact[0] if len(exact) == 1 else None
