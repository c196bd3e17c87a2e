"""The plugin boundary and the On File Drop example on PostgreSQL; prints its figures.

    python bench/file_drop.py [--db URL] [--events 5000] [--files 2000]

(a) events stored straight through the service (`wfapp.services.events.store`), batches of 200;
(b) the same through `wfapp.plugin_api.store_events`, which checks every event first: the
    difference is what the plugin boundary costs per event;
(c) the example plugin picking up F small JSON files (read, parse, store, move to processed/);
(d) the worker applying the transitions those files fire.
It drops and recreates the schema of the database it is given (default: wfapp_plugins).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples" / "wfapp-file-drop"))

BATCH = 200


def _events(n: int, prefix: str) -> list:
    from wfapp.plugin_api import NewEvent

    return [NewEvent(source="on_file_drop", type="bench", record_key=f"{prefix}-{i}",
                     payload={"file": {"name": f"{i}.json"}, "data": {"id": i, "total": 1,
                                                                    "lines": [1, 2, 3]}},
                     dedupe_key=f"{prefix}:{i}") for i in range(n)]


def store_rates(n: int) -> tuple[float, float]:
    """Events per second through the service and through the plugin API."""
    from wfapp.plugin_api import find_integration, store_events
    from wfapp.services.events import NewEvent as CoreEvent
    from wfapp.services.events import store

    info = find_integration("BENCH")
    core = [CoreEvent(e.source, e.type, e.record_key, e.run_id, e.payload, None, e.dedupe_key)
            for e in _events(n, "core")]
    started = time.perf_counter()
    for i in range(0, n, BATCH):
        store(info.id, core[i:i + BATCH], kick=False)
    service = n / (time.perf_counter() - started)
    wrapped = _events(n, "api")
    started = time.perf_counter()
    for i in range(0, n, BATCH):
        store_events(info, wrapped[i:i + BATCH])
    api = n / (time.perf_counter() - started)
    return service, api


def pickup_rates(app, files: int, root: Path) -> tuple[float, float, int]:
    """Files picked up per second, transitions applied per second, instances moved."""
    from sqlalchemy import func, select
    from wfapp_file_drop.pickup import run

    from wfapp.extensions import db
    from wfapp.models import Instance
    from wfapp.queue import get_queue

    folder = root / "in"
    folder.mkdir(parents=True)
    old = time.time() - 60
    for i in range(files):
        path = folder / f"order-{i:06d}.json"
        path.write_text(json.dumps({"id": f"F-{i}", "total": 1, "customer": "ACME",
                                    "lines": [{"sku": "A", "qty": 2}]}))
        os.utime(path, (old, old))
    queue = get_queue()
    queue.jobs.clear()
    started = time.perf_counter()
    while any(name.endswith(".json") for name in os.listdir(folder)):
        run()
    picked = files / (time.perf_counter() - started)
    queue.jobs.clear()
    queue.take_kick()
    started = time.perf_counter()
    queue.kick()
    queue.drain(limit=100_000)
    applied_seconds = time.perf_counter() - started
    moved = db.session.scalar(select(func.count()).select_from(Instance)
                              .where(Instance.state == "RECEIVED"))
    return picked, moved / applied_seconds, moved


def main() -> None:
    """Run the measurements and print them side by side."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", default="postgresql+psycopg://postgres@127.0.0.1/wfapp_plugins")
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--files", type=int, default=2000)
    args = parser.parse_args()

    from flask_migrate import upgrade
    from sqlalchemy import text

    from tests.filedrop import workflow
    from wfapp import create_app
    from wfapp.extensions import db
    from wfapp.services.definitions import import_document
    from wfapp.services.integrations import create_integration

    root = Path(tempfile.mkdtemp(prefix="wfapp-file-drop-bench-"))
    app = create_app({"TESTING": True, "SECRET_KEY": "bench", "SQLALCHEMY_DATABASE_URI": args.db,
                      "INSTANCE_PATH": str(root / "instance"), "PLUGINS": ["wfapp_file_drop"],
                      "LOAD_ENTRY_POINTS": False, "FILE_DROP_ROOT": str(root),
                      "FILE_DROP_SETTLE_SECONDS": 0, "EVENT_BATCH_SIZE": 200})
    with app.app_context():
        with db.engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        upgrade()
        import_document(workflow("DROPS"))
        create_integration({"code": "BENCH"})
        create_integration({"code": "FILES", "workflow_code": "DROPS", "file_drop_folder": "in",
                            "file_drop_record_key_path": "id"})
        service, api = store_rates(args.events)
        picked, applied, moved = pickup_rates(app, args.files, root)
    print(f"plugin boundary and On File Drop — {os.cpu_count()} cores, PostgreSQL, "
          f"{args.events} events, {args.files} files")
    print(f"(a) services.events.store:        {service:8,.0f} events/s  (batches of {BATCH})")
    print(f"(b) plugin_api.store_events:      {api:8,.0f} events/s  "
          f"(checks cost {1e6 * (1 / api - 1 / service):,.0f} µs/event)")
    print(f"(c) file drop pick-up:            {picked:8,.0f} files/s   (read, parse, store, move)")
    print(f"(d) transitions applied:          {applied:8,.0f} /s        ({moved} instances moved)")


if __name__ == "__main__":
    main()
