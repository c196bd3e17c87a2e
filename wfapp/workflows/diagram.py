"""The state diagram on the Workflow Card: an inline SVG drawn on the server (no scripts, no CDN).

States are boxes in columns by their distance (in transitions) from the initial state; states
that cannot be reached from it come last. Transitions between the same two states share one
arrow labelled with all their codes. Forward arrows run left to right; arrows back to an earlier
column (or within one) run below the boxes. The initial state has an entry dot, final states a
double border, disabled transitions are dashed and greyed.

Arrows leaving one state are fanned along its side (and so are arrows arriving), and every
label is placed beside its own arrow where it overlaps no other label and no state box, so
labels never overlap (tests/test_diagram.py checks that on generated workflows). Optional
overlays: the current state and the path an instance took, or per-edge / per-state counts.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from html import escape
from types import SimpleNamespace
from typing import Any

from ..models import Workflow

BOX_W, BOX_H = 150, 48
ROW_GAP = 44
PAD = 30
ENTRY = 34  # room left of the first column for the initial state's entry dot
CHAR_W = 6.2  # average width of a character at font-size 10, for sizing labels
LINE_H = 12
GREY, INK, BLUE = "#6c757d", "#212529", "#0d6efd"
GREEN, TAKEN = "#146c43", "#0a58ca"
MARGIN = 2  # space kept between a label and anything else


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

    count: int | None = None  # fired in the last 7 days, when counts are shown

    def lines(self) -> list[tuple[str, bool]]:
        """The label's lines: each code (a disabled one says so), then the count if shown."""
        out = [(code + ("" if on else " (off)"), on) for code, on in self.labels]
        if self.count is not None:
            out.append((f"{self.count}× in 7 d", True))
        return out

    @property
    def width(self) -> float:
        """The width its label needs."""
        return max(len(text) for text, _ in self.lines()) * CHAR_W + 8

    @property
    def height(self) -> float:
        """The height its label needs."""
        return len(self.lines()) * LINE_H + 2


def definition_shape(wf: Mapping[str, Any]) -> Any:
    """A definition (an export document's `workflow`, e.g. a version's) in the shape
    `state_diagram` draws: attributes like a Workflow row's, nothing read from the database."""
    states = [SimpleNamespace(**{"description": "", "is_final": False,
                                 "timeout_hours": None, "on_timeout_transition": None,
                                 **s, "is_initial": bool(s.get("is_initial"))
                                 or s.get("code") == wf.get("initial_state")})
              for s in wf.get("states") or []]
    transitions = [SimpleNamespace(**{"enabled": True, "actions": [], **t})
                   for t in wf.get("transitions") or []]
    return SimpleNamespace(code=wf.get("code", ""), initial_state=wf.get("initial_state"),
                           states=states, transitions=transitions)


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
            # The edge says what the transition does when it fires, not only its name.
            kinds = [str(a.get("id") or a.get("type")) for a in getattr(t, "actions", None) or []]
            label = t.code + (f" → {', '.join(kinds)}" if kinds else "")
            edge.labels.append((label, bool(t.enabled)))
    return list(grouped.values())


def _box(state: Any, x: float, y: float, overlay: Overlay | None = None) -> str:
    """One state: a rounded box with its code and a line of marks, counts or its description."""
    overlay = overlay or Overlay()
    stroke = BLUE if state.is_initial else "#495057"
    fill = "#e7f1ff" if state.is_initial else ("#f1f3f5" if state.is_final else "#ffffff")
    width, classes, note = "1.5", "state", ""
    if state.code in overlay.visited:
        stroke, width, classes = TAKEN, "2", classes + " visited"
    if state.code == overlay.current:
        stroke, fill, width, classes = GREEN, "#d1e7dd", "3", classes + " current"
        note = " (current state)"
    out = [f'<g class="{classes}" data-state="{escape(state.code)}"><title>{escape(state.code)}'
           f'{": " + escape(state.description) if state.description else ""}{note}</title>',
           f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="8" fill="{fill}"'
           f' stroke="{stroke}" stroke-width="{width}"/>']
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
               f' fill="{GREY}">{escape(_second_line(state, overlay))}</text></g>')
    return "".join(out)


def _second_line(state: Any, overlay: Overlay) -> str:
    """With counts shown, how many active instances the state holds; else its marks."""
    if overlay.state_counts is not None and not state.is_final:
        return f"{overlay.state_counts.get(state.code, 0)} active"
    if overlay.current == state.code:
        return "current state"
    return _marks(state)


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
    """One line of an arrow's label; a disabled transition is grey and italic."""
    style = "" if enabled else f' fill="{GREY}" font-style="italic"'
    return f'<tspan x="{x:.1f}" dy="{index and LINE_H}"{style}>{escape(code)}</tspan>'


@dataclass(frozen=True)
class Overlay:
    """What to show on top of the definition: an instance's place and path, or counts."""

    current: str | None = None
    visited: frozenset[str] = frozenset()
    taken: frozenset[tuple[str, str]] = frozenset()
    edge_counts: Mapping[str, int] | None = None  # transition code -> fired in the last 7 days
    state_counts: Mapping[str, int] | None = None  # state code -> active instances


def path_overlay(current: str, history: Any) -> Overlay:
    """The overlay of an instance: its state, the states it was in and the arrows it took
    (history rows with a transition; a reset is a jump, not an arrow)."""
    visited = {current}
    taken = set()
    for row in history:
        visited.add(row.to_state)
        if row.from_state:
            visited.add(row.from_state)
            if row.transition and row.trigger_type != "reset":
                taken.add((row.from_state, row.to_state))
    return Overlay(current=current, visited=frozenset(visited), taken=frozenset(taken))


Box = tuple[float, float, float, float]  # x, y, width, height
Curve = tuple[tuple[float, float], tuple[float, float], tuple[float, float], tuple[float, float]]


def _overlaps(a: Box, b: Box) -> bool:
    return (a[0] < b[0] + b[2] + MARGIN and b[0] < a[0] + a[2] + MARGIN
            and a[1] < b[1] + b[3] + MARGIN and b[1] < a[1] + a[3] + MARGIN)


def _bezier(points: Curve, t: float) -> tuple[float, float]:
    (x0, y0), (x1, y1), (x2, y2), (x3, y3) = points
    u = 1 - t
    return (u ** 3 * x0 + 3 * u * u * t * x1 + 3 * u * t * t * x2 + t ** 3 * x3,
            u ** 3 * y0 + 3 * u * u * t * y1 + 3 * u * t * t * y2 + t ** 3 * y3)


def _fan(edges: list[Edge], column: dict[str, int], row: dict[str, int]
         ) -> dict[tuple[int, str], float]:
    """Where each forward arrow leaves its source and reaches its target, as a fraction of the
    box height: arrows on one side of a box are spread apart in the order of the boxes at their
    other end, so two arrows never start (or end) at one point."""
    ports: dict[tuple[int, str], float] = {}
    forward = [e for e in edges if column[e.target] > column[e.source]]
    for end, other in (("source", "target"), ("target", "source")):
        groups: dict[str, list[Edge]] = {}
        for e in forward:
            groups.setdefault(getattr(e, end), []).append(e)
        for members in groups.values():
            members.sort(key=lambda e: (row[getattr(e, other)], column[getattr(e, other)]))
            for i, e in enumerate(members):
                ports[(id(e), end)] = (i + 1) / (len(members) + 1)
    return ports


def state_diagram(workflow: Workflow, overlay: Overlay | None = None) -> str:
    """Return the SVG markup of the workflow's state diagram ("" for a workflow without states)."""
    if not workflow.states:
        return ""
    overlay = overlay or Overlay()
    edges = _edges(workflow)
    if overlay.edge_counts is not None:
        for edge in edges:
            edge.count = sum(overlay.edge_counts.get(code, 0) for code, _ in edge.labels)
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
    top = PAD + (36 if loops and not above else 0) + sum(30 + e.height - LINE_H for e in above)
    pos = {code: (PAD + ENTRY + column[code] * (BOX_W + col_gap),
                  top + row[code] * (BOX_H + ROW_GAP)) for code in column}
    bottom = top + (max(row.values()) + 1) * (BOX_H + ROW_GAP) - ROW_GAP
    lanes = {id(e): top - 30 * (i + 1) for i, e in enumerate(above)}
    lanes.update({id(e): bottom + 30 * (i + 1) for i, e in enumerate(below)})
    lanes.update({id(e): i for i, e in enumerate(side)})
    ports = _fan(edges, column, row)
    boxes: list[Box] = [(x, y, BOX_W, BOX_H) for x, y in pos.values()]
    # The initial state's entry dot and arrow keep their place too.
    boxes.extend((x - ENTRY, y + BOX_H / 2 - 7, ENTRY, 14) for code, (x, y) in pos.items()
                 if code == workflow.initial_state)
    placed: list[Box] = []
    drawn = []
    for edge in edges:
        curve, mode = _curve(edge, pos, column, lanes.get(id(edge), 0), ports)
        label = _place(edge, curve, mode, boxes + placed)
        placed.append(label)
        drawn.append((edge, curve, label))
    every = boxes + placed
    lane_ys = [lanes[id(e)] for e in above + below]
    min_x = min(0.0, min(b[0] for b in every) - PAD)
    min_y = min(0.0, min([b[1] for b in every] + lane_ys) - PAD)
    width = max(b[0] + b[2] for b in every) + PAD - min_x
    height = max([b[1] + b[3] for b in every] + lane_ys) + PAD - min_y
    parts = [
        f'<svg class="state-diagram" role="img" aria-labelledby="diagram-title"'
        f' xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}"'
        f' viewBox="{min_x:.0f} {min_y:.0f} {width:.0f} {height:.0f}"'
        f' font-family="system-ui, sans-serif">',
        f'<title id="diagram-title">State diagram of {escape(workflow.code)}: '
        f'{len(workflow.states)} states, {len(workflow.transitions)} transitions'
        f'{_overlay_title(overlay)}</title>',
        f'<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7"'
        f' markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"'
        f' fill="{GREY}"/></marker><marker id="arrow-taken" viewBox="0 0 10 10" refX="9"'
        f' refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        f'<path d="M0,0 L10,5 L0,10 z" fill="{TAKEN}"/></marker></defs>',
    ]
    for edge, curve, label in drawn:
        parts.append(_edge_svg(edge, curve, label, (edge.source, edge.target) in overlay.taken))
    for state in workflow.states:
        parts.append(_box(state, *pos[state.code], overlay))
    parts.append("</svg>")
    return "".join(parts)


def _overlay_title(overlay: Overlay) -> str:
    if overlay.current:
        return f"; the instance is in {escape(overlay.current)}, the path it took is highlighted"
    if overlay.edge_counts is not None:
        return "; with transitions fired in the last 7 days and active instances per state"
    return ""


def _curve(edge: Edge, pos: dict[str, tuple[float, float]], column: dict[str, int],
           lane: float, ports: dict[tuple[int, str], float]) -> tuple[Curve, str]:
    """The arrow as a cubic Bezier, and on which side of it its label goes."""
    (sx, sy), (tx, ty) = pos[edge.source], pos[edge.target]
    if edge.source == edge.target:  # a loop over the top of the box
        x = sx + BOX_W / 2
        return ((x - 22, sy), (x - 40, sy - 34), (x + 40, sy - 34), (x + 22, sy)), "above"
    if column[edge.target] > column[edge.source]:  # forward, left to right, fanned
        x1, x2 = sx + BOX_W, tx
        y1 = sy + BOX_H * ports.get((id(edge), "source"), 0.5)
        y2 = ty + BOX_H * ports.get((id(edge), "target"), 0.5)
        bend = (x2 - x1) / 2
        return ((x1, y1), (x1 + bend, y1), (x2 - bend, y2), (x2, y2)), "above"
    if column[edge.target] == column[edge.source]:  # same column: bow out to the right
        x, y1, y2 = sx + BOX_W, sy + BOX_H / 2, ty + BOX_H / 2
        bulge = 46 + 14 * lane
        return ((x, y1), (x + bulge, y1), (x + bulge, y2), (x, y2)), "right"
    up = lane < sy  # back to an earlier column, in its own lane above or below the boxes
    y1, y2 = (sy, ty) if up else (sy + BOX_H, ty + BOX_H)
    x1, x2 = sx + BOX_W / 2 - 12, tx + BOX_W / 2 + 12
    return ((x1, y1), (x1, lane), (x2, lane), (x2, y2)), "above" if up else "below"


CANDIDATES = (0.5, 0.4, 0.6, 0.3, 0.7, 0.25, 0.75, 0.2, 0.8, 0.15, 0.85)


def _place(edge: Edge, curve: Curve, mode: str, taken: list[Box]) -> Box:
    """The label's box: beside its own arrow where it overlaps no state and no other label.

    Points along the arrow are tried from the middle outwards; when all are taken the label
    moves away from the middle point, half a line at a time, until it is free.
    """
    w, h = edge.width, edge.height

    def box_at(t: float, shift: float = 0.0) -> Box:
        x, y = _bezier(curve, t)
        if mode == "right":
            return (x + 4, y - h / 2 + shift, w, h)
        if mode == "below":
            return (x - w / 2, y + 3 + shift, w, h)
        return (x - w / 2, y - 3 - h + shift, w, h)

    for t in CANDIDATES:
        candidate = box_at(t)
        if not any(_overlaps(candidate, other) for other in taken):
            return candidate
    direction = 1 if mode == "below" else -1
    step = 1
    while True:  # ends: finitely many boxes, and each step moves half a line further out
        for sign in (direction, -direction):
            candidate = box_at(0.5, sign * step * LINE_H / 2)
            if not any(_overlaps(candidate, other) for other in taken):
                return candidate
        step += 1


def _edge_svg(edge: Edge, curve: Curve, label: Box, taken: bool) -> str:
    """One arrow with its label in a white box."""
    (x0, y0), (x1, y1), (x2, y2), (x3, y3) = curve
    path = f"M{x0:.1f},{y0:.1f} C{x1:.1f},{y1:.1f} {x2:.1f},{y2:.1f} {x3:.1f},{y3:.1f}"
    dash = "" if edge.enabled else ' stroke-dasharray="5,4"'
    stroke, marker, weight = (TAKEN, "arrow-taken", "2.5") if taken else (GREY, "arrow", "1.5")
    lx, ly, w, h = label
    cx = lx + w / 2
    text = "".join(_label_line(cx, i, line, on) for i, (line, on) in enumerate(edge.lines()))
    return (f'<g class="transition{" taken" if taken else ""}" data-from="{escape(edge.source)}"'
            f' data-to="{escape(edge.target)}"><path d="{path}" fill="none" stroke="{stroke}"'
            f' stroke-width="{weight}"{dash} marker-end="url(#{marker})"/>'
            f'<rect class="edge-label" x="{lx:.1f}" y="{ly:.1f}" width="{w:.1f}"'
            f' height="{h:.1f}" rx="3" fill="#ffffff" fill-opacity="0.9"/>'
            f'<text x="{cx:.1f}" y="{ly + 10:.1f}" text-anchor="middle" font-size="10"'
            f' fill="{INK}">{text}</text></g>')
