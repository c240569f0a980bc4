"""Helpers for the worker tests: real programs in tests/worker/programs, waited on with real clocks."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROGRAMS = Path(__file__).parent / "programs"


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def read_int(path: Path) -> int:
    try:
        return int(path.read_text() or 0)
    except (OSError, ValueError):
        return 0


def process_alive(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def counter_argv(steps: int = 40, sleep: float = 0.02, *extra: str) -> list[str]:
    return [sys.executable, str(PROGRAMS / "counter.py"), "--steps", str(steps), "--sleep", str(sleep), *extra]


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())
