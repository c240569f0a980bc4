"""Helpers for the worker tests: real programs in tests/worker/programs (waited on with tests.support.wait_for)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

PROGRAMS = Path(__file__).parent / "programs"


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
