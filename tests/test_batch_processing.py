"""Batches applied set-based: order per instance, compare-and-set lost mid-batch, actions mixed."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select, update

from wfapp.extensions import db
from wfapp.models import ActionDelivery, Event, HistoryEntry, Instance
from wfapp.services import processing
from wfapp.services.definitions import FORMAT, import_document
from wfapp.services.events import NewEvent, ingest, partition_of
from wfapp.services.integrations import create_integration, get_integration

STATES = ["S0", "S1", "S2", "S3"]


def _ring(actions_on_n0: bool = False) -> None:
    """S0 → S1 → S2 → S3 → S0, one step per `next` webhook; N0 may carry actions."""
    transitions: list[dict[str, Any]] = []
    for i, state in enumerate(STATES):
        transitions.append({"code": f"N{i}", "from_state": state,
                            "to_state": STATES[(i + 1) % 4], "trigger_type": "on_webhook",
                            "trigger_config": {"event_filter": "next"}})
    if actions_on_n0:
        transitions[0]["actions"] = [
            {"type": "set_variable", "config": {"values": {"seen": "{record_key}"}}},
            {"id": "call", "type": "http_request",
             "config": {"method": "POST", "url": "http://127.0.0.1:9/{record_key}"}}]
    import_document({"format": FORMAT, "workflow": {
        "code": "RING", "initial_state": "S0",
        "states": [{"code": s, "is_initial": s == "S0"} for s in STATES],
        "transitions": transitions}})
    create_integration({"code": "FEED", "workflow_code": "RING"})


def _same_partition_keys(count: int) -> list[str]:
    """Record keys whose events share one inbox partition, so they share a batch."""
    integration_id = get_integration("FEED").id
    first = partition_of(integration_id, "K0", None)
    keys = [f"K{i}" for i in range(2000) if partition_of(integration_id, f"K{i}", None) == first]
    assert len(keys) >= count
    return keys[:count]


def _send(keys: list[str]) -> list[int]:
    """Store one `next` event per key (in this order); return their ids."""
    ingest(get_integration("FEED"), [NewEvent("on_webhook", "next", key, None, {})
                                     for key in keys], kick=False)
    return list(db.session.scalars(select(Event.id).where(Event.status == "pending")
                                   .order_by(Event.id)))


def _process() -> int:
    return processing.process_pending(time_budget=30)


def _instance(key: str) -> Instance:
    db.session.expire_all()
    return db.session.scalars(select(Instance).where(Instance.record_key == key)).one()


def _moves(key: str) -> list[tuple[str | None, str, int | None]]:
    """(from, to, event id) of the instance's history, in the order it was written."""
    return [tuple(row) for row in db.session.execute(  # type: ignore[misc]
        select(HistoryEntry.from_state, HistoryEntry.to_state, HistoryEntry.event_id)
        .join(Instance, Instance.id == HistoryEntry.instance_id)
        .where(Instance.record_key == key).order_by(HistoryEntry.id))]


def _results() -> dict[int, tuple[str, str]]:
    db.session.expire_all()
    return {e.id: (e.status, e.result) for e in db.session.scalars(select(Event))}


def _interfere(monkeypatch: Any, rounds: int, act: Any) -> list[list[int]]:
    """Let another writer change instances (`act(conn)`) just before the batch's first
    `rounds` writes; return the instance ids each write tried."""
    real = processing._write_instances
    tried: list[list[int]] = []

    def write(conn: Any, work: Any) -> set[int]:
        if len(tried) < rounds:
            act(conn)
        tried.append(sorted(work.changes))
        return real(conn, work)

    monkeypatch.setattr(processing, "_write_instances", write)
    return tried


def test_several_events_of_one_instance_in_one_batch_apply_in_order(app):
    _ring()
    a, b = _same_partition_keys(2)
    # a's first event creates its instance; both instances then step through their events.
    ids = _send([a, b, a, a, b, a, a])
    assert _process() == 7
    results = _results()
    assert results[ids[0]] == ("processed", "created the instance; fired N0: S0 → S1")
    assert results[ids[2]] == ("processed", "fired N1: S1 → S2")
    assert results[ids[6]] == ("processed", "fired N0: S0 → S1")
    assert _moves(a) == [(None, "S0", ids[0]), ("S0", "S1", ids[0]), ("S1", "S2", ids[2]),
                         ("S2", "S3", ids[3]), ("S3", "S0", ids[5]), ("S0", "S1", ids[6])]
    assert _moves(b) == [(None, "S0", ids[1]), ("S0", "S1", ids[1]), ("S1", "S2", ids[4])]
    inst = _instance(a)
    # One version step per move, as if each had been written on its own.
    assert (inst.state, inst.version, inst.last_transition) == ("S1", 6, "N0")
    assert (_instance(b).state, _instance(b).version) == ("S2", 3)
    assert db.session.scalar(select(func.count()).select_from(Event)
                             .where(Event.instance_id == inst.id)) == 5


def test_a_lost_compare_and_set_decides_that_instance_again_once(app, monkeypatch):
    _ring(actions_on_n0=True)
    a, b = _same_partition_keys(2)
    _send([a, b])
    _process()  # both exist, in S1, with one outbox row each
    ids = _send([a, b, a, a])

    def person_moves_a(conn: Any) -> None:  # e.g. a manual fire committed meanwhile
        conn.execute(update(Instance.__table__).where(Instance.record_key == a)
                     .values(state="S3", version=Instance.__table__.c.version + 1))

    tried = _interfere(monkeypatch, 1, person_moves_a)
    assert _process() == 4
    a_id, b_id = _instance(a).id, _instance(b).id
    assert tried == [sorted([a_id, b_id]), [a_id]]  # only a's events were decided again
    results = _results()
    # Decided on the state the other writer left (S3), each applied once.
    assert [results[i] for i in (ids[0], ids[2], ids[3])] == [
        ("processed", "fired N3: S3 → S0"), ("processed", "fired N0: S0 → S1"),
        ("processed", "fired N1: S1 → S2")]
    assert results[ids[1]] == ("processed", "fired N1: S1 → S2")
    assert _moves(a)[-3:] == [("S3", "S0", ids[0]), ("S0", "S1", ids[2]), ("S1", "S2", ids[3])]
    assert len(_moves(a)) == 2 + 3 and len(_moves(b)) == 2 + 1
    assert (_instance(a).state, _instance(a).version) == ("S2", 2 + 1 + 3)
    # a's N0 (its second event) wrote its outbox row once; nothing from the lost round.
    rows = db.session.execute(select(ActionDelivery.instance_id, ActionDelivery.event_id)
                              .order_by(ActionDelivery.id)).all()
    assert rows[2:] == [(a_id, ids[2])]


def test_an_instance_that_keeps_changing_fails_its_events_and_writes_nothing(app, monkeypatch):
    _ring()
    a, b = _same_partition_keys(2)
    _send([a, b])
    _process()
    ids = _send([a, b])
    _interfere(monkeypatch, processing.ROUNDS, lambda conn: conn.execute(
        update(Instance.__table__).where(Instance.record_key == a)
        .values(version=Instance.__table__.c.version + 1)))
    _process()
    results = _results()
    assert results[ids[0]] == ("failed", "instance kept changing under this event; replay it")
    assert results[ids[1]] == ("processed", "fired N1: S1 → S2")
    assert _instance(a).state == "S1" and len(_moves(a)) == 2


def test_an_instance_deleted_meanwhile_skips_its_events(app, monkeypatch):
    _ring()
    a, b = _same_partition_keys(2)
    _send([a, b])
    _process()
    ids = _send([a, a, b])
    _interfere(monkeypatch, 1, lambda conn: conn.execute(
        delete(Instance.__table__).where(Instance.record_key == a)))
    _process()
    results = _results()
    assert results[ids[0]] == results[ids[1]] == ("skipped", "instance was deleted meanwhile")
    assert results[ids[2]] == ("processed", "fired N1: S1 → S2")
    assert db.session.scalar(select(func.count()).select_from(Instance)
                             .where(Instance.record_key == a)) == 0


def test_a_batch_mixing_instances_with_and_without_actions(app):
    _ring(actions_on_n0=True)
    keys = _same_partition_keys(4)
    _send(keys[:2])
    _process()  # keys 0 and 1 fired N0 (actions) and sit in S1
    before = db.session.scalar(select(func.count()).select_from(ActionDelivery))
    ids = _send([keys[0], keys[2], keys[1], keys[3], keys[2]])
    assert _process() == 5
    # keys 2 and 3 were created and fired N0 (actions); 0 and 1 fired N1 (none); key 2 then N1.
    rows = db.session.execute(
        select(Instance.record_key, ActionDelivery.event_id, ActionDelivery.type,
               ActionDelivery.status)
        .join(Instance, Instance.id == ActionDelivery.instance_id)
        .order_by(ActionDelivery.id)).all()
    assert len(rows) == before + 2
    assert rows[before:] == [(keys[2], ids[1], "http_request", "pending"),
                             (keys[3], ids[3], "http_request", "pending")]
    # set_variable ran in the batch's transaction, before the instance was written.
    assert [_instance(k).vars for k in keys] == [{"seen": keys[0]}, {"seen": keys[1]},
                                                 {"seen": keys[2]}, {"seen": keys[3]}]
    assert [_instance(k).state for k in keys] == ["S2", "S2", "S2", "S1"]


def test_one_batch_takes_events_of_several_leased_partitions(app, monkeypatch):
    _ring()
    integration_id = get_integration("FEED").id
    keys, seen = [], set()
    for i in range(500):  # one key per partition, for 12 partitions
        partition = partition_of(integration_id, f"P{i}", None)
        if partition not in seen:
            seen.add(partition)
            keys.append(f"P{i}")
        if len(keys) == 12:
            break
    ids = _send(keys + keys)
    real = processing._count_attempt
    claims: list[list[int]] = []

    def spy(conn: Any, partitions: list[int], limit: int) -> list[int]:
        claimed = real(conn, partitions, limit)
        claims.append(claimed)
        return claimed

    monkeypatch.setattr(processing, "_count_attempt", spy)
    app.config["EVENT_PARTITIONS_PER_BATCH"] = 5
    assert _process() == 24
    # Partitions leased 5 at a time: 3 groups (5, 5, 2), each one batch with its two rounds of
    # events per key, in received order per instance.
    assert sorted(len(c) for c in claims if c) == [4, 10, 10]
    results = _results()
    assert all(results[i][0] == "processed" for i in ids)
    for key in keys:
        assert [(f, t) for f, t, _ in _moves(key)] == [(None, "S0"), ("S0", "S1"), ("S1", "S2")]
    assert db.session.scalar(select(func.count()).select_from(processing.LEASE)
                             .where(processing.LEASE.c.owner != "")) == 0


def test_a_replayed_event_gets_its_attempts_back(app):
    from wfapp.services.events import replay

    _ring()
    [event_id] = _send(["R1"])
    # As if it had crashed processing three times and been given up on, then the cause fixed.
    db.session.execute(update(Event).where(Event.id == event_id)
                       .values(status="failed", attempts=3, result="gave up after 3 attempts"))
    db.session.commit()
    replay(event_id)
    _process()
    assert _results()[event_id] == ("processed", "created the instance; fired N0: S0 → S1")


def test_a_batch_overtaken_by_another_worker_rolls_back_whole(app, monkeypatch):
    """An expired lease let another worker apply one of the batch's events first: nothing of
    the batch is written (no move decided on that event), and the events left are applied once."""
    _ring()
    a, b = _same_partition_keys(2)
    _send([a, b])
    _process()  # both exist, in S1
    ids = _send([a, b, a])

    def other_worker_applies_first(conn: Any) -> None:
        conn.execute(update(Event.__table__).where(Event.id == ids[1])
                     .values(status="processed", result="applied by another worker"))

    tried = _interfere(monkeypatch, 1, other_worker_applies_first)
    # The overtaken batch counts nothing; it is claimed again and applied once. (The other
    # worker's write is simulated in this batch's own transaction, so it is rolled back too.)
    assert _process() == 3
    a_id, b_id = _instance(a).id, _instance(b).id
    assert tried == [[a_id, b_id], [a_id, b_id]]  # the retry is a whole batch again
    # Losing the race is not a failed attempt: each event counts only the one that applied it.
    assert set(db.session.scalars(select(Event.attempts).where(Event.id.in_(ids)))) == {1}
    results = _results()
    assert [results[i][0] for i in ids] == ["processed"] * 3
    assert [t for _, t, e in _moves(a) if e in ids] == ["S2", "S3"]
    assert [t for _, t, e in _moves(b) if e in ids] == ["S2"]
