"""The scheduled-trigger timers (wfapp/services/schedules.py): sync, claim, finish, summary."""

from __future__ import annotations

import copy
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from tests.polls import (
    edit_poll,
    integration,
    make_due,
    move_to_version,
    poll_workflow,
    send,
    waiting,
)
from wfapp.extensions import db
from wfapp.models import Instance, InstanceTimer, Workflow, WorkflowVersion, utcnow
from wfapp.services import schedule_summary, schedules
from wfapp.services.instances import delete_instance

POLL = "on_scheduled_poll"


def _timers() -> list[InstanceTimer]:
    db.session.rollback()
    return list(db.session.scalars(select(InstanceTimer).order_by(InstanceTimer.id)))


def _instance(key: str) -> Instance:
    db.session.rollback()
    return db.session.scalar(select(Instance).where(Instance.record_key == key))


def _close(a, b, ms: float = 2.0) -> bool:
    return abs((a - b).total_seconds()) * 1000 <= ms


def test_sync_makes_one_timer_per_waiting_instance_and_scheduled_transition(app):
    other = {"code": "CHECK2", "from_state": "WAIT", "to_state": "DONE", "trigger_type": POLL,
             "trigger_config": {"url": "http://h/b/{record_key}", "interval_minutes": 0.5}}
    off = {"code": "CHECK3", "from_state": "WAIT", "to_state": "DONE", "trigger_type": POLL,
           "enabled": False,
           "trigger_config": {"url": "http://h/c/{record_key}", "interval_minutes": 1}}
    poll_workflow(extra=[other, off], interval_minutes=2)
    integration()
    waiting("FEED", ["A", "B", "C"])
    send("FEED", ["N"], kind="nothing")  # stays in NEW: no poll leaves NEW
    assert schedules.sync(POLL) == (0, 6)
    timers = _timers()
    assert sorted((t.transition, _instance_key(t)) for t in timers) == [
        ("CHECK", "A"), ("CHECK", "B"), ("CHECK", "C"),
        ("CHECK2", "A"), ("CHECK2", "B"), ("CHECK2", "C")]
    for t in timers:
        entered = db.session.get(Instance, t.instance_id).entered_state_at
        assert _close(t.entered_at, entered, 0.001)
        interval = 120 if t.transition == "CHECK" else 30
        assert _close(t.due_at, entered + timedelta(seconds=interval))
        assert (t.failures, t.last_error, t.trigger_type) == (0, "", POLL)
    assert schedules.sync(POLL) == (0, 0)  # idempotent


def _instance_key(timer: InstanceTimer) -> str:
    return db.session.get(Instance, timer.instance_id).record_key


def test_sync_drops_timers_that_no_longer_apply(app):
    wf = poll_workflow()
    integration()
    waiting("FEED", ["LEAVE", "REENTER", "KEEP", "GONE"])
    schedules.sync(POLL)
    first = {_instance_key(t): (t.id, t.entered_at) for t in _timers()}
    send("FEED", ["LEAVE", "REENTER"], kind="back")  # WAIT -> NEW
    send("FEED", ["REENTER"], kind="start")  # NEW -> WAIT again: a new entered_state_at
    delete_instance(_instance("GONE").id, "tester")
    dropped, made = schedules.sync(POLL)
    now = {_instance_key(t): t for t in _timers()}
    assert set(now) == {"REENTER", "KEEP"} and made == 1
    assert (now["KEEP"].id, now["KEEP"].entered_at) == first["KEEP"]
    assert now["REENTER"].entered_at != first["REENTER"][1]  # a fresh timer (SQLite may reuse ids)
    assert _close(now["REENTER"].entered_at, _instance("REENTER").entered_state_at, 0.001)
    # The transition disabled in a new version: the instances on the old one keep polling;
    # once migrated to it, their timers go; enabled again (and migrated): they come back.
    edit_poll(enabled=False, migrate=False)
    assert schedules.sync(POLL) == (0, 0)
    edit_poll(enabled=False)
    assert schedules.sync(POLL) == (2, 0)
    edit_poll(enabled=True)
    assert schedules.sync(POLL) == (0, 2)
    # The transition replaced by one of another trigger type: its timers go.
    wf["transitions"][2]["trigger_type"] = "manual"
    wf["transitions"][2]["trigger_config"] = {}
    wf["transitions"][2]["capture"] = {}
    from wfapp.services.definitions import FORMAT, import_document

    import_document({"format": FORMAT, "workflow": wf}, replace=True)
    assert schedules.sync(POLL) == (0, 0)  # still on the version that polls
    edit_poll(code="START", description="moved on")  # migrates them to the newest version
    assert schedules.sync(POLL) == (2, 0) and _timers() == []


def _by_key(claimed: list[schedules.ClaimedTimer]) -> dict[str, schedules.ClaimedTimer]:
    return {c.record_key: c for c in claimed}


def test_each_instance_is_scheduled_by_the_version_it_follows(app):
    """Version 2 changes CHECK's URL and interval, version 3 removes it: the instance on
    version 1 keeps polling as version 1 says, the one on 3 is not polled at all."""
    from wfapp.services.workflows import delete_transition

    poll_workflow(url="http://h/v1/{record_key}", interval_minutes=2)
    integration()
    waiting("FEED", ["OLD"])
    assert edit_poll(migrate=False, trigger_config={"url": "http://h/v2/{record_key}",
                                                    "interval_minutes": 1}) == 2
    waiting("FEED", ["MID"])
    delete_transition("SHIP", "CHECK")
    waiting("FEED", ["NEW"])
    assert {k: _instance(k).workflow_version for k in ("OLD", "MID", "NEW")} == {
        "OLD": 1, "MID": 2, "NEW": 3}
    assert schedules.sync(POLL) == (0, 2)
    timers = {_instance_key(t): t for t in _timers()}
    assert set(timers) == {"OLD", "MID"}
    for key, seconds in (("OLD", 120), ("MID", 60)):
        entered = _instance(key).entered_state_at
        assert _close(timers[key].due_at, entered + timedelta(seconds=seconds))
    make_due(utcnow() - timedelta(seconds=1))
    claimed = _by_key(schedules.claim_due(POLL, 10))
    assert set(claimed) == {"OLD", "MID"}
    assert (claimed["OLD"].config["url"], claimed["OLD"].interval,
            claimed["OLD"].workflow_version) == ("http://h/v1/{record_key}", 120, 1)
    assert (claimed["MID"].config["url"], claimed["MID"].interval,
            claimed["MID"].workflow_version) == ("http://h/v2/{record_key}", 60, 2)
    # finish() backs off by the instance's version's interval (2 min for OLD, not 1).
    schedules.finish(claimed["OLD"].timer_id, "connection refused")
    old = next(t for t in _timers() if _instance_key(t) == "OLD")
    assert (old.due_at - old.last_run_at).total_seconds() == pytest.approx(240, abs=2)
    # Migrated to version 3 (no poll from WAIT): its timer goes at the next sync.
    move_to_version([_instance("OLD").id], 3)
    assert schedules.sync(POLL) == (1, 0)
    assert {_instance_key(t) for t in _timers()} == {"MID"}


def test_a_stale_version_timer_is_not_claimed_before_sync_drops_it(app):
    """Claiming checks the instance's version too, not only its state."""
    poll_workflow()
    integration()
    waiting("FEED", ["A", "B"])
    schedules.sync(POLL)
    edit_poll(migrate=False, from_state="NEW")  # version 2 polls from NEW, not WAIT
    move_to_version([_instance("A").id], 2)
    make_due()
    assert [c.record_key for c in schedules.claim_due(POLL, 10)] == ["B"]
    assert {_instance_key(t) for t in _timers()} == {"B"}


def test_claim_moves_due_one_interval_and_never_twice(app):
    poll_workflow(interval_minutes=1)
    integration()
    waiting("FEED", [f"K{i}" for i in range(5)])
    schedules.sync(POLL)
    assert schedules.claim_due(POLL, 10) == []  # nothing due yet (first due = entered + 1 min)
    due = utcnow() - timedelta(seconds=5)
    make_due(due)
    claimed = schedules.claim_due(POLL, 10)
    assert len(claimed) == 5 and {c.transition for c in claimed} == {"CHECK"}
    assert all(_close(c.due_at, due, 1) and c.interval == 60 for c in claimed)
    assert {c.record_key for c in claimed} == {f"K{i}" for i in range(5)}
    assert all(_close(t.due_at, due + timedelta(seconds=60)) for t in _timers())
    assert schedules.claim_due(POLL, 10) == []  # claimed: not due again this interval
    # Far behind (workers were down for an hour): due once, then one interval from now.
    make_due(utcnow() - timedelta(hours=1))
    before = utcnow()
    assert len(schedules.claim_due(POLL, 10)) == 5
    assert all(t.due_at >= before + timedelta(seconds=59) for t in _timers())
    assert schedules.claim_due(POLL, 10) == []


def test_claim_passes_over_disabled_workflows_and_integrations_and_keeps_their_timers(app):
    poll_workflow()
    integration()
    waiting("FEED", ["A", "B"])
    schedules.sync(POLL)
    make_due()
    db.session.execute(update(Workflow).values(enabled=False))
    db.session.commit()
    assert schedules.claim_due(POLL, 10, sync_first=True) == [] and len(_timers()) == 2
    db.session.execute(update(Workflow).values(enabled=True))
    from wfapp.models import Integration

    db.session.execute(update(Integration).values(enabled=False))
    db.session.commit()
    assert schedules.claim_due(POLL, 10, sync_first=True) == [] and len(_timers()) == 2
    db.session.execute(update(Integration).values(enabled=True))
    db.session.commit()
    assert len(schedules.claim_due(POLL, 10)) == 2  # due at once when enabled again


def test_claim_never_returns_a_stale_timer_before_sync_drops_it(app):
    poll_workflow()
    integration()
    waiting("FEED", ["A", "B"])
    schedules.sync(POLL)
    make_due()
    send("FEED", ["A"], kind="back")  # A left WAIT; no sync since
    assert [c.record_key for c in schedules.claim_due(POLL, 10)] == ["B"]


def test_claim_caps_per_integration_and_shares_the_limit(app):
    poll_workflow()
    a = integration("A")
    b = integration("B")
    waiting("A", [f"A{i}" for i in range(10)])
    waiting("B", [f"B{i}" for i in range(10)])
    schedules.sync(POLL)
    make_due()
    claimed = schedules.claim_due(POLL, 6, per_integration={a.id: 2, b.id: 10})
    by = {i: sum(1 for c in claimed if c.integration_id == i) for i in (a.id, b.id)}
    assert by == {a.id: 2, b.id: 4}
    only_b = schedules.claim_due(POLL, 50, per_integration={b.id: 3})
    assert {c.integration_id for c in only_b} == {b.id} and len(only_b) == 3
    rest = schedules.claim_due(POLL, 50)
    assert len(rest) == 20 - 6 - 3
    assert schedules.claim_due(POLL, 50, per_integration={a.id: 0, b.id: 0}) == []


def test_what_one_integration_leaves_of_the_limit_goes_to_the_others(app):
    poll_workflow()
    a = integration("A")
    b = integration("B")
    waiting("A", ["A0"])
    waiting("B", [f"B{i}" for i in range(10)])
    schedules.sync(POLL)
    for _ in range(4):  # whichever integration the rotation starts with
        make_due()
        claimed = schedules.claim_due(POLL, 6, per_integration={a.id: 6, b.id: 6})
        assert sorted(c.integration_id for c in claimed) == [a.id] + [b.id] * 5


def test_finish_backs_off_capped_and_success_resets(app):
    assert schedules.backoff_seconds(60, 1) == 120
    assert schedules.backoff_seconds(60, 3) == 480
    assert schedules.backoff_seconds(60, 4) == 600  # 10 intervals
    assert schedules.backoff_seconds(600, 3) == 3600  # 1 hour
    assert schedules.backoff_seconds(30, 50) == 300
    assert schedules.backoff_seconds(7200, 5) == 7200  # never less than the interval
    poll_workflow()
    integration()
    waiting("FEED", ["A"])
    schedules.sync(POLL)
    make_due()
    for n in (1, 2, 3):
        (claim,) = schedules.claim_due(POLL, 1)
        assert claim.failures == n - 1
        before = utcnow()
        schedules.finish_many([schedules.Finished(claim.timer_id, claim.interval,
                                                  claim.failures, "HTTP 500")])
        (timer,) = _timers()
        assert (timer.failures, timer.last_error) == (n, "HTTP 500")
        expected = before + timedelta(seconds=min(60 * 2 ** n, 600))
        assert abs((timer.due_at - expected).total_seconds()) < 2
        make_due()
    (claim,) = schedules.claim_due(POLL, 1)
    schedules.finish_many([schedules.Finished(claim.timer_id, claim.interval, claim.failures)])
    (timer,) = _timers()
    assert (timer.failures, timer.last_error) == (0, "")
    assert timer.due_at > utcnow() + timedelta(seconds=50)  # the normal interval again
    schedules.finish(timer.id, "timed out after 10 s")
    assert _timers()[0].failures == 1
    schedules.finish(999_999, "gone")  # a dropped timer: nothing to do


def test_claims_at_once_never_overlap(app):
    poll_workflow()
    integration()
    keys = [f"K{i:03d}" for i in range(300)]
    waiting("FEED", keys)
    schedules.sync(POLL)
    make_due()
    barrier = threading.Barrier(4)
    got: list[list[str]] = []

    def claim() -> None:
        with app.app_context():
            barrier.wait()
            mine = []
            while True:
                batch = schedules.claim_due(POLL, 7)
                if not batch:
                    break
                mine.extend(c.record_key for c in batch)
            got.append(mine)
            db.session.remove()

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    every = [k for mine in got for k in mine]
    # Whether the work was also shared depends on scheduling (on a loaded machine one thread can
    # drain the 300 before the others get the lock); what must hold is that nothing is claimed
    # twice or missed.
    assert sorted(every) == keys, "each instance claimed exactly once"


def test_summary_per_transition(app):
    poll_workflow(interval_minutes=5)
    feed = integration()
    integration("IDLE")
    waiting("FEED", ["A", "B", "C"])
    schedules.sync(POLL)
    make_due()
    claimed = schedules.claim_due(POLL, 2)
    schedules.finish_many([schedules.Finished(c.timer_id, c.interval, 0, "connection refused")
                           for c in claimed])
    (row,) = schedule_summary.summary(feed.id, POLL)
    assert (row.workflow, row.transition, row.from_state, row.enabled) == (
        "SHIP", "CHECK", "WAIT", True)
    assert (row.interval_seconds, row.waiting, row.failing, row.max_failures) == (300, 3, 2, 1)
    assert row.last_error == "connection refused" and row.last_error_at is not None
    assert row.next_due is not None and row.next_due <= utcnow()  # C is still due
    from wfapp.services.integrations import get_integration

    (idle,) = schedule_summary.summary(get_integration("IDLE").id, POLL)
    assert (idle.waiting, idle.failing, idle.next_due, idle.last_error) == (0, 0, None, "")


@pytest.mark.parametrize("minutes", [None, 0, -1, "5", True])
def test_a_transition_without_a_valid_interval_has_no_timers(app, minutes):
    poll_workflow()
    integration()
    waiting("FEED", ["A"])
    assert schedules.sync(POLL) == (0, 1)
    # Stored outside the rules (an older release, a hand edit of the version): no interval,
    # no timer.
    version = db.session.scalar(select(WorkflowVersion))
    document = copy.deepcopy(version.document)
    document["workflow"]["transitions"][2]["trigger_config"]["interval_minutes"] = minutes
    # An UPDATE, not an attribute change: the ORM would see 1 == True as no change.
    db.session.execute(update(WorkflowVersion).where(WorkflowVersion.id == version.id)
                       .values(document=document))
    db.session.commit()
    app.extensions["wfapp"].pop("compiled_versions", None)
    app.extensions["wfapp"].pop("scheduled_versions", None)
    assert schedules.sync(POLL) == (1, 0)
    assert schedules.claim_due(POLL, 10, sync_first=True) == []


@pytest.fixture
def sweepy(app_config):
    """An app that sweeps every second (processing jobs sweep between 1 s slices)."""
    from tests.conftest import _app_on_clean_database

    app_config.update({"SWEEP_INTERVAL": 1, "JOB_TIME_BUDGET": 60})
    yield from _app_on_clean_database(app_config)


def test_a_long_processing_job_fires_due_timeouts_between_slices(sweepy, monkeypatch):
    """A backlog (a poll cycle's answers) must not hold the sweep back for a job's budget."""
    from wfapp.jobs import process_events
    from wfapp.services import processing

    # The job must outlast a 1 s slice whatever the machine's speed: each batch takes at least
    # 0.1 s here (set-based batches apply this backlog in well under a second otherwise).
    real_batch = processing._process_batch_safely

    def slow_batch(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.1)
        return real_batch(*args, **kwargs)

    from wfapp.models import HistoryEntry, utcnow
    from wfapp.services.definitions import FORMAT, import_document
    from wfapp.services.events import NewEvent, ingest
    from wfapp.services.integrations import get_integration

    poll_workflow()
    integration()
    waiting("FEED", [f"H{i}" for i in range(20)])
    import_document({"format": FORMAT, "workflow": {
        "code": "TIMED", "initial_state": "HOLD",
        "states": [{"code": "HOLD", "is_initial": True, "timeout_hours": 1,
                    "on_timeout_transition": "EXPIRE"}, {"code": "GONE", "is_final": True}],
        "transitions": [{"code": "EXPIRE", "from_state": "HOLD", "to_state": "GONE",
                         "trigger_type": "manual"}]}})
    integration("TIMED", "TIMED")
    ingest(get_integration("TIMED"), [NewEvent("on_webhook", "x", f"T{i}", None, {})
                                      for i in range(20)], kick=False)
    from wfapp.services.processing import process_pending

    process_pending()
    db.session.execute(update(Instance).where(Instance.state == "HOLD")
                       .values(timeout_due_at=utcnow()))
    db.session.commit()
    monkeypatch.setattr(processing, "_process_batch_safely", slow_batch)
    # A steady stream for 3 s (another thread, like poll answers arriving), faster than one job
    # applies it: the job keeps finding pending events, so it runs past several 1 s slices.
    import threading

    flowing = threading.Event()

    def stream() -> None:
        with sweepy.app_context():
            feed = get_integration("FEED")
            for n in range(60):
                ingest(feed, [NewEvent("on_webhook", "back" if n % 2 == 0 else "start",
                                       f"H{i % 20}", None, {}) for i in range(200)],
                       kick=False)
                flowing.set()
                time.sleep(0.05)
            db.session.remove()

    # A backlog first, then the stream on top of it.
    ingest(get_integration("FEED"), [NewEvent("on_webhook", "back" if n % 2 == 0 else "start",
                                              f"H{i}", None, {})
                                     for n in range(150) for i in range(20)], kick=False)
    feeder = threading.Thread(target=stream)
    feeder.start()
    assert flowing.wait(30)
    started = utcnow()
    process_events()
    finished = utcnow()
    feeder.join()
    db.session.rollback()
    fired = db.session.scalars(select(HistoryEntry.at).where(
        HistoryEntry.trigger_type == "timeout")).all()
    assert (finished - started).total_seconds() > 1.2  # past at least one 1 s slice
    assert len(fired) == 20
    assert max(fired) < finished - timedelta(seconds=0.2), "fired during the job, not after"


def test_a_processing_job_hands_over_when_other_workers_hold_the_work(sweepy):
    """The slices must not turn into a busy loop while another worker holds the partitions."""
    import time

    from wfapp.jobs import process_events
    from wfapp.models import Event
    from wfapp.services.events import NewEvent, ingest, partition_of
    from wfapp.services.integrations import get_integration
    from wfapp.services.processing import acquire_lease

    poll_workflow()
    feed = integration()
    ingest(get_integration("FEED"), [NewEvent("on_webhook", "start", "H1", None, {})],
           kick=False)
    assert acquire_lease(f"partition:{partition_of(feed.id, 'H1', None)}", "other:1", 60)
    started = time.monotonic()
    process_events()
    assert time.monotonic() - started < 1.0  # not the job's 60 s budget
    db.session.rollback()
    assert db.session.scalar(select(Event.status)) == "pending"  # left to its lease holder
