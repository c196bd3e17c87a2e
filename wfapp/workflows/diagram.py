"""The state diagram on the Workflow Card: an inline SVG drawn on the server (no scripts, no CDN).

States are boxes in columns by their distance (in transitions) from the initial state; states
that cannot be reached from it come last. Transitions between the same two states share one
arrow labelled with all their codes. Forward arrows run left to right; arrows back to an earlier
column (or within one) run below the boxes. The initial state has an entry dot, final states a
double border, disabled transitions are dashed and greyed.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from html import escape
from typing import Any

from ..models import Workflow

BOX_W, BOX_H = 150, 48
ROW_GAP = 44
PAD = 30
ENTRY = 34  # room left of the first column for the initial state's entry dot
CHAR_W = 6.2  # average width of a character at font-size 10, for sizing labels
LINE_H = 12
GREY, INK, BLUE = "#6c757d", "#212529", "#0d6efd"


@dataclass
class Edge:
    """One arrow: every transition from `source` to `target`."""

    source: str
    target: str
    labels: list[tuple[str, bool]] = field(default_factory=list)  # (code, enabled)

    @property
    def enabled(self) -> bool:
        """Drawn solid when any of its transitions is enabled."""
        return any(enabled for _, enabled in self.labels)

    @property
    def width(self) -> float:
        """The width its label needs."""
        return max(len(code) + (6 if not on else 0) for code, on in self.labels) * CHAR_W + 8


def _columns(workflow: Workflow) -> dict[str, int]:
    """Column of each state: BFS distance from the initial state; unreachable states last."""
    targets: dict[str, list[str]] = {}
    for t in workflow.transitions:
        targets.setdefault(t.from_state, []).append(t.to_state)
    codes = [s.code for s in workflow.states]
    start = workflow.initial_state if workflow.initial_state in codes else codes[0]
    column = {start: 0}
    queue = deque([start])
    while queue:
        state = queue.popleft()
        for target in targets.get(state, []):
            if target in codes and target not in column:
                column[target] = column[state] + 1
                queue.append(target)
    last = max(column.values()) + 1
    for code in codes:
        column.setdefault(code, last)
    return column


def _rows(workflow: Workflow, column: dict[str, int], edges: list[Edge]) -> dict[str, int]:
    """Row of each state in its column, ordered by where its predecessors sit (fewer crossings)."""
    order = {s.code: i for i, s in enumerate(workflow.states)}
    row: dict[str, int] = {}

    def weight(code: str) -> tuple[float, int]:
        before = [row[e.source] for e in edges
                  if e.target == code and e.source in row and e.source != code]
        return (sum(before) / len(before) if before else float("inf"), order[code])

    for c in range(max(column.values()) + 1):
        members = [code for code in column if column[code] == c]
        for r, code in enumerate(sorted(members, key=weight)):
            row[code] = r
    return row


def _edges(workflow: Workflow) -> list[Edge]:
    """Transitions grouped by (from, to), in definition order."""
    codes = {s.code for s in workflow.states}
    grouped: dict[tuple[str, str], Edge] = {}
    for t in workflow.transitions:
        if t.from_state in codes and t.to_state in codes:
            edge = grouped.setdefault((t.from_state, t.to_state), Edge(t.from_state, t.to_state))
            edge.labels.append((t.code, bool(t.enabled)))
    return list(grouped.values())


def state_diagram(workflow: Workflow) -> str:
    """Return the SVG markup of the workflow's state diagram ("" for a workflow without states)."""
    if not workflow.states:
        return ""
    edges = _edges(workflow)
    column = _columns(workflow)
    row = _rows(workflow, column, edges)
    forward = [e.width for e in edges if column[e.target] > column[e.source]]
    col_gap = min(max([110.0, *(w + 30 for w in forward)]), 240.0)
    # Arrows back to an earlier column run above the boxes when they leave the upper half of
    # their column, below otherwise; each gets its own lane so they never share a line.
    height_of = Counter(column.values())
    back = [e for e in edges if column[e.target] < column[e.source]]
    above = [e for e in back if row[e.source] < height_of[column[e.source]] / 2]
    below = [e for e in back if e not in above]
    side = [e for e in edges if column[e.target] == column[e.source] and e.source != e.target]
    loops = any(e.source == e.target for e in edges)
    top = PAD + (36 if loops and not above else 0) + sum(
        30 + (len(e.labels) - 1) * LINE_H for e in above)
    pos = {code: (PAD + ENTRY + column[code] * (BOX_W + col_gap),
                  top + row[code] * (BOX_H + ROW_GAP)) for code in column}
    bottom = top + (max(row.values()) + 1) * (BOX_H + ROW_GAP) - ROW_GAP
    width = PAD * 2 + ENTRY + (max(column.values()) + 1) * (BOX_W + col_gap) - col_gap \
        + max([0, *(60 + 14 * len(side) + e.width for e in side)])
    height = bottom + PAD + sum(30 + (len(e.labels) - 1) * LINE_H for e in below)
    parts = [
        f'<svg class="state-diagram" role="img" aria-labelledby="diagram-title"'
        f' xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}"'
        f' viewBox="0 0 {width:.0f} {height:.0f}" font-family="system-ui, sans-serif">',
        f'<title id="diagram-title">State diagram of {escape(workflow.code)}: '
        f'{len(workflow.states)} states, {len(workflow.transitions)} transitions</title>',
        f'<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7"'
        f' markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"'
        f' fill="{GREY}"/></marker></defs>',
    ]
    lanes = {id(e): top - 30 * (i + 1) for i, e in enumerate(above)}
    lanes.update({id(e): bottom + 30 * (i + 1) for i, e in enumerate(below)})
    lanes.update({id(e): i for i, e in enumerate(side)})
    for edge in edges:
        parts.append(_edge(edge, pos, column, lanes.get(id(edge), 0)))
    for state in workflow.states:
        parts.append(_box(state, *pos[state.code]))
    parts.append("</svg>")
    return "".join(parts)


def _box(state: Any, x: float, y: float) -> str:
    """One state: a rounded box with its code and a line of marks or its description."""
    stroke = BLUE if state.is_initial else "#495057"
    fill = "#e7f1ff" if state.is_initial else ("#f1f3f5" if state.is_final else "#ffffff")
    out = [f'<g class="state" data-state="{escape(state.code)}"><title>{escape(state.code)}'
           f'{": " + escape(state.description) if state.description else ""}</title>',
           f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="8" fill="{fill}"'
           f' stroke="{stroke}" stroke-width="1.5"/>']
    if state.is_final:
        out.append(f'<rect x="{x + 3}" y="{y + 3}" width="{BOX_W - 6}" height="{BOX_H - 6}"'
                   f' rx="6" fill="none" stroke="{stroke}" stroke-width="1"/>')
    if state.is_initial:
        cy = y + BOX_H / 2
        out.append(f'<circle cx="{x - ENTRY + 6}" cy="{cy}" r="6" fill="{INK}"/>'
                   f'<path d="M{x - ENTRY + 12},{cy} L{x - 2},{cy}" stroke="{INK}"'
                   f' stroke-width="1.5" marker-end="url(#arrow)"/>')
    out.append(f'<text x="{x + BOX_W / 2}" y="{y + 20}" text-anchor="middle" font-weight="600"'
               f' font-size="13" fill="{INK}">{escape(state.code)}</text>'
               f'<text x="{x + BOX_W / 2}" y="{y + 36}" text-anchor="middle" font-size="10"'
               f' fill="{GREY}">{escape(_marks(state))}</text></g>')
    return "".join(out)


def _marks(state: Any) -> str:
    """The second line of a state box: initial / final / timeout, else its description."""
    marks = []
    if state.is_initial:
        marks.append("initial")
    if state.is_final:
        marks.append("final")
    if state.timeout_hours:
        marks.append(f"timeout {state.timeout_hours:g} h")
    text = " · ".join(marks) or (state.description or "")
    return text if len(text) <= 24 else text[:23] + "…"


def _label_line(x: float, index: int, code: str, enabled: bool) -> str:
    """One transition code in an arrow's label; a disabled one is grey and says so."""
    style = "" if enabled else f' fill="{GREY}" font-style="italic"'
    suffix = "" if enabled else " (off)"
    return f'<tspan x="{x}" dy="{index and LINE_H}"{style}>{escape(code)}{suffix}</tspan>'


def _edge(edge: Edge, pos: Mapping[str, tuple[float, float]], column: dict[str, int],
          lane: float) -> str:
    """One arrow with its stacked label; `lane` is the y of a back arrow or a side arrow's rank."""
    (sx, sy), (tx, ty) = pos[edge.source], pos[edge.target]
    lines = len(edge.labels)
    if edge.source == edge.target:  # a loop over the top of the box
        x = sx + BOX_W / 2
        path = f"M{x - 22},{sy} C{x - 40},{sy - 34} {x + 40},{sy - 34} {x + 22},{sy}"
        lx, ly = x, sy - 30 - (lines - 1) * LINE_H
    elif column[edge.target] > column[edge.source]:  # forward, left to right
        x1, y1, x2, y2 = sx + BOX_W, sy + BOX_H / 2, tx, ty + BOX_H / 2
        bend = (x2 - x1) / 2
        path = f"M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}"
        lx, ly = (x1 + x2) / 2, (y1 + y2) / 2 - 4 - (lines - 1) * LINE_H / 2
    elif column[edge.target] == column[edge.source]:  # same column: bow out to the right
        x, y1, y2 = sx + BOX_W, sy + BOX_H / 2, ty + BOX_H / 2
        bulge = 46 + 14 * lane
        path = f"M{x},{y1} C{x + bulge},{y1} {x + bulge},{y2} {x},{y2}"
        lx = x + bulge * 0.75 + 6 + edge.width / 2
        ly = (y1 + y2) / 2 - (lines - 1) * LINE_H / 2
    else:  # back to an earlier column, in its own lane above or below the boxes
        up = lane < sy
        y1, y2 = (sy, ty) if up else (sy + BOX_H, ty + BOX_H)
        x1, x2 = sx + BOX_W / 2 - 12, tx + BOX_W / 2 + 12
        path = f"M{x1},{y1} C{x1},{lane} {x2},{lane} {x2},{y2}"
        extreme = (y1 + y2) / 8 + lane * 3 / 4  # the curve's turning point
        lx = (x1 + x2) / 2
        ly = extreme - 4 - (lines - 1) * LINE_H if up else extreme + 12
    dash = "" if edge.enabled else ' stroke-dasharray="5,4"'
    text = "".join(_label_line(lx, i, code, on) for i, (code, on) in enumerate(edge.labels))
    return (f'<g class="transition" data-from="{escape(edge.source)}"'
            f' data-to="{escape(edge.target)}"><path d="{path}" fill="none" stroke="{GREY}"'
            f' stroke-width="1.5"{dash} marker-end="url(#arrow)"/>'
            f'<rect x="{lx - edge.width / 2}" y="{ly - 10}" width="{edge.width}"'
            f' height="{lines * LINE_H + 2}" rx="3" fill="#ffffff" fill-opacity="0.85"/>'
            f'<text x="{lx}" y="{ly}" text-anchor="middle" font-size="10" fill="{INK}">'
            f'{text}</text></g>')
