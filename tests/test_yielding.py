"""The rule polls and action deliveries share for yielding to events waiting in the inbox."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from wfapp import yielding
from wfapp.yielding import InboxYield, engine_took, engine_took_others


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


# --- the engine's note: a burst seen from inside the process -----------------------------------


@pytest.fixture
def _engine_note() -> Iterator[None]:
    """Each test starts with no batch noted (the note is one per process)."""
    yielding._engine_last = (0.0, {})
    yield
    yielding._engine_last = (0.0, {})


def test_a_batch_of_other_sources_begins_the_yield_at_once(_engine_note):
    rule = InboxYield(backlog=100, interval=0.1, engine_source="poll")
    now = time.monotonic()
    assert not rule.hint(now)
    engine_took(Counter({"poll": 150, "on_webhook": 99}))
    assert not rule.hint(time.monotonic())  # the executor's own events are no backlog
    engine_took(Counter({"poll": 50, "on_webhook": 60, "timeout": 40}))
    now = time.monotonic()
    assert rule.hint(now) and rule.active and rule.since == now
    assert not rule.hint(now + 0.01)  # already yielding: nothing begins


def test_the_note_is_forgotten_after_a_while(_engine_note):
    rule = InboxYield(backlog=100, interval=0.1, engine_source="poll")
    engine_took({"on_webhook": 200})
    later = time.monotonic() + yielding.ENGINE_NOTE_SECONDS + 0.01
    assert engine_took_others("poll", later) == 0 and not rule.hint(later)


def test_a_yield_lasts_while_the_engine_takes_batches_of_the_backlog(_engine_note):
    rule = InboxYield(backlog=100, interval=0.1, engine_source="poll")
    assert rule.note(100, time.monotonic()) == "began"
    # The events in the engine's hands are no longer pending: the look finds none waiting,
    # yet the engine just took 200 of them.
    engine_took({"on_webhook": 200})
    assert rule.note(0, time.monotonic()) == "" and rule.active
    assert rule.note(0, time.monotonic() + yielding.ENGINE_NOTE_SECONDS + 0.01) == "ended"


def test_without_the_engine_hint_only_the_inbox_counts(_engine_note):
    rule = InboxYield(backlog=100, interval=0.1)
    engine_took({"on_webhook": 5000})
    assert not rule.hint(time.monotonic())
    assert rule.note(0, time.monotonic()) == "" and not rule.active
    rule.note(100, time.monotonic())
    assert rule.note(0, time.monotonic()) == "ended"


def test_a_backlog_of_0_ignores_the_engine_too(_engine_note):
    rule = InboxYield(backlog=0, interval=0.1, engine_source="poll")
    engine_took({"on_webhook": 5000})
    assert not rule.hint(time.monotonic()) and rule.note(0, time.monotonic()) == ""


def test_the_engine_notes_each_batch_and_each_sweep(app, demo, _engine_note):
    """Processing notes the sources of the batch it took, the sweep the timeouts it fires."""
    from datetime import timedelta

    from wfapp.models import utcnow
    from wfapp.queue import get_queue
    from wfapp.services.integrations import get_integration
    from wfapp.services.runs import start_run
    from wfapp.services.timeouts import fire_due_timeouts

    app.config["EVENT_PARTITIONS_PER_BATCH"] = 10_000  # every partition in one batch
    start_run(get_integration("SHOP_ORDERS"), "import",
              [{"key": f"K{i}", "data": {"total": 0}} for i in range(7)], "tester")
    get_queue().drain()
    assert yielding._engine_last[1] == {"on_import": 7}
    assert engine_took_others("on_scheduled_poll", time.monotonic()) == 7
    assert engine_took_others("on_import", time.monotonic()) == 0
    # The demo's NEW state times out after 24 hours.
    assert fire_due_timeouts(now=utcnow() + timedelta(hours=25)) == 7
    assert yielding._engine_last[1] == {"timeout": 7}


# --- large ingests announce themselves before their commit ------------------------------------


def _queues(app: Any, redis_url: str) -> Iterator[Any]:
    """Each kind of queue: the embedded one, RQ's on the real Redis, and the embedded worker
    process's, whose calls cross a pipe to the web process's queue."""
    import multiprocessing
    import threading

    import redis

    from wfapp.embedded_worker import ParentQueue, Supervisor
    from wfapp.queue import INCOMING_KEY, EmbeddedQueue, RedisQueue

    yield EmbeddedQueue(app)
    redis.Redis.from_url(redis_url).delete(INCOMING_KEY)
    yield RedisQueue(redis_url)
    web = EmbeddedQueue(app)
    ours, theirs = multiprocessing.Pipe()
    threading.Thread(target=Supervisor(web)._serve, args=(theirs,), daemon=True).start()
    yield ParentQueue(app, ours)
    ours.close()


def test_announcements_count_other_sources_until_retracted_or_expired(app, redis_url):
    for queue in _queues(app, redis_url):
        kind = type(queue).__name__
        assert queue.incoming("on_scheduled_poll") == 0, kind
        first = queue.announce({"on_import": 120, "on_scheduled_poll": 5}, 30)
        second = queue.announce({"on_bc_event": 1000}, 0.3)
        assert queue.incoming("on_scheduled_poll") == 1120, kind
        assert queue.incoming("on_import") == 1005, kind
        time.sleep(0.4)  # the second expired: its announcer never retracted it
        assert queue.incoming("on_scheduled_poll") == 120, kind
        queue.retract(first)
        queue.retract(second)  # already gone: no error
        assert queue.incoming("on_scheduled_poll") == 0, kind


def test_a_foreign_member_in_the_announcements_is_ignored(app, redis_url):
    import redis

    from wfapp.queue import INCOMING_KEY, RedisQueue

    client = redis.Redis.from_url(redis_url)
    client.delete(INCOMING_KEY)
    client.zadd(INCOMING_KEY, {"garbage": time.time() + 30, "x|{not json": time.time() + 30,
                               'y|{"on_import": "many"}': time.time() + 30})
    queue = RedisQueue(redis_url)
    queue.announce({"on_import": 60}, 30)
    assert queue.incoming("on_scheduled_poll") == 60
    client.delete(INCOMING_KEY)


def test_a_large_ingest_is_announced_while_it_is_written(app, demo, monkeypatch):
    """From 50 events on, an ingest announces its events (by source, failed ones left out) for
    the time of its insert and commit; a small one costs the queue nothing."""
    from wfapp.queue import get_queue
    from wfapp.services import events
    from wfapp.services.events import NewEvent, ingest
    from wfapp.services.integrations import get_integration

    seen: list[int] = []
    stage = events.stage

    def watching(*args: Any, **kwargs: Any) -> Any:
        seen.append(get_queue().incoming("on_scheduled_poll"))
        return stage(*args, **kwargs)

    monkeypatch.setattr(events, "stage", watching)
    shop = get_integration("SHOP_ORDERS")
    ingest(shop, [NewEvent("on_webhook", "x", f"K{i}", None, {}) for i in range(49)],
           kick=False)
    big = [NewEvent("on_webhook", "x", f"L{i}", None, {}) for i in range(60)]
    big += [NewEvent("on_webhook", "x", f"F{i}", None, {}, failure="refused")
            for i in range(5)]
    ingest(shop, big, kick=False)
    assert seen == [0, 60]
    assert get_queue().incoming("on_scheduled_poll") == 0  # retracted after the commit
    # Retracted when the insert fails as well.
    with pytest.raises(ValueError):
        ingest(shop, [NewEvent("on_webhook", "x", "K" * 300, None, {})] * 60, kick=False)
    assert get_queue().incoming("on_scheduled_poll") == 0
