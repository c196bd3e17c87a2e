"""On Scheduled Poll benchmark on PostgreSQL + Redis; prints its figures side by side.

    python bench/polls.py [--instances 10000] [--latency 0.05] [--workers 2]
                          [--poll-concurrency 64] [--events 5000] [--timeouts 2000]
                          [--yield-backlog 100] [--yield-concurrency 0]

N instances wait in a state left by a poll transition; a local endpoint (its own process, a
threaded HTTP server) answers each poll after `--latency` seconds. K `flask --app wfapp worker`
processes (with the scheduler) run the polls, each with POLL_CONCURRENCY request threads; the
integration's Poll Concurrency is set to the same number.

- full poll cycle: from the moment the poll transition is enabled (every instance already due)
  until the last of the N answers is stored as an event; and until they are all evaluated;
- timeout sweep: T instances whose timeout falls due at once, until all have moved;
- event processing: E webhook events for other instances, from queued until applied;
the last two measured first with no poll running, then again during the poll cycle (one after
the other, each while the polls go on), and their ratio during / without. The polls yield to
the other events (POLL_YIELD_BACKLOG, POLL_YIELD_CONCURRENCY; `--yield-backlog 0` turns it off):
how often the workers' executors began yielding is printed too.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.engine import (  # noqa: E402
    add_service_options,
    make_app,
    reset_database,
    start_workers,
    stop_workers,
)

FORMAT = "wfapp.workflow/v1"


def serve(port_queue: Any, latency: float) -> None:
    """The endpoint: every /orders/<key> answers {"status": "waiting"} after `latency` s."""
    from tests.poll_server import PollServer

    with PollServer() as server:
        server.delay = latency
        port_queue.put(server.url)
        while True:
            time.sleep(3600)


def workflows(url: str) -> list[dict[str, Any]]:
    """POLLED: WAIT --CHECK (poll)--> DONE; RING: A <-> B by webhooks; TIMED: HOLD times out."""
    polled = {"code": "POLLED", "initial_state": "WAIT", "states": [
        {"code": "WAIT", "is_initial": True}, {"code": "DONE", "is_final": True}],
        "transitions": [{"code": "CHECK", "from_state": "WAIT", "to_state": "DONE",
                         "trigger_type": "on_scheduled_poll", "enabled": False,
                         "trigger_config": {"url": url + "/orders/{record_key}",
                                            "interval_minutes": 60, "response_path": "status",
                                            "expected_value": "shipped"}}]}
    ring = {"code": "RING", "initial_state": "A", "states": [
        {"code": "A", "is_initial": True}, {"code": "B"}],
        "transitions": [
            {"code": "AB", "from_state": "A", "to_state": "B", "trigger_type": "on_webhook",
             "trigger_config": {"event_filter": "next"}},
            {"code": "BA", "from_state": "B", "to_state": "A", "trigger_type": "on_webhook",
             "trigger_config": {"event_filter": "next"}}]}
    timed = {"code": "TIMED", "initial_state": "HOLD", "states": [
        {"code": "HOLD", "is_initial": True, "timeout_hours": 1,
         "on_timeout_transition": "EXPIRE"}, {"code": "GONE"}],
        "transitions": [
            {"code": "EXPIRE", "from_state": "HOLD", "to_state": "GONE", "trigger_type": "manual"},
            {"code": "AGAIN", "from_state": "GONE", "to_state": "HOLD", "trigger_type": "manual"}]}
    return [{"format": FORMAT, "workflow": w} for w in (polled, ring, timed)]


def seed(args: Any, url: str) -> None:
    """The workflows, integrations and instances (COPY; the polled ones entered an hour ago)."""
    import psycopg

    from wfapp.extensions import db
    from wfapp.models import utcnow
    from wfapp.services.definitions import import_document
    from wfapp.services.integrations import create_integration

    for document in workflows(url):
        import_document(document)
    create_integration({"code": "POLLED", "workflow_code": "POLLED",
                        "poll_concurrency": args.poll_concurrency})
    create_integration({"code": "RING", "workflow_code": "RING"})
    create_integration({"code": "TIMED", "workflow_code": "TIMED"})
    db.session.remove()
    dsn = args.database.replace("postgresql+psycopg://", "postgresql://")
    now = utcnow()
    with psycopg.connect(dsn) as conn:
        ids = dict(conn.execute("SELECT code, id FROM workflow").fetchall())
        integrations = dict(conn.execute("SELECT code, id FROM integration").fetchall())
        columns = ("workflow_id, integration_id, record_key, state, active, entered_state_at, "
                   "timeout_due_at, data, vars, version, created_at")
        with conn.cursor().copy(f"COPY instance ({columns}) FROM STDIN") as copy:
            entered = now - timedelta(hours=1)
            for i in range(args.instances):
                copy.write_row((ids["POLLED"], integrations["POLLED"], f"P{i}", "WAIT", True,
                                entered, None, "{}", "{}", 1, entered))
            for i in range(args.ring):
                copy.write_row((ids["RING"], integrations["RING"], f"R{i}", "A", True,
                                now, None, "{}", "{}", 1, now))
            for i in range(args.timeouts):
                copy.write_row((ids["TIMED"], integrations["TIMED"], f"T{i}", "HOLD", True,
                                now, now + timedelta(hours=1), "{}", "{}", 1, now))
        conn.execute("ANALYZE")


def count(sql: str) -> int:
    """One number from the database."""
    from sqlalchemy import text

    from wfapp.extensions import db

    db.session.rollback()
    return int(db.session.execute(text(sql)).scalar() or 0)


def wait_for_none(sql: str, timeout: float = 600) -> None:
    """Return once `sql` counts none."""
    start = time.perf_counter()
    while count(sql):
        if time.perf_counter() - start > timeout:
            raise RuntimeError(f"timed out: {sql}")
        time.sleep(0.05)


def wait_for(sql: str, target: int, timeout: float = 600) -> float:
    """Seconds until `sql` counts at least `target`."""
    start = time.perf_counter()
    while count(sql) < target:
        if time.perf_counter() - start > timeout:
            raise RuntimeError(f"timed out: {sql}")
        time.sleep(0.05)
    return time.perf_counter() - start


# Only the RING events come by webhook; counted through the small index of pending events by
# source, so that the probe costs the same in the ninth round as in the first (a count of the
# applied ones read 5,000 more index entries every round, twenty times a second).
RING_WAITING = "SELECT count(*) FROM event WHERE status = 'pending' AND source = 'on_webhook'"
TIMED_OUT = "SELECT count(*) FROM instance WHERE state = 'GONE'"
POLL_EVENTS = "SELECT count(*) FROM event WHERE source = 'on_scheduled_poll'"
POLLS_DONE = POLL_EVENTS + " AND status <> 'pending'"
YIELDS = "SELECT coalesce(sum(count), 0) FROM metric_count WHERE name = 'wfapp_poll_yields_total'"


def checkpoint() -> None:
    """A PostgreSQL checkpoint now, so that the next timed round starts where every other one
    does in the checkpoint cycle.

    This benchmark writes about half a gigabyte of WAL a minute, so PostgreSQL checkpoints
    (max_wal_size) every 50–60 s; after each one the first change of every page writes the
    whole page to the WAL, and commits wait longer for it (WALSync: 4 % of the samples of one
    run's first rounds, 11–12 % of its later ones, polls or not). Quiet rounds of one run spread
    by ±20 %; starting each round at the same point of that cycle narrows it.
    """
    from sqlalchemy import text

    from wfapp.extensions import db

    db.session.commit()
    with db.engine.connect() as conn:
        conn.execute(text("CHECKPOINT"))


def time_processing(args: Any, round_no: int, pids: list[int]) -> tuple[float, float, float]:
    """Seconds from queueing E webhook events for the RING instances until all are applied; of
    those, the seconds this script took to store them (one transaction: the workers see none
    of them before it commits); and the CPU seconds the workers used from the commit until all
    were applied (less sensitive than the seconds to what else runs on the machine)."""
    from wfapp.queue import get_queue
    from wfapp.services.events import NewEvent, ingest
    from wfapp.services.integrations import get_integration

    if args.checkpoint:
        checkpoint()
    polls_before = count(POLL_EVENTS)
    batch = [NewEvent("on_webhook", "next", f"R{i % args.ring}", None, {},
                      dedupe_key=f"r{round_no}-{i}") for i in range(args.events)]
    start = time.perf_counter()
    ingest(get_integration("RING"), batch, kick=False)
    stored = time.perf_counter() - start
    cpu = cpu_seconds(pids)
    debug = bool(os.environ.get("BENCH_DEBUG"))
    pg_cpu, machine = (cpu_seconds(_postgres()), _machine_cpu()) if debug else (0.0, 0.0)
    get_queue().kick()
    wait_for_none(RING_WAITING)
    took = time.perf_counter() - start
    if debug:
        print(f"  processing round {round_no}: {took:.2f} s, {count(POLL_EVENTS) - polls_before}"
              f" polls stored meanwhile; CPU-s: workers {cpu_seconds(pids) - cpu:.2f}, "
              f"PostgreSQL {cpu_seconds(_postgres()) - pg_cpu:.2f}, the machine "
              f"{_machine_cpu() - machine:.2f} of {os.cpu_count() * took:.2f}", flush=True)
    return took, stored, cpu_seconds(pids) - cpu


def median_processing(args: Any, first_round: int, pids: list[int], runs: int = 3
                      ) -> tuple[tuple[float, float, float], list[float]]:
    """`time_processing` `runs` times: the run with the median seconds, and all the seconds.

    One burst is applied in about a second, so one run says as much about what else the
    workers were doing in that second (a sweep, a round of poll answers) as about the code; the
    same code gave 0.57 and 0.84 in two single runs. The median of several (`--rounds`, 5)
    says more; quiet runs of one bench run still spread by ±15 %.
    """
    results = [time_processing(args, first_round + n, pids) for n in range(runs)]
    ordered = sorted(results)
    return ordered[len(ordered) // 2], [r[0] for r in results]


def time_sweep(args: Any) -> float:
    """Seconds from T timeouts falling due (all at once) until every one has fired."""
    from sqlalchemy import text

    from wfapp.extensions import db

    if args.checkpoint:
        checkpoint()
    before = count(TIMED_OUT)
    start = time.perf_counter()
    db.session.execute(text("UPDATE instance SET timeout_due_at = now() WHERE state = 'HOLD'"))
    db.session.commit()
    wait_for(TIMED_OUT, before + args.timeouts)
    return time.perf_counter() - start


def median_sweep(args: Any, runs: int = 3) -> tuple[float, list[float]]:
    """`time_sweep` `runs` times (the timed instances put back after each): the median and all.

    The sweep runs once a second, so one run measures mostly where in that second the timeouts
    fell due (0.4 s or 1.3 s for the same code); the median of several says more.
    """
    times = []
    for _ in range(runs):
        times.append(time_sweep(args))
        reset_timed()
    return sorted(times)[len(times) // 2], times


def reset_timed() -> None:
    """Put the timed instances back in HOLD (not due) for the next round."""
    from sqlalchemy import text

    from wfapp.extensions import db

    db.session.execute(text("UPDATE instance SET state = 'HOLD', active = true, "
                            "timeout_due_at = now() + interval '1 hour' WHERE state = 'GONE'"))
    db.session.commit()


def measure_claims(args: Any) -> tuple[float, float, float]:
    """Median ms of a sync and of a claim with nothing due, with N timers waiting."""
    from wfapp.services import schedules

    def median(fn: Any) -> float:
        samples = []
        for _ in range(9):
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1000)
        return sorted(samples)[4]

    sync = median(lambda: schedules.sync("on_scheduled_poll"))
    idle = median(lambda: schedules.claim_due("on_scheduled_poll", 128))
    timers = count("SELECT count(*) FROM instance_timer")
    return sync, idle, timers


def _postgres() -> list[int]:
    """The PostgreSQL server processes (for BENCH_DEBUG's CPU figures)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() in ("postgres", "postmaster"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _machine_cpu() -> float:
    """CPU seconds every process of the machine has used so far, all cores (Linux /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    busy = sum(int(v) for v in fields) - int(fields[3]) - int(fields[4])  # less idle, iowait
    return busy / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes have used so far (Linux /proc)."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_service_options(parser)
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--poll-concurrency", type=int, default=64)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--ring", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5,
                        help="processing rounds before, during and after the cycle (the median "
                             "of each is printed)")
    parser.add_argument("--timeouts", type=int, default=2000)
    parser.add_argument("--no-checkpoint", dest="checkpoint", action="store_false",
                        help="do not start each timed round with a PostgreSQL CHECKPOINT")
    parser.add_argument("--yield-backlog", type=int, default=100,
                        help="POLL_YIELD_BACKLOG of the workers (0: polls never yield)")
    parser.add_argument("--yield-concurrency", type=int, default=0,
                        help="POLL_YIELD_CONCURRENCY of the workers")
    parser.add_argument("--worker-logs", metavar="DIR",
                        help="keep the workers' output in DIR/worker-N.log (their yield and "
                             "resume lines among it)")
    args = parser.parse_args()

    name = args.database.rsplit("/", 1)[1]
    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", name],
                   stderr=subprocess.DEVNULL, check=False)
    ports: Any = multiprocessing.Queue()
    endpoint = multiprocessing.Process(target=serve, args=(ports, args.latency), daemon=True)
    endpoint.start()
    url = ports.get(timeout=30)
    app = make_app(args.database, args.redis)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WFAPP_")}
    env.update({"WFAPP_SECRET_KEY": "bench", "WFAPP_SQLALCHEMY_DATABASE_URI": args.database,
                "WFAPP_REDIS_URL": args.redis, "PYTHONPATH": str(ROOT),
                "WFAPP_POLL_CONCURRENCY": str(args.poll_concurrency),
                "WFAPP_POLL_YIELD_BACKLOG": str(args.yield_backlog),
                "WFAPP_POLL_YIELD_CONCURRENCY": str(args.yield_concurrency),
                "WFAPP_SWEEP_INTERVAL": "1"})
    print(f"wfapp poll benchmark — {os.cpu_count()} cores, {args.instances:,} waiting instances, "
          f"endpoint latency {args.latency * 1000:.0f} ms, K={args.workers} workers × "
          f"{args.poll_concurrency} poll threads (Poll Concurrency {args.poll_concurrency}, one "
          "integration); polls yield "
          + (f"to {args.yield_backlog}+ other events waiting "
             f"({args.yield_concurrency or 'none'} at once per worker meanwhile)"
             if args.yield_backlog else "never"))
    with app.app_context():
        from sqlalchemy import text

        from wfapp.extensions import db
        from wfapp.queue import get_queue

        reset_database(app)
        get_queue().connection.flushdb()
        seed(args, url)
        procs = start_workers(args.workers, env, log_dir=args.worker_logs)
        try:
            quiet_sweep, quiet_sweeps = median_sweep(args, args.rounds)
            pids = [p.pid for p in procs]
            (quiet_processing, quiet_stored, quiet_cpu), quiet_runs = median_processing(
                args, 1, pids, args.rounds)
            # The polls: enable the transition; every instance entered WAIT an hour ago, so the
            # next scheduling round (≤ 2 s) makes all N timers, all due at once.
            # Saved through the service (a new version), and the instances moved onto it as a
            # migration would: an instance polls by the version it follows.
            from wfapp.services.workflows import save_transition

            workflow = save_transition("POLLED", "CHECK", {"enabled": True})
            db.session.execute(text("UPDATE instance SET workflow_version = :v "
                                    "WHERE workflow_id = :w"),
                               {"v": workflow.latest_version, "w": workflow.id})
            db.session.commit()
            yields_before = count(YIELDS)
            start = time.perf_counter()
            cpu_before = cpu_seconds(pids), cpu_seconds([endpoint.pid])
            wait_for(POLL_EVENTS, 1)
            busy_sweep, busy_sweeps = median_sweep(args, args.rounds)
            sweep_polls = count(POLL_EVENTS)
            (busy_processing, busy_stored, busy_cpu), busy_runs = median_processing(
                args, 1 + args.rounds, pids, args.rounds)
            processing_polls = count(POLL_EVENTS)
            wait_for(POLL_EVENTS, args.instances)
            stored = time.perf_counter() - start
            wait_for(POLLS_DONE, args.instances)
            applied = time.perf_counter() - start
            cpu_workers = cpu_seconds(pids) - cpu_before[0]
            cpu_endpoint = cpu_seconds([endpoint.pid]) - cpu_before[1]
            # Quiet again, on the database as the cycle left it (10,000 more events, the timers
            # rewritten): what of the slowdown during the cycle is the database's state, not
            # the polls running.
            (after_processing, _, _), after_runs = median_processing(
                args, 1 + 2 * args.rounds, pids, args.rounds)
            failed = count("SELECT count(*) FROM event WHERE source = 'on_scheduled_poll' "
                           "AND status = 'failed'")
            polled = count("SELECT count(DISTINCT instance_id) FROM event "
                           "WHERE source = 'on_scheduled_poll'")
            yields = count(YIELDS) - yields_before
            sync_ms, idle_ms, timers = measure_claims(args)
        finally:
            stop_workers(procs)
            endpoint.kill()
    print(f"full poll cycle: {args.instances:,} polls stored in {stored:.1f} s "
          f"({args.instances / stored:,.0f}/s; goal ≤ 30 s), all evaluated after "
          f"{applied:.1f} s; {failed} failed; {polled:,} instances polled, each once")
    print(f"timeout sweep, {args.timeouts:,} timeouts due at once, all fired after (median of "
          f"{args.rounds}): {quiet_sweep:.2f} s without polls, {busy_sweep:.2f} s during the "
          "poll cycle "
          f"(sweep every 1 s; runs {', '.join(f'{t:.2f}' for t in quiet_sweeps)} and "
          f"{', '.join(f'{t:.2f}' for t in busy_sweeps)}; {sweep_polls:,} polls stored by the "
          "end); during / without "
          f"{quiet_sweep / busy_sweep:.2f}")
    print(f"event processing, {args.events:,} webhook events, all applied after (median of "
          f"{args.rounds}; "
          f"runs {', '.join(f'{t:.2f}' for t in quiet_runs)} and "
          f"{', '.join(f'{t:.2f}' for t in busy_runs)}): "
          f"{quiet_processing:.2f} s without polls ({args.events / quiet_processing:,.0f}/s), "
          f"{busy_processing:.2f} s during the poll cycle "
          f"({args.events / busy_processing:,.0f}/s; {processing_polls:,} polls stored by its "
          "end)")
    print(f"  of which storing them (this script, one transaction): {quiet_stored:.2f} s without "
          f"polls, {busy_stored:.2f} s during; applying after the commit: "
          f"{quiet_processing - quiet_stored:.2f} s and {busy_processing - busy_stored:.2f} s, "
          f"the workers using {quiet_cpu:.1f} and {busy_cpu:.1f} CPU-seconds meanwhile")
    print(f"event processing during / without the poll cycle: "
          f"{quiet_processing / busy_processing:.2f} (goal ≥ 0.8; applying alone: "
          f"{(quiet_processing - quiet_stored) / (busy_processing - busy_stored):.2f}); the "
          f"executors began yielding {yields} times during the cycle")
    print(f"  after the cycle, quiet again (median of {args.rounds}; runs "
          f"{', '.join(f'{t:.2f}' for t in after_runs)}): {after_processing:.2f} s; "
          f"after / before the cycle {quiet_processing / after_processing:.2f}; during / "
          f"after {after_processing / busy_processing:.2f}")
    print(f"CPU during the cycle (with the probes above): workers {cpu_workers:.1f} s, the "
          f"endpoint {cpu_endpoint:.1f} s, of {applied * (os.cpu_count() or 1):.0f} core-s "
          "(the rest: PostgreSQL, Redis, this script, and whatever else runs here)")
    print(f"timers: sync with {timers:,} waiting {sync_ms:.1f} ms, claim with none due "
          f"{idle_ms:.1f} ms (median of 9)")


if __name__ == "__main__":
    main()
