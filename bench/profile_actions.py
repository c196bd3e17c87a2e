"""Profile transitions with actions and their deliveries: statements and CPU per item.

    python bench/profile_actions.py [--database URL] [--redis URL] [--events 3000]
                                    [--instances 300] [--threads 16] [--output PREFIX]

On its own database (reset), with bench/engine.py's ring workflow carrying a `set_variable`
and an `http_request` (to a receiver answering in 10 ms, in its own process so its CPU is not
counted) on every `next` transition, in this one process:

1. the events applied by `process_pending` with the actions, after the same number applied
   without them: statements and CPU per transition, each statement kind counted;
2. the deliveries made by this process's executor (the pump and the request threads, as in a
   worker): statements per pump round and per delivery, CPU per delivery (the whole process,
   and the request threads alone);
3. the outcome events those deliveries stored, applied by `process_pending`.

With --output, cProfile stats of the pump thread go to PREFIX.pump.prof and of (1) and (3) to
PREFIX.apply.prof and PREFIX.outcomes.prof (the CPU figures are then taken under the profiler).
"""

from __future__ import annotations

import argparse
import cProfile
import multiprocessing
import re
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import engine as bench  # noqa: E402  (bench/engine.py, next to this file)

WORDS = re.compile(r"^\s*(?:WITH\s.*?\)\s*)?(SELECT|INSERT|UPDATE|DELETE|COMMIT|BEGIN)\b"
                   r".*?\b(?:FROM|INTO|UPDATE)\s+(\w+)", re.S | re.I)


class Statements:
    """Counts the statements the engine sends, by kind (verb and table) and executemany rows."""

    def __init__(self) -> None:
        self.kinds: Counter[str] = Counter()
        self.lock = threading.Lock()

    def __call__(self, conn, cursor, statement, parameters, context, executemany) -> None:
        found = WORDS.match(statement)
        kind = f"{found.group(1).upper()} {found.group(2)}" if found else statement.split()[0]
        if executemany:
            kind += " (executemany)"
        with self.lock:
            self.kinds[kind] += 1

    def commits(self, conn) -> None:
        with self.lock:
            self.kinds["COMMIT"] += 1

    def take(self) -> Counter[str]:
        with self.lock:
            out, self.kinds = self.kinds, Counter()
        return out


def _serve(delay: float, port) -> None:
    server = bench._receiver(delay)
    port.value = server.server_address[1]
    while True:
        time.sleep(3600)


def _print(title: str, kinds: Counter[str], per: int, unit: str, cpu: float) -> None:
    total = sum(kinds.values())
    print(f"{title}: {total} statements for {per} {unit} = {total / max(per, 1):.2f} per "
          f"{unit.rstrip('s')}; CPU {cpu * 1000 / max(per, 1):.2f} ms per {unit.rstrip('s')}")
    for kind, n in kinds.most_common():
        print(f"    {n / max(per, 1):7.3f}  {kind}")


def main() -> None:
    """Seed, apply, deliver, apply the outcomes; print per item."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_service_options(parser)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--output", help="write cProfile stats to PREFIX.*.prof")
    args = parser.parse_args()
    port = multiprocessing.Value("i", 0)
    receiver = multiprocessing.Process(target=_serve, args=(0.010, port), daemon=True)
    receiver.start()
    while not port.value:
        time.sleep(0.05)
    app = bench.make_app(args.database, args.redis)
    app.config.update(ACTION_THREADS=args.threads, ACTION_CONCURRENCY_PER_INTEGRATION=args.threads)
    with app.app_context():
        from sqlalchemy import event

        from wfapp.extensions import db
        from wfapp.queue import get_queue
        from wfapp.services import outbox
        from wfapp.services.definitions import import_document
        from wfapp.services.processing import process_pending

        bench.reset_database(app)
        bench.seed_instances(app, args.instances)
        counter = Statements()
        event.listen(db.engine, "before_cursor_execute", counter)
        event.listen(db.engine, "commit", counter.commits)

        def apply(title: str, profile_to: str | None) -> int:
            counter.take()
            profile = cProfile.Profile()
            cpu = time.process_time()
            if profile_to:
                profile.enable()
            done = process_pending(time_budget=600)
            profile.disable()
            cpu = time.process_time() - cpu
            if profile_to:
                profile.dump_stats(profile_to)
            _print(title, counter.take(), done, "events", cpu)
            return done

        bench.store_events(app, args.events, args.instances, seed=2)
        apply("(1a) events applied, no actions", None)
        document = bench.ring_workflow()
        url = f"http://127.0.0.1:{port.value}/orders/{{record_key}}"
        for t in document["workflow"]["transitions"]:
            if t["code"].startswith("N"):
                t["actions"] = [
                    {"type": "set_variable", "config": {"values": {"last": "{record_key}"}}},
                    {"id": "call", "type": "http_request",
                     "config": {"url": url, "body": {"key": "{record_key}"},
                                "max_attempts": 3}}]
        import_document(document, replace=True)
        bench._follow_latest()
        bench.store_events(app, args.events, args.instances, seed=3)
        get_queue().connection.flushdb()
        apply("(1b) events applied, set_variable + http_request",
              f"{args.output}.apply.prof" if args.output else None)

        # (2) the executor, as in a worker; the pump's rounds profiled.
        executor = outbox.executor()
        pump_profile = cProfile.Profile()
        request_cpu = [0.0]
        lock = threading.Lock()
        original_round, original_attempt = outbox.ActionExecutor._round, outbox.attempt

        pump_cpu = [0.0]

        def profiled_round(self, results, free):
            began = time.thread_time()
            if args.output:
                pump_profile.enable()
            try:
                return original_round(self, results, free)
            finally:
                pump_profile.disable()
                pump_cpu[0] += time.thread_time() - began

        def timed_attempt(item):
            began = time.thread_time()
            try:
                return original_attempt(item)
            finally:
                with lock:
                    request_cpu[0] += time.thread_time() - began

        outbox.ActionExecutor._round = profiled_round  # type: ignore[method-assign]
        outbox.attempt = timed_attempt  # type: ignore[assignment]
        total = bench._delivery_count(["pending", "running"])
        counter.take()
        cpu = time.process_time()
        start = time.perf_counter()
        executor.wake()
        while True:
            time.sleep(0.05)
            # The count is asked only once the executor is idle (its statements are counted).
            if executor.settled() and not bench._delivery_count(["pending", "running"]):
                break
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu
        executor.stop()
        kinds = counter.take()
        stats = executor.stats
        print(f"(2) {total} deliveries in {elapsed:.2f} s ({total / elapsed:,.0f}/s), "
              f"{stats['rounds']:.0f} pump rounds ({total / max(stats['rounds'], 1):.1f} "
              f"deliveries per round), pump {stats['round_s'] * 1000 / max(total, 1):.2f} ms "
              f"wall per delivery; CPU per delivery: pump {pump_cpu[0] * 1000 / total:.2f} ms, "
              f"request threads {request_cpu[0] * 1000 / total:.2f} ms")
        # On PostgreSQL the pump's own statements go through the driver (pipeline mode), not
        # SQLAlchemy's cursor events: they are not in this count (four per round, see outbox).
        _print("    statements through SQLAlchemy (the bench's own polling included)", kinds,
               total, "deliveries", cpu)
        print(f"    per pump round: {sum(kinds.values()) / max(stats['rounds'], 1):.1f} "
              "statements")
        if args.output:
            pump_profile.dump_stats(f"{args.output}.pump.prof")
        apply("(3) outcome events applied", f"{args.output}.outcomes.prof" if args.output
              else None)
    receiver.terminate()


if __name__ == "__main__":
    main()
