"""The state diagram on the Workflow Card: an inline SVG drawn on the server (no scripts, no CDN).

States are laid out in columns by their distance from the initial state; transitions are arrows
labelled with their code. Initial and final states are marked, disabled transitions dashed.
"""

from __future__ import annotations

from collections import deque
from html import escape

from ..models import Workflow

BOX_W, BOX_H = 150, 46
COL_GAP, ROW_GAP = 90, 34
PAD = 24


def _layers(workflow: Workflow) -> dict[str, int]:
    """Column of each state: BFS distance from the initial state; unreachable states last."""
    edges: dict[str, list[str]] = {}
    for t in workflow.transitions:
        edges.setdefault(t.from_state, []).append(t.to_state)
    column = {workflow.initial_state: 0}
    queue = deque([workflow.initial_state])
    while queue:
        state = queue.popleft()
        for target in edges.get(state, []):
            if target not in column:
                column[target] = column[state] + 1
                queue.append(target)
    last = max(column.values(), default=0) + 1
    for s in workflow.states:
        column.setdefault(s.code, last)
    return column


def state_diagram(workflow: Workflow) -> str:
    """Return the SVG markup of the workflow's state diagram."""
    if not workflow.states:
        return ""
    column = _layers(workflow)
    rows: dict[int, int] = {}
    position: dict[str, tuple[int, int]] = {}
    for s in workflow.states:
        c = column[s.code]
        r = rows.get(c, 0)
        rows[c] = r + 1
        position[s.code] = (PAD + c * (BOX_W + COL_GAP), PAD + r * (BOX_H + ROW_GAP))
    width = PAD * 2 + (max(column.values()) + 1) * (BOX_W + COL_GAP) - COL_GAP
    height = PAD * 2 + max(rows.values()) * (BOX_H + ROW_GAP) - ROW_GAP + 20
    parts = [
        f'<svg class="state-diagram" role="img"'
        f' aria-label="State diagram of {escape(workflow.code)}"'
        f' xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7"'
        ' markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"'
        ' fill="#6c757d"/></marker></defs>',
    ]
    pair_count: dict[tuple[str, str], int] = {}
    for t in workflow.transitions:
        if t.from_state not in position or t.to_state not in position:
            continue
        key = (t.from_state, t.to_state)
        nth = pair_count.get(key, 0)
        pair_count[key] = nth + 1
        parts.append(_edge(position[t.from_state], position[t.to_state], t.code, t.enabled, nth))
    for s in workflow.states:
        x, y = position[s.code]
        fill = "#e7f1ff" if s.is_initial else ("#e9ecef" if s.is_final else "#ffffff")
        stroke = "#0d6efd" if s.is_initial else "#495057"
        border = 3 if s.is_final else 1.5
        parts.append(f'<g><title>{escape(s.code)}: {escape(s.description or "")}</title>'
                     f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="8" '
                     f'fill="{fill}" stroke="{stroke}" stroke-width="{border}"/>'
                     f'<text x="{x + BOX_W / 2}" y="{y + 19}" text-anchor="middle" '
                     f'font-weight="600" font-size="13">{escape(s.code)}</text>'
                     f'<text x="{x + BOX_W / 2}" y="{y + 35}" text-anchor="middle" '
                     f'font-size="10" fill="#6c757d">{escape(_marks(s))}</text></g>')
    parts.append("</svg>")
    return "".join(parts)


def _marks(state) -> str:
    marks = []
    if state.is_initial:
        marks.append("initial")
    if state.is_final:
        marks.append("final")
    if state.timeout_hours:
        marks.append(f"⏱ {state.timeout_hours:g} h")
    return " · ".join(marks) or (state.description or "")[:22]


def _edge(source: tuple[int, int], target: tuple[int, int], label: str, enabled: bool,
          nth: int) -> str:
    sx, sy = source
    tx, ty = target
    dash = "" if enabled else ' stroke-dasharray="5,4"'
    if source == target:  # a loop above the box
        x, y = sx + BOX_W / 2, sy
        path = f"M{x - 20},{y} C{x - 40},{y - 40} {x + 40},{y - 40} {x + 20},{y}"
        lx, ly = x, y - 34
    else:
        forward = tx > sx
        x1 = sx + (BOX_W if forward or tx == sx else 0)
        x2 = tx + (0 if forward or tx == sx else BOX_W)
        y1, y2 = sy + BOX_H / 2, ty + BOX_H / 2
        if tx == sx:  # same column: bow out to the right
            x1 = x2 = sx + BOX_W
        bend = (18 + nth * 16) * (1 if forward else -1)
        if tx == sx:
            bend = 40 + nth * 16
        mx, my = (x1 + x2) / 2, (y1 + y2) / 2
        cx, cy = (mx + bend, my) if tx == sx else (mx, my - bend)
        path = f"M{x1},{y1} Q{cx},{cy} {x2},{y2}"
        lx, ly = (mx + cx) / 2, (my + cy) / 2 - 4
    return (f'<g><path d="{path}" fill="none" stroke="#6c757d" stroke-width="1.5"{dash}'
            f' marker-end="url(#arrow)"/><text x="{lx}" y="{ly}" text-anchor="middle"'
            f' font-size="10" fill="#212529">{escape(label)}</text></g>')
