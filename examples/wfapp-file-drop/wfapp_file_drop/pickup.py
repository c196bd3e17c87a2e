"""The scheduled pick-up: *.json files of a folder become events, then move out of the way.

Every file is hostile until proven otherwise: it may be huge, not JSON, a symbolic link, a
FIFO, a folder, still being written, or have a name that is not UTF-8. None of that may crash
the job or reach the database; each such file is moved to `rejected/` with a `.reason.txt`.
Accepted files are stored as events in one transaction and only then moved to `processed/`, so
a crash in between re-reads them next time, and the dedupe key (name + content hash) makes the
second store a no-op.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import stat
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import current_app

from wfapp.plugin_api import (
    MAX_RECORD_KEY,
    MISSING,
    DeliveryOutcome,
    InputError,
    IntegrationInfo,
    NewEvent,
    config,
    count_delivery,
    integrations,
    parse_json,
    record_delivery,
    resolve_path,
    state_get,
    state_update,
    store_events,
    utcnow,
)

SOURCE = "on_file_drop"
CHANNEL = "file_drop"
STATE = "file_drop"
FOLDER = "file_drop_folder"
RECORD_KEY_PATH = "file_drop_record_key_path"
EVENT_TYPE_PATH = "file_drop_event_type_path"
MAX_BYTES = "file_drop_max_bytes"
PROCESSED = "processed"
REJECTED = "rejected"
# At most this many files per integration and pick-up; the rest wait for the next one.
BATCH = 200
log = logging.getLogger(__name__)


def root() -> Path:
    """FILE_DROP_ROOT: every watched folder lies inside it (default: <instance>/file-drop)."""
    configured = config("FILE_DROP_ROOT") or os.path.join(current_app.instance_path,
                                                          "file-drop")
    return Path(str(configured)).resolve()


def shown(name: str) -> str:
    """A file name safe to show and store: bytes that are not UTF-8 appear as \\xNN."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def folder_problem_on_save(value: str) -> str:
    """Why a File Drop Folder setting cannot be saved ("" when it can); it need not exist yet."""
    if not value:
        return ""
    base = root()
    try:
        target = (base / value).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # NUL bytes, link loops
        return f"is not a usable path: {exc}"
    if target != base and not target.is_relative_to(base):
        return f"must be a folder inside FILE_DROP_ROOT ({base})"
    return ""


def resolve_folder(value: str) -> tuple[Path | None, str]:
    """The watched folder of a setting, or None and why it cannot be watched."""
    if not value:
        return None, "no folder set"
    problem = folder_problem_on_save(value)
    if problem:
        return None, f"the folder {problem}"
    folder = (root() / value).resolve()
    if not folder.is_dir():
        return None, f"the folder {folder} does not exist"
    return folder, ""


def _subfolder(folder: Path, name: str) -> Path:
    """processed/ or rejected/ inside the folder, created when missing; never a link."""
    path = folder / name
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o750)
    mode = os.lstat(path).st_mode
    if not stat.S_ISDIR(mode):
        raise OSError(f"{path} is not a folder (a link or a file is in its place)")
    return path


def waiting_files(folder: Path, limit: int = 10_000) -> int:
    """How many *.json entries wait in the folder (counting stops at `limit`)."""
    count = 0
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.lower().endswith(".json") and not entry.name.startswith("."):
                count += 1
                if count >= limit:
                    break
    return count


@dataclass
class Candidate:
    """A directory entry that looks like a file to pick up."""

    name: str
    mtime: float
    problem: str = ""


@dataclass
class Scan:
    """What one pick-up of one integration did."""

    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    errors: list[str] = field(default_factory=list)


def _candidates(folder: Path, settle: float) -> list[Candidate]:
    """The *.json entries ready to handle, oldest first, at most BATCH of them.

    Hidden names are skipped (writers write `.name.tmp` and rename), and so are files changed
    in the last `settle` seconds, which may still be being written.
    """
    now = time.time()
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            name = entry.name
            if name.startswith(".") or not name.lower().endswith(".json"):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # gone meanwhile
            mode = info.st_mode
            if stat.S_ISLNK(mode):
                found.append(Candidate(name, info.st_mtime, "is a symbolic link; links are "
                                       "not followed"))
            elif stat.S_ISDIR(mode):
                found.append(Candidate(name, info.st_mtime, "is a folder, not a file"))
            elif not stat.S_ISREG(mode):
                found.append(Candidate(name, info.st_mtime, "is not a regular file"))
            elif not 0 <= now - info.st_mtime < settle:  # settled, or dated in the future
                found.append(Candidate(name, info.st_mtime))
    found.sort(key=lambda c: (c.mtime, c.name))
    return found[:BATCH]


def _read(folder: Path, name: str, limit: int) -> tuple[bytes | None, os.stat_result | None,
                                                         str]:
    """The file's bytes, or why it cannot be read. Opens without following links or blocking."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(folder / name, flags)
    except OSError as exc:
        return None, None, f"cannot be opened: {exc.strerror}"
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None, info, "is not a regular file"
        if info.st_size > limit:
            return None, info, (f"is {info.st_size} bytes; File Drop Max Bytes is {limit}")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            return None, info, f"grew past File Drop Max Bytes ({limit}) while being read"
        return b"".join(chunks), info, ""
    except OSError as exc:
        return None, None, f"cannot be read: {exc.strerror}"
    finally:
        os.close(fd)


def _event(info: IntegrationInfo, name: str, content: bytes, file_info: os.stat_result
           ) -> tuple[NewEvent | None, str]:
    """The event for one file's content, or why the file is refused."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return None, "the file name is not valid UTF-8"
    try:
        data = parse_json(content)
    except InputError as exc:
        where = "" if exc.path == "body" else f" at {exc.path}"
        return None, f"the content{where} {exc.message}"
    if not isinstance(data, dict):
        return None, f"the content must be a JSON object, not {type(data).__name__}"
    key_path = info.setting(RECORD_KEY_PATH) or ""
    if key_path:
        key = resolve_path(data, key_path)
        if key is MISSING:
            return None, f"the content has no record key at {key_path}"
        if isinstance(key, bool) or not isinstance(key, str | int) or key == "":
            return None, f"the record key at {key_path} must be a string or a whole number"
        key = str(key)
    else:
        key = name[:-len(".json")]
        if not key:
            return None, "the file name is only .json; it gives no record key"
    if len(key) > MAX_RECORD_KEY:
        return None, f"the record key is longer than {MAX_RECORD_KEY} characters"
    type_path = info.setting(EVENT_TYPE_PATH) or ""
    event_type = resolve_path(data, type_path) if type_path else MISSING
    digest = hashlib.sha256(content).hexdigest()
    dedupe = hashlib.sha256(name.encode() + b"\0" + digest.encode()).hexdigest()
    modified = datetime.fromtimestamp(file_info.st_mtime, UTC).isoformat()
    return NewEvent(
        source=SOURCE,
        type=event_type[:100] if isinstance(event_type, str) else "",
        record_key=key,
        payload={"file": {"name": name, "size": len(content), "sha256": digest,
                          "modified_at": modified}, "data": data},
        dedupe_key=f"file_drop:{dedupe}",
    ), ""


def _move(folder: Path, name: str, target_dir: Path) -> str:
    """Move an entry (a link itself, never its target) into target_dir; return its new name."""
    target = name
    if os.path.lexists(target_dir / target):  # handled before under this name: keep both
        stem = name[:-5] if name.lower().endswith(".json") else name
        target = f"{stem}.{int(time.time())}-{uuid.uuid4().hex[:8]}.json"
    os.rename(folder / name, target_dir / target)
    return target


def _write_reason(rejected: Path, name: str, reason: str) -> None:
    """rejected/<name>.reason.txt; never follows or overwrites what is already there."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(rejected / f"{name}.reason.txt", flags, 0o640)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(f"{shown(name)}: {reason}\nrejected at {utcnow().isoformat()}\n")


def _reject(info: IntegrationInfo, folder: Path, rejected: Path, name: str, reason: str,
            scan: Scan) -> None:
    try:
        moved = _move(folder, name, rejected)
        _write_reason(rejected, moved, reason)
    except FileNotFoundError:
        return  # another pick-up handled it meanwhile
    except OSError as exc:
        scan.errors.append(f"{shown(name)} could not be moved to {REJECTED}/: {exc.strerror}")
        return
    scan.rejected += 1
    record_delivery(info, CHANNEL, DeliveryOutcome.REFUSED, f"{shown(name)} {reason}",
                    key=shown(name)[:200])


def pick_up(info: IntegrationInfo) -> Scan:
    """Store one event per waiting file of the integration's folder and move the files."""
    scan = Scan()
    folder, problem = resolve_folder(info.setting(FOLDER) or "")
    if folder is None:
        scan.errors.append(problem)
        return scan
    processed, rejected = _subfolder(folder, PROCESSED), _subfolder(folder, REJECTED)
    limit = int(info.setting(MAX_BYTES) or 1_048_576)
    settle = float(config("FILE_DROP_SETTLE_SECONDS", 2.0))
    accepted: list[tuple[str, NewEvent]] = []
    for candidate in _candidates(folder, settle):
        reason = candidate.problem
        if not reason:
            content, file_info, reason = _read(folder, candidate.name, limit)
            if content is not None and file_info is not None:
                event, reason = _event(info, candidate.name, content, file_info)
                if event is not None:
                    accepted.append((candidate.name, event))
                    continue
        _reject(info, folder, rejected, candidate.name, reason, scan)
    if accepted:
        # One transaction for the lot; the files move only once their events are committed.
        result = store_events(info, [event for _, event in accepted])
        scan.stored, scan.duplicates = result.stored, result.duplicates
        if result.duplicates:
            count_delivery(info, CHANNEL, DeliveryOutcome.DUPLICATE,
                           "a file with the same name and content was picked up before",
                           by=result.duplicates)
        for name, _ in accepted:
            try:
                _move(folder, name, processed)
            except FileNotFoundError:
                continue
            except OSError as exc:  # stays; the next pick-up finds it a duplicate and retries
                scan.errors.append(f"{shown(name)} could not be moved to {PROCESSED}/: "
                                   f"{exc.strerror}")
    return scan


def _remember(info: IntegrationInfo, scan: Scan, previous_error: str) -> None:
    """Keep what the panel shows; write only when something happened or the error changed."""
    error = "; ".join(scan.errors)[:500]
    changes: dict[str, Any] = {}
    now = utcnow().isoformat()
    if scan.stored or scan.duplicates:
        changes.update(last_pickup_at=now, last_pickup_files=scan.stored + scan.duplicates,
                       last_pickup_new=scan.stored)
    if scan.rejected:
        changes.update(last_rejected_at=now, last_rejected_files=scan.rejected)
    if error != previous_error:
        changes.update(last_error=error, last_error_at=now if error else None)
    if changes:
        state_update(info, STATE, "status", changes)


def run() -> dict[str, int]:
    """The scheduled job: pick up the waiting files of every enabled integration with a folder."""
    totals = {"stored": 0, "duplicates": 0, "rejected": 0, "failed": 0}
    for info in integrations():
        if not info.enabled or not info.setting(FOLDER):
            continue
        previous = (state_get(info, STATE, "status") or {}).get("last_error") or ""
        try:
            scan = pick_up(info)
        except Exception as exc:  # one broken folder or a database hiccup: the others go on
            log.exception("file drop pick-up of %s failed", info.code)
            scan = Scan(errors=[f"pick-up failed: {type(exc).__name__}: {exc}"])
            totals["failed"] += 1
        try:
            _remember(info, scan, previous)
        except Exception:  # the status is for people; the files are already handled
            log.exception("file drop status of %s not saved", info.code)
        totals["stored"] += scan.stored
        totals["duplicates"] += scan.duplicates
        totals["rejected"] += scan.rejected
    return totals
