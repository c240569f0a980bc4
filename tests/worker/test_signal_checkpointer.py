"""The `signal` and `none` checkpointers with real processes and real files."""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import time

import pytest

from spotrun_worker.checkpointers import (
    Checkpointer,
    CheckpointError,
    CheckpointNotReady,
    CheckpointUnsupported,
    NoCheckpointer,
    SignalCheckpointer,
    cooperative,
    make_checkpointer,
)
from spotrun_worker.checkpointers.cooperative import COMPLETE_MARKER, checkpoint_dir_for
from tests.support import wait_for
from tests.worker.support import PROGRAMS, counter_argv, process_alive, read_int, read_json

STEPS = 50


@pytest.mark.slow
def test_checkpoints_survive_a_kill_and_the_restored_run_ends_like_an_uninterrupted_one(workdir, program_env, tmp_path):
    # Given a counting program under the signal checkpointer (and, beside it, an uninterrupted run)
    reference = tmp_path / "reference"
    reference.mkdir()
    uninterrupted = SignalCheckpointer()
    uninterrupted.start(counter_argv(STEPS), program_env, reference, reference / "log")
    first = make_checkpointer("signal", signal_name="SIGUSR1")
    first.start(counter_argv(STEPS), program_env, workdir, workdir / "attempt-1.log")
    progress = workdir / "progress.txt"

    # When it is checkpointed twice while it runs
    wait_for(lambda: read_int(progress) >= 5, what="5 steps")
    snap1 = first.checkpoint(tmp_path / "out" / "1", timeout=10)
    wait_for(lambda: read_int(progress) >= 12, what="12 steps")
    snap2 = first.checkpoint(tmp_path / "out" / "2", timeout=10)

    # Then each snapshot holds the program's files (nested ones too, never the marker), and the
    # first one was not changed by the program's later writes
    names = sorted(p.relative_to(tmp_path / "out" / "1").as_posix() for p in snap1)
    assert names == ["extra/note.txt", "state.json"]
    assert COMPLETE_MARKER not in {p.name for p in snap2}
    state1 = read_json(tmp_path / "out" / "1" / "state.json")
    state2 = read_json(tmp_path / "out" / "2" / "state.json")
    assert 5 <= state1["step"] < state2["step"] < STEPS
    assert first.poll() is None  # the program keeps running after a checkpoint

    # When the instance is reclaimed (the whole group killed at once)
    os.killpg(first.pid, signal.SIGKILL)
    assert first.wait(5) == -signal.SIGKILL
    assert not (workdir / "result.json").exists()

    # Then a fresh checkpointer restores the second snapshot and the run ends as if never interrupted
    second = make_checkpointer("signal")
    second.start(counter_argv(STEPS), program_env, workdir, workdir / "attempt-2.log", restore_from=tmp_path / "out" / "2")
    assert second.wait(30) == 0
    result = read_json(workdir / "result.json")
    assert result["resumed_from"] == state2["step"]
    assert uninterrupted.wait(30) == 0
    expected = read_json(reference / "result.json")
    assert (result["step"], result["acc"]) == (expected["step"], expected["acc"])
    assert expected["resumed_from"] == 0


def test_the_program_learns_its_checkpoint_dir_and_whether_it_was_restored(workdir, program_env, tmp_path):
    probe = [sys.executable, "-c",
             "import json, os; json.dump({k: os.environ.get(k) for k in "
             "('SPOTRUN_CHECKPOINT_DIR', 'SPOTRUN_RESTORED')}, open('env.json', 'w'))"]
    fresh = SignalCheckpointer()
    fresh.start(probe, {**program_env, "SPOTRUN_RESTORED": "1"}, workdir, workdir / "log")
    assert fresh.wait(10) == 0
    seen = read_json(workdir / "env.json")
    assert seen == {"SPOTRUN_CHECKPOINT_DIR": str(checkpoint_dir_for(workdir)), "SPOTRUN_RESTORED": None}

    saved = tmp_path / "saved"
    (saved / "deep").mkdir(parents=True)
    (saved / "deep" / "state.bin").write_bytes(b"\x00\x01")
    restored = SignalCheckpointer()
    restored.start(probe, program_env, workdir, workdir / "log", restore_from=saved)
    assert restored.wait(10) == 0
    assert read_json(workdir / "env.json")["SPOTRUN_RESTORED"] == "1"
    assert (checkpoint_dir_for(workdir) / "deep" / "state.bin").read_bytes() == b"\x00\x01"


def test_a_program_that_ignores_the_signal_makes_the_checkpoint_time_out_and_keeps_running(workdir, program_env, tmp_path):
    runner = SignalCheckpointer()
    runner.start(counter_argv(400, 0.02, "--ignore-signal"), program_env, workdir, workdir / "log")
    wait_for(lambda: read_int(workdir / "progress.txt") >= 1, what="the program to start")
    started = time.monotonic()
    with pytest.raises(CheckpointError, match=r"timed out after 0.3s.*SIGUSR1"):
        runner.checkpoint(tmp_path / "into", timeout=0.3)
    assert time.monotonic() - started < 2
    assert runner.poll() is None
    assert runner.stop(grace_seconds=2) == -signal.SIGTERM


def test_a_program_that_does_not_handle_the_signal_is_not_sent_it(workdir, program_env, tmp_path):
    """SIGUSR1's default action kills: a program without a handler (not yet, or never) is left running."""
    runner = SignalCheckpointer()
    runner.start(["sleep", "30"], program_env, workdir, workdir / "log")
    try:
        with pytest.raises(CheckpointNotReady, match="does not handle SIGUSR1 yet"):
            runner.checkpoint(tmp_path / "into", timeout=5)
        time.sleep(0.2)
        assert runner.poll() is None
    finally:
        runner.stop(1)


HANDLER_LATER = ("import os, signal, time\n"
                 "d = os.environ['SPOTRUN_CHECKPOINT_DIR']\n"
                 "time.sleep(float(os.environ.get('BOOT', '0.8')))  # imports, inputs: the program is starting\n"
                 "def save(*_):\n"
                 "    open(os.path.join(d, 'state.bin'), 'wb').write(b'state')\n"
                 "    open(os.path.join(d, '.complete'), 'w').close()\n"
                 "signal.signal(signal.SIGUSR1, save)\n"
                 "open('ready', 'w').close()\n"
                 "time.sleep(30)\n")


@pytest.mark.parametrize("as_shell", [False, True], ids=["argv", "shell (the signal goes to the group)"])
def test_a_checkpoint_asked_before_the_handler_is_installed_is_not_ready_then_works(workdir, program_env, tmp_path,
                                                                                     as_shell):
    """Found by the soak: the signal arrived while the program was starting and killed it, costing an attempt."""
    argv = [sys.executable, "-c", HANDLER_LATER]
    command = " ".join(shlex.quote(a) for a in argv) if as_shell else argv
    runner = SignalCheckpointer()
    runner.start(command, program_env, workdir, workdir / "log")
    try:
        time.sleep(0.2)
        with pytest.raises(CheckpointNotReady):
            runner.checkpoint(tmp_path / "early", timeout=5)
        assert runner.poll() is None and not any((tmp_path / "early").iterdir())
        wait_for(lambda: (workdir / "ready").exists(), what="the handler")
        assert [p.name for p in runner.checkpoint(tmp_path / "into", timeout=5)] == ["state.bin"]
    finally:
        runner.stop(1)


def test_a_completed_checkpoint_without_files_is_refused(workdir, program_env, tmp_path):
    script = ("import os, signal, time\n"
              "d = os.environ['SPOTRUN_CHECKPOINT_DIR']\n"
              "signal.signal(signal.SIGUSR1, lambda *a: open(os.path.join(d, '.complete'), 'w').close())\n"
              "time.sleep(30)\n")
    runner = SignalCheckpointer()
    runner.start([sys.executable, "-c", script], program_env, workdir, workdir / "log")
    time.sleep(0.3)  # let the interpreter install its handler
    try:
        with pytest.raises(CheckpointError, match="wrote no files"):
            runner.checkpoint(tmp_path / "into", timeout=5)
    finally:
        runner.stop(1)


def test_the_marker_is_looked_for_every_few_milliseconds(workdir, program_env, tmp_path, monkeypatch):
    # The wait for the marker is on the checkpoint's critical path: a coarse poll adds its latency.
    script = ("import os, signal, time\n"
              "d = os.environ['SPOTRUN_CHECKPOINT_DIR']\n"
              "def save(*_):\n"
              "    time.sleep(0.2)\n"
              "    open(os.path.join(d, 'state.bin'), 'wb').write(b'state')\n"
              "    open(os.path.join(d, '.complete'), 'w').close()\n"
              "signal.signal(signal.SIGUSR1, save)\n"
              "open('ready', 'w').close()\n"
              "time.sleep(30)\n")
    runner = SignalCheckpointer()
    runner.start([sys.executable, "-c", script], program_env, workdir, workdir / "log")
    wait_for(lambda: (workdir / "ready").exists(), what="the handler")
    naps: list[float] = []
    real_sleep = time.sleep
    monkeypatch.setattr(cooperative.time, "sleep", lambda seconds: (naps.append(seconds), real_sleep(seconds)))
    try:
        files = runner.checkpoint(tmp_path / "into", timeout=10)
    finally:
        monkeypatch.undo()
        runner.stop(1)
    assert [p.name for p in files] == ["state.bin"]
    assert naps and max(naps) <= 0.005


def test_restoring_from_an_empty_directory_is_an_error(workdir, program_env, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint files"):
        SignalCheckpointer().start(counter_argv(), program_env, workdir, workdir / "log", restore_from=tmp_path / "empty")


@pytest.mark.slow
def test_a_shell_command_is_checkpointed_through_its_process_group(workdir, program_env, tmp_path):
    # /bin/sh (dash) does not exec its last command: the signal must reach the program anyway,
    # and the shell itself must survive it.
    command = "echo starting; " + " ".join(shlex.quote(a) for a in counter_argv(STEPS)) + "; echo finished"
    runner = make_checkpointer("signal", signal_name="USR1")
    runner.start(command, program_env, workdir, workdir / "log")
    wait_for(lambda: read_int(workdir / "progress.txt") >= 3, what="3 steps")
    files = runner.checkpoint(tmp_path / "into", timeout=10)
    assert {p.name for p in files} == {"state.json", "note.txt"}
    assert runner.wait(30) == 0
    log = (workdir / "log").read_text()
    assert "starting" in log and "done at step 50" in log and "finished" in log


def test_output_is_appended_to_the_log(workdir, program_env):
    for word in ("first", "second"):
        runner = NoCheckpointer()
        runner.start(f"echo {word}; echo {word}-err >&2", program_env, workdir, workdir / "log")
        assert runner.wait(10) == 0
    assert (workdir / "log").read_text().split() == ["first", "first-err", "second", "second-err"]


def test_stop_ends_the_whole_process_group(workdir, program_env):
    runner = NoCheckpointer()
    runner.start([sys.executable, str(PROGRAMS / "family.py")], program_env, workdir, workdir / "log")
    pids = wait_for(lambda: (workdir / "pids.json").exists() and json.loads((workdir / "pids.json").read_text()),
                    what="the children")
    assert all(process_alive(pid) for pid in pids)

    status = runner.stop(grace_seconds=0.5)

    assert status == -signal.SIGTERM
    assert not any(process_alive(pid) for pid in [runner.pid, *pids])  # the SIGTERM-proof child too


def test_stop_kills_a_leader_that_ignores_sigterm(workdir, program_env):
    runner = NoCheckpointer()
    runner.start([sys.executable, str(PROGRAMS / "family.py"), "--stubborn"], program_env, workdir, workdir / "log")
    pids = wait_for(lambda: (workdir / "pids.json").exists() and json.loads((workdir / "pids.json").read_text()),
                    what="the children")
    started = time.monotonic()
    assert runner.stop(grace_seconds=0.5) == -signal.SIGKILL
    assert time.monotonic() - started < 3
    assert not any(process_alive(pid) for pid in [runner.pid, *pids])


def test_exit_codes_are_reported_like_subprocess(workdir, program_env):
    runner = NoCheckpointer()
    runner.start("exit 7", program_env, workdir, workdir / "log")
    assert runner.wait(10) == 7
    assert runner.poll() == 7
    assert runner.stop() == 7  # stopping an ended program changes nothing


def test_a_command_that_cannot_be_executed_fails_like_in_a_shell(workdir, program_env, tmp_path):
    # A typo in the job's command is the program's failure (exit 127), not the machine's.
    runner = NoCheckpointer()
    runner.start(["no-such-program-anywhere", "--flag"], program_env, workdir, workdir / "log")
    assert runner.poll() == 127 and runner.wait(1) == 127 and runner.stop() == 127
    assert runner.pid is None
    assert "cannot execute no-such-program-anywhere" in (workdir / "log").read_text()
    (workdir / "data.txt").write_text("not a program")
    signalled = SignalCheckpointer()
    signalled.start([str(workdir / "data.txt")], program_env, workdir, workdir / "log")
    assert signalled.wait(1) == 126
    with pytest.raises(CheckpointError, match="already exited with code 126"):
        signalled.checkpoint(tmp_path / "into", timeout=1)
    with pytest.raises(NotADirectoryError):
        NoCheckpointer().start(["true"], program_env, workdir / "missing", workdir / "log")


def test_none_starts_fresh_and_takes_no_checkpoints(workdir, program_env, tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "state.json").write_text("{}")
    runner = make_checkpointer("none", signal_name="SIGUSR1")  # the agent passes the job's signal to every method
    assert runner.supports_checkpoint is False and runner.method == "none"
    probe = [sys.executable, "-c", "import os, time; time.sleep(0.2); "
             "open('seen', 'w').write(os.environ.get('SPOTRUN_RESTORED', '-'))"]
    runner.start(probe, program_env, workdir, workdir / "log", restore_from=tmp_path / "old")
    with pytest.raises(CheckpointUnsupported):
        runner.checkpoint(tmp_path / "into", timeout=1)
    assert runner.wait(10) == 0
    assert (workdir / "seen").read_text() == "-"
    assert not checkpoint_dir_for(workdir).exists()


def test_every_method_satisfies_the_protocol():
    assert isinstance(SignalCheckpointer(), Checkpointer)
    assert isinstance(NoCheckpointer(), Checkpointer)


def test_make_checkpointer_rejects_unknown_methods_and_options():
    with pytest.raises(ValueError, match="unknown checkpoint method 'criu'"):
        make_checkpointer("criu")
    with pytest.raises(TypeError, match="colour"):
        make_checkpointer("signal", colour="blue")
    with pytest.raises(ValueError, match="unknown signal"):
        make_checkpointer("signal", signal_name="SIGNOPE")
    assert make_checkpointer("signal", signal_name="SIGUSR2").signum == signal.SIGUSR2
