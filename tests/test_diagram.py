"""The state diagram: arrows leaving one state are fanned and labels never overlap, checked on
generated workflows by reading the label boxes back out of the SVG."""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from hypothesis import given, settings

from tests.strategies import workflows
from wfapp.workflows.diagram import Overlay, definition_shape, state_diagram

SVG = "{http://www.w3.org/2000/svg}"


def _as_model(document: dict[str, Any]) -> Any:
    return definition_shape(document["workflow"])


def _generated(seed: int) -> dict[str, Any]:
    """A workflow with many arrows: up to 12 states, 40 transitions, long codes, fan-outs."""
    rng = random.Random(seed)
    codes = [f"S{i}_{'X' * rng.randint(0, 14)}"[:20] for i in range(rng.randint(2, 12))]
    transitions = []
    for i in range(rng.randint(1, 40)):
        source = rng.choice(codes[:3]) if rng.random() < 0.4 else rng.choice(codes)
        transitions.append({"code": f"T{i}_{'Y' * rng.randint(0, 15)}"[:20],
                            "from_state": source, "to_state": rng.choice(codes),
                            "enabled": rng.random() > 0.2})
    return {"workflow": {"code": "GEN", "initial_state": codes[0], "transitions": transitions,
                         "states": [{"code": c, "is_initial": i == 0,
                                     "is_final": i == len(codes) - 1}
                                    for i, c in enumerate(codes)]}}


def _boxes(svg: str) -> tuple[list[tuple[float, ...]], list[tuple[float, ...]], list[float]]:
    root = ET.fromstring(svg)
    box = lambda r: tuple(float(r.get(k)) for k in ("x", "y", "width", "height"))  # noqa: E731
    labels = [box(r) for r in root.iter(f"{SVG}rect") if r.get("class") == "edge-label"]
    states = [box(g.find(f"{SVG}rect")) for g in root.iter(f"{SVG}g")
              if "state" in (g.get("class") or "").split()]
    view = [float(v) for v in root.get("viewBox").split()]
    return labels, states, view


def _apart(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return (a[0] + a[2] <= b[0] or b[0] + b[2] <= a[0] or a[1] + a[3] <= b[1]
            or b[1] + b[3] <= a[1])


def _check(document: dict[str, Any], overlay: Overlay | None = None) -> None:
    model = _as_model(document)
    svg = state_diagram(model, overlay)
    labels, states, (vx, vy, vw, vh) = _boxes(svg)
    pairs = {(t.from_state, t.to_state) for t in model.transitions}
    assert len(labels) == len(pairs)  # one label per arrow, transitions sharing it stack
    for i, label in enumerate(labels):
        for other in labels[i + 1:]:
            assert _apart(label, other), f"labels overlap: {label} {other}"
        for state in states:
            assert _apart(label, state), f"label {label} overlaps state {state}"
        assert vx <= label[0] and label[0] + label[2] <= vx + vw
        assert vy <= label[1] and label[1] + label[3] <= vy + vh


@pytest.mark.parametrize("seed", range(150))
def test_labels_never_overlap_on_generated_workflows(seed):
    _check(_generated(seed))


@settings(max_examples=60, deadline=None)
@given(workflows())
def test_labels_never_overlap_on_valid_documents(document):
    _check(document)


def test_labels_with_counts_never_overlap():
    document = _generated(7)
    counts = {t["code"]: i * 1234 for i, t in enumerate(document["workflow"]["transitions"])}
    _check(document, Overlay(edge_counts=counts, state_counts={"S0_": 3}))


def test_two_arrows_leaving_one_state_start_apart_and_labels_do_not_overlap():
    document = {"workflow": {"code": "FAN", "initial_state": "NEW", "states": [
        {"code": "NEW", "is_initial": True}, {"code": "OK"}, {"code": "FAILED"}],
        "transitions": [
            {"code": "ACCEPT_THE_ORDER", "from_state": "NEW", "to_state": "OK"},
            {"code": "REJECT_THE_ORDER", "from_state": "NEW", "to_state": "FAILED"}]}}
    svg = state_diagram(_as_model(document))
    starts = {p.get("d").split()[0] for p in ET.fromstring(svg).iter(f"{SVG}path")
              if p.get("d", "").startswith("M") and "C" in p.get("d")}
    assert len(starts) == 2, starts  # fanned: two different start points
    _check(document)


def test_instance_overlay_highlights_current_state_and_path():
    document = _generated(3)
    model = _as_model(document)
    first = model.transitions[0]
    svg = state_diagram(model, Overlay(current=first.to_state,
                                       visited=frozenset({first.from_state, first.to_state}),
                                       taken=frozenset({(first.from_state, first.to_state)})))
    root = ET.fromstring(svg)
    current = [g.get("data-state") for g in root.iter(f"{SVG}g")
               if "current" in (g.get("class") or "").split()]
    taken = [(g.get("data-from"), g.get("data-to")) for g in root.iter(f"{SVG}g")
             if "taken" in (g.get("class") or "").split()]
    assert current == [first.to_state]
    assert taken == [(first.from_state, first.to_state)]
    assert f"the instance is in {first.to_state}" in root.find(f"{SVG}title").text


def test_instance_page_shows_its_place_path_and_short_notes(client, auth):
    from sqlalchemy import select

    from tests.pages import find_all, svg_of
    from wfapp.extensions import db
    from wfapp.models import Instance
    from wfapp.services.definitions import FORMAT, import_document
    from wfapp.services.events import NewEvent, ingest
    from wfapp.services.integrations import create_integration, get_integration
    from wfapp.services.processing import process_pending

    import_document({"format": FORMAT, "workflow": {
        "code": "TRIP", "initial_state": "A", "states": [
            {"code": "A", "is_initial": True}, {"code": "B"}, {"code": "C"},
            {"code": "D", "is_final": True}],
        "transitions": [
            {"code": "AB", "from_state": "A", "to_state": "B", "trigger_type": "on_webhook"},
            {"code": "BC", "from_state": "B", "to_state": "C", "trigger_type": "on_webhook",
             "trigger_config": {"event_filter": "never"}},
            {"code": "BD", "from_state": "B", "to_state": "D", "trigger_type": "manual"}]}})
    create_integration({"code": "TRIPS", "workflow_code": "TRIP"})
    payload = {"type": "go", "order": {"number": "SO-1", "lines": list(range(30))},
               "note": "x" * 50}
    ingest(get_integration("TRIPS"), [NewEvent("on_webhook", "go", "K1", None, payload)],
           kick=False)
    process_pending(time_budget=30)
    instance = db.session.scalar(select(Instance))
    auth.login("viewer")
    page = client.get(f"/instances/{instance.id}").get_data(as_text=True)
    svg = svg_of(page)
    groups = {(g.get("class"), g.get("data-state") or (g.get("data-from"), g.get("data-to")))
              for g in svg.iter(f"{SVG}g")}
    assert ("state visited current", "B") in groups
    assert ("state visited", "A") in groups and ("state", "C") in groups
    assert ("transition taken", ("A", "B")) in groups
    assert ("transition", ("B", "C")) in groups
    notes = find_all(page, "details", cls="history-notes")
    assert len(notes) == 1
    summary = find_all(page, "summary")[-1].text
    assert summary.startswith("payload {") and len(summary) <= 80
    assert '"number": "SO-1"' in notes[0].text  # the whole payload, behind the disclosure
    assert "instance created" in page  # a short note stays as it is


def test_card_diagram_shows_counts_from_the_tally(client, auth):
    from tests.pages import find, svg_of
    from wfapp.services.definitions import FORMAT, import_document
    from wfapp.services.events import NewEvent, ingest
    from wfapp.services.integrations import create_integration, get_integration
    from wfapp.services.processing import process_pending

    import_document({"format": FORMAT, "workflow": {
        "code": "CNT", "initial_state": "A", "states": [
            {"code": "A", "is_initial": True}, {"code": "B"}, {"code": "C", "is_final": True}],
        "transitions": [
            {"code": "AB", "from_state": "A", "to_state": "B", "trigger_type": "on_webhook",
             "trigger_config": {"event_filter": "go"}},
            {"code": "BC", "from_state": "B", "to_state": "C", "trigger_type": "on_webhook",
             "trigger_config": {"event_filter": "end"}}]}})
    create_integration({"code": "CNTS", "workflow_code": "CNT"})
    events = [NewEvent("on_webhook", "go", f"K{i}", None, {}) for i in range(4)] + \
        [NewEvent("on_webhook", "end", "K0", None, {})]
    ingest(get_integration("CNTS"), events, kick=False)
    process_pending(time_budget=30)
    auth.login("viewer")
    plain = client.get("/workflows/CNT").get_data(as_text=True)
    assert "in 7 d" not in plain
    assert find(plain, "a", id="diagram-counts-toggle").attrs["href"].endswith(
        "counts=1#diagram-heading")
    page = client.get("/workflows/CNT?counts=1").get_data(as_text=True)
    texts = ["".join(t.itertext()) for t in svg_of(page).iter(f"{SVG}text")]
    assert "AB4× in 7 d" in texts and "BC1× in 7 d" in texts
    assert "3 active" in texts and "0 active" in texts  # B holds 3, A none
    assert find(page, "a", id="diagram-counts-toggle").text.strip() == "Hide counts"
