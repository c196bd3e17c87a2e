"""A process-wide "stop soon" flag: a worker told to stop (SIGTERM) ends its loops between batches.

Set by the worker command's signal handling; read by the batch loops (inbox processing, the
timeout sweep) so a job finishes the batch it is in, releases its partition lease and returns
instead of working on until its time budget is spent.
"""

from __future__ import annotations

import threading

_stopping = threading.Event()


def request_stop() -> None:
    """Ask the loops of this process to end after their current batch."""
    _stopping.set()


def stopping() -> bool:
    """True once this process was asked to stop."""
    return _stopping.is_set()


def reset() -> None:
    """Clear the flag (tests that run jobs in-process after a stop)."""
    _stopping.clear()
