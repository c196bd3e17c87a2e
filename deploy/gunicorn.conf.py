"""gunicorn settings for wfapp (`gunicorn -c deploy/gunicorn.conf.py wsgi:app`)."""

import multiprocessing
import os

bind = os.environ.get("WFAPP_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WFAPP_WEB_WORKERS", min(8, 2 * multiprocessing.cpu_count() + 1)))
timeout = 60
# Let in-flight requests finish on SIGTERM (a deploy or `systemctl stop`).
graceful_timeout = 30
accesslog = "-"


def child_exit(server, worker):  # noqa: ANN001, ANN201 — gunicorn's hook signature
    """Drop a dead worker's live gauges from the multiprocess metrics (its counters stay)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
