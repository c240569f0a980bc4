"""Fixtures for the worker tests: a temporary work directory and a clean program environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    directory = tmp_path / "work"
    directory.mkdir()
    return directory


@pytest.fixture
def program_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SPOTRUN_")}
