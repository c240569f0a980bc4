"""`python -m spotrun_local`'s arguments: --help answers at once, wrong combinations are refused by name."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spotrun_local.__main__ import build_parser, main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _environment_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """main() quiets Powertools in its own process's environment; here that must end with the test."""
    for name, value in {"POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_METRICS_DISABLED": "true"}.items():
        monkeypatch.setenv(name, os.environ.get(name, value))


def test_help_prints_usage_and_exits_0_at_once() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(REPO / p) for p in ("lambdas", "worker", "local", "cli"))}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "spotrun_local", "--help"], capture_output=True, text=True,
                          timeout=30, env=env, cwd=REPO)
    assert done.returncode == 0 and time.monotonic() - started < 10
    assert done.stdout.startswith("usage: python -m spotrun_local")
    for option in ("--serve", "--stop", "--background", "--state", "--limit", "--tasks", "--start-tick", "--port"):
        assert option in done.stdout


@pytest.mark.parametrize(("argv", "message"), [
    (["--serve", "--limit", "5"], "--limit is an option of the demo"),
    (["--stop", "--ephemeral"], "--ephemeral is an option of the demo"),
    (["--background"], "--background applies to --serve only"),
    (["--serve", "--stop"], "not allowed with argument"),
    (["--tasks", "0"], "must be more than 0"),
    (["--port", "70000"], "a port is between 0 and 65535"),
    (["--limit", "many"], "not a whole number: 'many'"),
])
def test_wrong_arguments_are_refused_with_the_reason(argv: list[str], message: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_the_demo_options_reach_the_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}
    import spotrun_local.demo

    monkeypatch.setattr(spotrun_local.demo, "run", lambda **kwargs: seen.update(kwargs) or 0)
    assert main(["--limit", "1000", "--tasks", "2", "--start-tick", "7", "--port", "8123", "--ephemeral"]) == 0
    assert seen == {"limit": 1000, "tasks": 2, "deadline_seconds": 280.0, "start_tick": 7, "tick_seconds": 2.0,
                    "port": 8123, "persist": False}


def test_stop_without_a_server_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--stop", "--state", str(tmp_path)]) == 0
    assert "not serving" in capsys.readouterr().out
    assert build_parser().parse_args([]).state == Path(".spotrun")


def test_importing_the_entry_point_leaves_the_environment_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """It silences Powertools for the runtime's own process only when it runs (other tests read metrics)."""
    import importlib

    import spotrun_local.__main__ as entry

    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED")
    importlib.reload(entry)
    assert "POWERTOOLS_METRICS_DISABLED" not in os.environ
