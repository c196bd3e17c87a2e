"""The rule polls and action deliveries share for yielding to events waiting in the inbox."""

from __future__ import annotations

from wfapp.yielding import InboxYield


def test_yields_from_the_backlog_until_fewer_than_half_as_many_wait():
    rule = InboxYield(backlog=100, interval=0.1)
    assert not rule.active and rule.due(1.0)
    assert rule.note(99, 1.0) == "" and not rule.active
    assert not rule.due(1.05) and rule.due(1.1)
    assert rule.note(100, 1.1) == "began" and rule.active and rule.since == 1.1
    # Between the two thresholds nothing changes, whichever way the backlog moves.
    assert [rule.note(n, 1.2) for n in (5000, 50, 99, 50)] == ["", "", "", ""]
    assert rule.active
    assert rule.note(49, 2.0) == "ended" and not rule.active
    assert rule.note(60, 2.1) == ""  # and it takes the full backlog to begin again


def test_a_backlog_of_0_never_yields_and_never_looks():
    rule = InboxYield(backlog=0, interval=0.1)
    assert not rule.due(100.0)
    assert rule.note(10_000, 1.0) == "" and not rule.active


def test_a_backlog_of_1_ends_when_none_wait():
    rule = InboxYield(backlog=1, interval=0.1)
    assert rule.note(1, 1.0) == "began"
    assert rule.note(1, 1.5) == ""
    assert rule.note(0, 2.0) == "ended"


def test_ending_the_work_ends_the_yield_and_says_how_long_it_lasted():
    rule = InboxYield(backlog=10, interval=0.1)
    assert rule.end(5.0) == 0.0
    rule.note(10, 1.0)
    assert rule.end(3.5) == 2.5 and not rule.active
