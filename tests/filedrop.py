"""Helpers for the On File Drop example plugin's tests: its source, a workflow, dropping files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "wfapp-file-drop"


def workflow(code: str = "DROPS", pattern: str = "order-*.json") -> dict[str, Any]:
    """NEW -> RECEIVED when a file matching `pattern` is dropped, then RECEIVED -> DONE by hand."""
    return {"format": "wfapp.workflow/v1", "workflow": {
        "code": code, "description": "Files dropped into a folder", "initial_state": "NEW",
        "states": [{"code": "NEW", "is_initial": True}, {"code": "RECEIVED"},
                   {"code": "DONE", "is_final": True}],
        "transitions": [
            {"code": "RECEIVE", "from_state": "NEW", "to_state": "RECEIVED",
             "trigger_type": "on_file_drop", "trigger_config": {"pattern": pattern},
             "conditions": [{"field": "event.data.total", "operator": "gt", "value": 0}]},
            {"code": "FINISH", "from_state": "RECEIVED", "to_state": "DONE",
             "trigger_type": "manual"}]}}


def drop(folder: Path, name: str | bytes, content: Any, age: float = 30.0) -> Path:
    """Write a file into the folder (JSON unless bytes or str), dated `age` seconds ago."""
    if isinstance(content, bytes):
        raw = content
    elif isinstance(content, str):
        raw = content.encode()
    else:
        raw = json.dumps(content).encode()
    folder.mkdir(parents=True, exist_ok=True)
    path = os.path.join(os.fsencode(folder), os.fsencode(name))
    with open(path, "wb") as out:
        out.write(raw)
    when = time.time() - age
    os.utime(path, (when, when))
    return Path(os.fsdecode(path))


def listing(folder: Path) -> set[str]:
    """Names in a folder (not recursive); empty when it does not exist."""
    return set(os.listdir(folder)) if folder.is_dir() else set()


_INSTALLED: dict[str, Path] = {}


def install_example(base: Path) -> Path:
    """`pip install --no-deps --target` the example distribution once per session; its folder.

    It is installed from a copy, so the build leaves nothing in the repository.
    """
    if "site" not in _INSTALLED:
        source = base / "src"
        shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns(
            "build", "*.egg-info", "__pycache__"))
        site = base / "site"
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target",
             str(site), str(source)], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        _INSTALLED["site"] = site
    return _INSTALLED["site"]
