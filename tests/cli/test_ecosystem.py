"""The CLI among other tools: --json on every read command (stable keys), a closed pipe ends it quietly,
logs followed live across attempts, checkpoint now, and YAML parameters taken as written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from spotrun_cli import logs
from spotrun_cli.jobfile import load_job_file
from spotrun_cli.main import main
from tests.cli.conftest import JOB_ID, FakeApi, event_view, job_view, log_page, task_view

REPO = Path(__file__).resolve().parents[2]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_every_read_command_prints_json_with_its_documented_keys(cli_env: Any, fake_api: FakeApi,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    fake_api.answer("GET /jobs", 200, {"jobs": [job_view()], "next_token": None})
    fake_api.answer(f"GET /jobs/{JOB_ID}", 200, job_view("SUCCEEDED"))
    fake_api.answer(f"GET /jobs/{JOB_ID}/tasks", 200, {"tasks": [task_view(0), task_view(1)], "next_token": None})
    fake_api.answer(f"GET /jobs/{JOB_ID}/events", 200, {"events": [event_view("2026-11-23T12:00:00+00:00",
                                                                              "JobSubmitted")]})
    fake_api.answer(f"GET /jobs/{JOB_ID}/stats", 200, {"job_id": JOB_ID, "total": {"speedup": 2.0}})
    fake_api.answer(f"GET /jobs/{JOB_ID}/tasks/0/logs", 200, log_page(1, ["hello"], "t"))
    fake_api.answer(f"GET /jobs/{JOB_ID}/tasks/1/logs", 200, log_page(1, ["world"], "t", task=1))
    fake_api.answer(f"GET /jobs/{JOB_ID}/outputs", 200, {"outputs": []})
    expected = {
        ("ls",): {"jobs", "next_token"},
        ("status", JOB_ID): {"job", "tasks", "more_tasks"},
        ("events", JOB_ID): {"job_id", "events"},
        ("stats", JOB_ID): {"job_id", "total"},
        ("logs", JOB_ID): {"job_id", "tasks"},
        ("outputs", JOB_ID, "--dir", "/nonexistent"): {"job_id", "dir", "files", "failed"},
    }
    for argv, keys in expected.items():
        code, out, err = run(capsys, *argv, "--json")
        assert code == 0, (argv, err)
        assert set(json.loads(out)) == keys, argv
    code, out, _ = run(capsys, "logs", JOB_ID, "--json")
    assert [(t["task"], [e["message"] for e in t["events"]]) for t in json.loads(out)["tasks"]] == [
        (0, ["hello"]), (1, ["world"])]
    code, out, _ = run(capsys, "watch", JOB_ID, "--json", "--interval", "0.01")
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and lines[0] == {"event": event_view("2026-11-23T12:00:00+00:00", "JobSubmitted")}
    assert lines[-1]["job"]["state"] == "SUCCEEDED"


def test_a_closed_pipe_ends_the_cli_quietly(cli_env: Any, fake_api: FakeApi) -> None:
    """`spotrun events J | head -1`: a real pipe, a reader that leaves after one line."""
    fake_api.answer(f"GET /jobs/{JOB_ID}/events", 200, {"events": [
        event_view(f"2026-11-23T12:{n // 60:02d}:{n % 60:02d}+00:00", "TaskStarted", n) for n in range(999)]})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(REPO / p) for p in ("lambdas", "cli"))}
    cli = subprocess.Popen([sys.executable, "-m", "spotrun_cli", "events", JOB_ID], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=env)
    assert cli.stdout is not None and cli.stdout.readline().startswith(b"2026-11-23 12:00:00")
    cli.stdout.close()  # what head does once it has its line
    _, err = cli.communicate(timeout=60)
    assert cli.returncode == 141 and err == b"", err.decode()


def test_checkpoint_now_from_the_cli(cli_env: Any, fake_api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    fake_api.answer(f"POST /jobs/{JOB_ID}/checkpoint", 202, {"job_id": JOB_ID, "tasks": [0, 2]})
    fake_api.answer(f"POST /jobs/{JOB_ID}/tasks/2/checkpoint", 202, {"job_id": JOB_ID, "tasks": [2]})
    code, out, _ = run(capsys, "checkpoint", JOB_ID)
    assert code == 0 and "2 running task(s): [0, 2]" in out
    code, out, _ = run(capsys, "checkpoint", JOB_ID, "2")
    assert code == 0 and "checkpoint requested of task 2" in out
    fake_api.answer(f"POST /jobs/{JOB_ID}/checkpoint", 409, {"error": "no task of job is running"})
    code, _, err = run(capsys, "checkpoint", JOB_ID)
    assert code == 1 and "no task of job is running" in err


def test_yaml_parameters_are_taken_as_written(tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text("name: sweep\ncommand: python x.py\nparameters:\n"
                                       "  - {SEED: 007, FAST: yes, RATE: 1e3, QUOTED: '1', WHEN: 2026-01-01}\n"
                                       "  - SEED: 8\n")
    spec, _ = load_job_file(str(tmp_path / "job.yaml"))
    assert spec["parameters"] == [{"SEED": "007", "FAST": "yes", "RATE": "1e3", "QUOTED": "1", "WHEN": "2026-01-01"},
                                  {"SEED": "8"}]


class Scripted:
    """The API's log route and task route, answering from a script of attempts and their lines."""

    def __init__(self) -> None:
        self.attempt, self.state, self.lines = 1, "RUNNING", {1: [], 2: []}
        self.calls = 0

    def get_task(self, job_id: str, index: int) -> dict[str, Any]:
        return {"index": index, "attempt": self.attempt, "state": self.state, "pool": "m6i.large@us-east-1c"}

    def task_log(self, job_id: str, index: int, attempt: int | None = None, next_token: str | None = None,
                 limit: int = 1000, newest: bool = False) -> dict[str, Any]:
        number = attempt or self.attempt
        start = int(next_token or 0)
        lines = self.lines[number][start:start + limit]
        return {"attempt": number, "next_token": str(start + len(lines)), "kept": True,
                "events": [{"at": "2026-11-23T12:00:00+00:00", "message": line} for line in lines]}


def test_follow_prints_lines_as_they_come_across_attempts_until_the_task_ends(capsys: pytest.CaptureFixture[str]) -> None:
    api = Scripted()
    script = [lambda: api.lines[1].extend(["a1", "a2"]), lambda: api.lines[1].append("a3 (final checkpoint)"),
              lambda: setattr(api, "attempt", 2), lambda: api.lines[2].extend(["b1", "b2"]),
              lambda: setattr(api, "state", "SUCCEEDED"), lambda: None, lambda: None]
    printer = logs.Printer(sys.stdout)
    logs.follow(api, JOB_ID, [0], printer, sys.stderr, sleep=lambda _: script.pop(0)() if script else None)  # type: ignore[arg-type]
    captured = capsys.readouterr()
    assert captured.out.splitlines() == ["a1", "a2", "a3 (final checkpoint)", "b1", "b2"]
    assert "--- task 0: attempt 2 (m6i.large@us-east-1c) ---" in captured.err and "is SUCCEEDED" in captured.err


@pytest.mark.slow  # moto: provisions the whole store
def test_follow_against_the_real_api_and_cloudwatch_logs(cp: Any, env: dict[str, str], aws: Any, context: Any,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from spotrun import jobs
    from spotrun.attempts import complete
    from spotrun.domain.messages import CompletionReport
    from spotrun.handlers import api
    from spotrun_local.gateway import new_local_credentials, start_gateway
    from tests.integration.test_logs_and_actions import put_lines, running

    _, job_id = running(cp, env, aws, context, tasks=1)
    attempt = cp.store.get_task(job_id, 0).attempt
    put_lines(aws, env, job_id, 0, attempt, ["first"])
    credentials = new_local_credentials()
    server = start_gateway(lambda event, ctx: api.handler(event, ctx, control=cp), credentials)
    try:
        monkeypatch.setenv("SPOTRUN_API", server.url)
        for name, value in credentials.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
        done = threading.Event()
        result: dict[str, Any] = {}
        thread = threading.Thread(target=lambda: (result.update(code=main(
            ["logs", job_id, "0", "--follow", "--interval", "0.1"])), done.set()), daemon=True)
        thread.start()
        put_lines(aws, env, job_id, 0, attempt, ["second"])
        jobs.cancel_task(cp, job_id, 0)
        task = cp.store.get_task(job_id, 0)
        # its agent stops the program and reports: the task ends, and following stops once its last lines are in
        complete(cp, CompletionReport(job_id=job_id, index=0, attempt=attempt, instance_id=task.instance_id,
                                      sent_at=cp.clock(), outcome="cancelled"))
        assert cp.store.get_task(job_id, 0).state == "CANCELLED"
        assert done.wait(30), "follow did not stop after the task ended"
        assert result["code"] == 0
        printed = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("{")]  # not the
        assert printed == ["first", "second"]  # handlers' logs and metrics, which share this process's stdout
    finally:
        server.stop()
