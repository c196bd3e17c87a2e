"""Lint benchmark: lint time on the largest definitions the limits allow, vs validation alone.

    python bench/lint.py [--runs 9]

Pure Python, no database. Definitions at the size limits (200 states, 500 transitions, 3
conditions each): a chain with branches; all 500 transitions leaving one state on one trigger
type (124,750 pairs for the ambiguity check), overlapping, and all exclusive — the worst case,
which stops at lint.MAX_PAIRS comparisons; and the simulator's step rate on 200 steps. Each
line prints validation alone (the baseline every save already pays) next to validation +
warnings, as the median of --runs runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wfapp.engine import DEFAULT_LIMITS, compile_workflow, validate_workflow  # noqa: E402
from wfapp.engine.lint import lint_workflow  # noqa: E402
from wfapp.engine.simulate import check_scenario, simulate  # noqa: E402
from wfapp.plugins import build_registry, get_plugin_manager  # noqa: E402

STATES = DEFAULT_LIMITS.states
TRANSITIONS = DEFAULT_LIMITS.transitions


def _conditions(i: int) -> list[dict[str, Any]]:
    return [{"field": "event.total", "operator": "gt", "value": i % 7},
            {"field": "event.status", "operator": "in", "value": ["paid", "open", f"s{i}"]},
            {"field": "event.country", "operator": "eq", "value": f"C{i % 5}"}]


def chain() -> dict[str, Any]:
    """States in a chain with forward branches; the last ten are final."""
    states = [{"code": f"S{i}", "is_initial": i == 0, "is_final": i >= STATES - 10}
              for i in range(STATES)]
    movable = STATES - 10
    transitions = []
    for i in range(TRANSITIONS):
        a = i % movable
        b = min(a + 1 + (i // movable), STATES - 1)
        transitions.append({"code": f"T{i}", "from_state": f"S{a}", "to_state": f"S{b}",
                            "trigger_type": "on_webhook", "priority": i,
                            "trigger_config": {"event_filter": f"e{i % 3}"},
                            "conditions": _conditions(i), "capture": {"last": "event.total"}})
    return {"code": "BIG", "initial_state": "S0", "enabled": True, "states": states,
            "transitions": transitions}


def fan() -> dict[str, Any]:
    """All transitions leave the initial state on one trigger: every pair is compared."""
    wf = chain()
    for t in wf["transitions"]:
        t["from_state"] = "S0"
        t["trigger_config"] = {}
    return wf


def fan_exclusive() -> dict[str, Any]:
    """The fan-out where no two transitions overlap: the pair budget (MAX_PAIRS) is reached."""
    wf = fan()
    for i, t in enumerate(wf["transitions"]):
        t["conditions"] = [{"field": "event.number", "operator": "eq", "value": f"N{i}"}]
    return wf


def median_ms(fn: Callable[[], Any], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    triggers = build_registry(get_plugin_manager()).trigger_types
    print(f"lint benchmark — {STATES} states, {TRANSITIONS} transitions, 3 conditions each; "
          f"median of {args.runs} runs")
    cases = (("chain with branches", chain()), ("fan-out, overlapping", fan()),
             ("fan-out, all exclusive", fan_exclusive()))
    for name, wf in cases:
        base = median_ms(lambda wf=wf: validate_workflow(wf, triggers), args.runs)
        full = median_ms(lambda wf=wf: lint_workflow(wf, triggers), args.runs)
        warnings = len(lint_workflow(wf, triggers).warnings)
        print(f"{name:22} validation alone {base:8.1f} ms   lint (validation + warnings) "
              f"{full:8.1f} ms   x{full / base:4.1f}   {warnings} warnings")
    wf = chain()
    compiled = compile_workflow(wf)
    steps = [{"event": {"trigger_type": "on_webhook", "type": f"e{i % 3}",
                        "payload": {"total": 9, "status": "paid", "country": f"C{i % 5}"}}}
             if i % 4 else {"advance_hours": 1} for i in range(200)]
    scenario, errors = check_scenario({"steps": steps}, triggers)
    assert not errors and scenario is not None
    elapsed = median_ms(lambda: simulate(compiled, scenario, triggers), args.runs)
    print(f"simulator: 200 steps in {elapsed:.1f} ms ({200 / elapsed * 1000:,.0f} steps/s, "
          "each step explains every other candidate)")


if __name__ == "__main__":
    main()
