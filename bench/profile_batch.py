"""Profile event processing: cProfile one in-process `process_pending` on PostgreSQL.

    python bench/profile_batch.py [--database URL] [--events 3000] [--instances 300]

Stores the events (as `bench/engine.py` does, on its own database, which it resets), then
profiles working through them in this process and prints the top functions by cumulative and
by own time. Where the time of a batch goes: statements, commits, Python.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import engine as bench  # noqa: E402  (bench/engine.py, next to this file)


def main() -> None:
    """Seed, store, profile, print."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_service_options(parser)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--output", help="also write the raw profile here (pstats format)")
    args = parser.parse_args()
    app = bench.make_app(args.database, args.redis)
    with app.app_context():
        from wfapp.services.processing import process_pending

        bench.reset_database(app)
        bench.seed_instances(app, args.instances)
        bench.store_events(app, args.events, args.instances, seed=1)
        profile = cProfile.Profile()
        start = time.perf_counter()
        profile.enable()
        done = process_pending(time_budget=600)
        profile.disable()
        elapsed = time.perf_counter() - start
        print(f"processed {done} events in {elapsed:.2f} s = {done / elapsed:,.0f}/s "
              "(under the profiler)")
        if args.output:
            profile.dump_stats(args.output)
        stats = pstats.Stats(profile)
        stats.sort_stats("cumulative").print_stats(40)
        stats.sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
