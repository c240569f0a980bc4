"""The CLI against the local gateway (real SigV4 signing and checking) with a fake API handler."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from spotrun_cli.main import main
from tests.cli.conftest import JOB_ID, BlobServer, FakeApi, event_view, job_view, log_page, task_view


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_submit_uploads_local_inputs_and_posts_the_spec(cli_env: Any, fake_api: FakeApi, blobs: BlobServer,
                                                        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "seeds.csv").write_text("1,2,3\n")
    (tmp_path / "job.yaml").write_text(
        "name: pi-sweep\ncommand: python pi.py\ninputs:\n  - s3://my-bucket/a.csv\n  - seeds.csv\n"
        "parameters:\n  - {SEED: '1'}\n  - {SEED: '2'}\n")
    fake_api.answer("POST /uploads", 200, {"url": blobs.url("/put/seeds.csv"), "uri": "s3://bucket/uploads/seeds.csv"})
    fake_api.answer("POST /jobs", 202, {"job_id": JOB_ID, "state": "QUEUED", "created": True, "tasks": 2})

    code, out, err = run(capsys, "submit", str(tmp_path / "job.yaml"), "--idempotency-key", "run-1")

    assert code == 0, err
    assert out.strip() == f"submitted job {JOB_ID} (pi-sweep): 2 tasks, state QUEUED"
    assert "uploaded seeds.csv -> s3://bucket/uploads/seeds.csv" in err
    assert blobs.blobs["/put/seeds.csv"] == b"1,2,3\n"
    [upload] = fake_api.calls("POST /uploads")
    assert json.loads(upload["body"]) == {"filename": "seeds.csv"}
    [event] = fake_api.calls("POST /jobs")
    assert event["httpMethod"] == "POST" and event["path"] == "/jobs"
    assert event["queryStringParameters"] == {"idempotency_key": "run-1"}
    assert json.loads(event["body"]) == {
        "name": "pi-sweep", "command": "python pi.py",
        "inputs": ["s3://my-bucket/a.csv", "s3://bucket/uploads/seeds.csv"],
        "parameters": [{"SEED": "1"}, {"SEED": "2"}]}
    identity = event["requestContext"]["identity"]
    assert identity["userArn"] == "arn:aws:iam::000000000000:user/local"
    assert identity["accessKey"] == cli_env.credentials.access_key_id


def test_submit_quiet_prints_only_the_id(cli_env: Any, fake_api: FakeApi, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "job.json").write_text('{"name": "x", "command": "true"}')
    fake_api.answer("POST /jobs", 202, {"job_id": JOB_ID, "state": "QUEUED", "created": True, "tasks": 1})
    assert run(capsys, "submit", "-q", str(tmp_path / "job.json"))[:2] == (0, f"{JOB_ID}\n")


def test_an_invalid_spec_lists_the_problems_and_exits_2(cli_env: Any, fake_api: FakeApi, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "job.yaml").write_text("name: x\ncommand: 'true'\n")  # valid here; the (fake) API refuses it
    fake_api.answer("POST /jobs", 400, {"error": "invalid job spec",
                                        "problems": [{"field": "command", "problem": "Field required"}]})
    code, _, err = run(capsys, "submit", str(tmp_path / "job.yaml"))
    assert code == 2
    assert err.splitlines() == ["error: invalid job spec", "  - command: Field required"]


def test_status(cli_env: Any, fake_api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    fake_api.answer(f"GET /jobs/{JOB_ID}", 200, job_view())
    fake_api.answer(f"GET /jobs/{JOB_ID}/tasks", 200, {"tasks": [task_view(0, "SUCCEEDED", exit_code=0),
                                                                 task_view(1, progress=0.25)], "next_token": None})
    code, out, err = run(capsys, "status", JOB_ID)
    assert code == 0, err
    assert f"job      {JOB_ID}  pi-sweep" in out and "c6i.large@us-east-1a" in out and "25%" in out
    [tasks] = fake_api.calls(f"GET /jobs/{JOB_ID}/tasks")
    assert tasks["queryStringParameters"] == {"limit": "100"}


def test_cancel(cli_env: Any, fake_api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    fake_api.answer(f"POST /jobs/{JOB_ID}/cancel", 202, job_view(desired="CANCEL"))
    code, out, _ = run(capsys, "cancel", JOB_ID)
    assert code == 0 and "cancel requested" in out and "desired CANCEL" in out
    [event] = fake_api.calls(f"POST /jobs/{JOB_ID}/cancel")
    assert event["body"] is None


def test_cancel_task_and_a_conflict(cli_env: Any, fake_api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    fake_api.answer(f"POST /jobs/{JOB_ID}/tasks/1/cancel", 202, task_view(1, desired="CANCEL"))
    fake_api.answer(f"GET /jobs/{JOB_ID}", 200, job_view())
    assert run(capsys, "cancel-task", JOB_ID, "1")[:2] == (
        0, f"job {JOB_ID} task 1: cancel requested (state RUNNING, desired CANCEL)\n")
    # what it means for the job, when it means something: said at once
    fake_api.answer(f"GET /jobs/{JOB_ID}", 200, job_view(reason="task 1 was cancelled: the combine step will not run"))
    assert run(capsys, "cancel-task", JOB_ID, "1")[1].endswith("note: task 1 was cancelled: the combine step will not run\n")
    fake_api.answer(f"POST /jobs/{JOB_ID}/resume", 409, {"error": "the job is not suspended"})
    code, _, err = run(capsys, "resume", JOB_ID)
    assert (code, err) == (1, "error: the job is not suspended\n")


def test_an_unknown_job_exits_1(cli_env: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "status", JOB_ID)
    assert code == 1 and "no route GET /jobs/" in err


def test_logs_events_and_ls(cli_env: Any, fake_api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    fake_api.answer(f"GET /jobs/{JOB_ID}/tasks/0/logs", 200, [
        log_page(2, ["starting", "done"], "t1"), log_page(2, [], "t1")])
    code, out, err = run(capsys, "logs", JOB_ID, "0")
    assert (code, out) == (0, "starting\ndone\n"), err
    first, second = fake_api.calls(f"GET /jobs/{JOB_ID}/tasks/0/logs")
    assert first["queryStringParameters"] == {"limit": "1000"}
    assert second["queryStringParameters"] == {"attempt": "2", "limit": "1000", "next_token": "t1"}
    fake_api.answer(f"GET /jobs/{JOB_ID}/events", 200, {"events": [
        event_view("2026-11-23T12:00:00+00:00", "JobSubmitted"), event_view("2026-11-23T12:00:05+00:00",
                                                                           "TaskStarted", 0)]})
    code, out, _ = run(capsys, "events", JOB_ID)
    assert code == 0 and out.splitlines()[0].startswith("2026-11-23 12:00:00  JobSubmitted")
    assert "task 0 #1" in out.splitlines()[1]
    fake_api.answer("GET /jobs", 200, {"jobs": [job_view()], "next_token": None})
    code, out, _ = run(capsys, "ls", "--state", "running")
    assert code == 0 and JOB_ID in out
    assert fake_api.calls("GET /jobs")[0]["queryStringParameters"] == {"limit": "20", "state": "RUNNING"}


def test_watch_follows_until_the_job_finishes(cli_env: Any, fake_api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    fake_api.answer(f"GET /jobs/{JOB_ID}", 200, [job_view(), job_view("SUCCEEDED", counts={"SUCCEEDED": 3})])
    fake_api.answer(f"GET /jobs/{JOB_ID}/events", 200, [
        {"events": [event_view("2026-11-23T12:00:00+00:00", "JobSubmitted")]},
        {"events": [event_view("2026-11-23T12:00:00+00:00", "JobSubmitted"),  # the cursor's time comes back
                    event_view("2026-11-23T12:01:00+00:00", "JobSucceeded")]}])
    code, out, _ = run(capsys, "watch", JOB_ID, "--interval", "0.01")
    assert code == 0
    lines = out.splitlines()
    assert sum("JobSubmitted" in line for line in lines) == 1 and any("JobSucceeded" in line for line in lines)
    assert f"job {JOB_ID} RUNNING: 1/3 succeeded" in out and f"job {JOB_ID} SUCCEEDED: 3/3 succeeded" in out
    assert "\x1b[" not in out  # not a terminal: plain lines
    second = fake_api.calls(f"GET /jobs/{JOB_ID}/events")[1]
    assert second["queryStringParameters"]["after"] == "2026-11-23T12:00:00.000000Z"


def test_watch_exits_1_when_the_job_failed(cli_env: Any, fake_api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    fake_api.answer(f"GET /jobs/{JOB_ID}", 200, job_view("FAILED"))
    fake_api.answer(f"GET /jobs/{JOB_ID}/events", 200, {"events": []})
    code, out, _ = run(capsys, "watch", JOB_ID)
    assert code == 1 and f"job {JOB_ID} finished FAILED" in out


def test_watch_redraws_on_a_terminal(cli_env: Any, fake_api: FakeApi) -> None:
    import io

    from spotrun_cli.client import ApiClient
    from spotrun_cli.main import watch

    fake_api.answer(f"GET /jobs/{JOB_ID}", 200, [job_view(), job_view("CANCELLED")])
    fake_api.answer(f"GET /jobs/{JOB_ID}/events", 200, {"events": []})
    fake_api.answer(f"GET /jobs/{JOB_ID}/tasks", 200, {"tasks": [task_view(0, progress=0.5)], "next_token": None})
    out = io.StringIO()
    code = watch(ApiClient.from_environment(None), JOB_ID, out, tty=True, sleep=lambda s: None)
    text = out.getvalue()
    assert code == 1
    assert text.count("\x1b[H\x1b[2J") == 2 and "████" in text and text.endswith("\x1b[?25h")


def test_outputs_are_downloaded_by_task_index(cli_env: Any, fake_api: FakeApi, blobs: BlobServer, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    blobs.blobs["/o/a"] = b"result 0"
    blobs.blobs["/o/b"] = b"combined"
    fake_api.answer(f"GET /jobs/{JOB_ID}/outputs", 200, {"outputs": [
        {"key": f"jobs/{JOB_ID}/outputs/0/result.json", "size": 8, "url": blobs.url("/o/a")},
        {"key": f"jobs/{JOB_ID}/outputs/2/sub/pi.json", "size": 8, "url": blobs.url("/o/b")}]})
    code, out, err = run(capsys, "outputs", JOB_ID, "--dir", str(tmp_path / "out"))
    assert code == 0, err
    assert (tmp_path / "out/0/result.json").read_bytes() == b"result 0"
    assert (tmp_path / "out/2/sub/pi.json").read_bytes() == b"combined"
    assert "2 file(s), 16 bytes" in err


def test_the_gateway_refuses_the_wrong_secret_and_the_cli_says_so(cli_env: Any, fake_api: FakeApi,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    code, _, err = run(capsys, "ls")
    assert code == 1 and "signature does not match" in err and "(HTTP 403)" in err and "make run" in err
    assert fake_api.events == []


def test_an_unreachable_api_names_the_endpoint(cli_env: Any, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("SPOTRUN_API", f"http://127.0.0.1:{port}")
    code, _, err = run(capsys, "ls")
    assert code == 1
    assert f"cannot reach the spotrun API at http://127.0.0.1:{port}" in err
    assert "make run" in err and "SPOTRUN_API" in err


@pytest.mark.slow  # moto: provisions the whole store (several seconds)
def test_the_real_handler_behind_the_gateway(cp: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The gateway's events suit the real API handler (Powertools), against moto."""
    from spotrun.handlers import api
    from spotrun_local.gateway import new_local_credentials, start_gateway

    credentials = new_local_credentials()
    server = start_gateway(lambda event, context: api.handler(event, context, control=cp), credentials)
    try:
        monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
        monkeypatch.setenv("SPOTRUN_API", server.url)
        for name, value in credentials.env().items():
            monkeypatch.setenv(name, value)
        (tmp_path / "job.yaml").write_text("name: sweep\ncommand: python sim.py\ntasks: 3\n")
        code, out, err = run(capsys, "submit", "-q", str(tmp_path / "job.yaml"), "--idempotency-key", "k")
        assert code == 0, err
        job_id = out.strip()
        assert cp.store.get_job(job_id).owner == "arn:aws:iam::000000000000:user/local"
        code, out, err = run(capsys, "status", job_id)
        assert code == 0 and "QUEUED 3" in out and out.count("QUEUED") >= 4, err
        assert run(capsys, "cancel", job_id)[0] == 0
        code, _, err = run(capsys, "ls", "--limit", "0")
        assert code == 2
        (tmp_path / "bad.yaml").write_text("name: sweep\ntasks: 0\n")
        code, _, err = run(capsys, "submit", str(tmp_path / "bad.yaml"))
        # refused by the CLI itself, with the API's own model (the same problems the API would list)
        assert code == 2 and "is not a valid job spec" in err and "  - command:" in err and "  - tasks:" in err
    finally:
        server.stop()


def test_watch_rides_out_a_transient_api_error(cli_env: Any, fake_api: FakeApi,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    fake_api.answer(f"GET /jobs/{JOB_ID}", 200, job_view("SUCCEEDED"))
    fake_api.answer(f"GET /jobs/{JOB_ID}/events", 200, {"events": []})
    crashes = [1]

    def flaky(event: dict[str, Any], context: Any) -> dict[str, Any]:
        if crashes:
            crashes.pop()
            raise RuntimeError("cold start gone wrong")
        return fake_api(event, context)
    cli_env.handler = flaky
    code, out, _ = run(capsys, "watch", JOB_ID, "--interval", "0.01")
    assert code == 0 and "(HTTP 502; retrying)" in out and "succeeded" in out


def test_a_waiting_job_says_why_in_its_status(cli_env: Any, fake_api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    waiting = {"queued": 2, "summary": "2 task(s) wait: no capacity in any of the 2 pools the job may use",
               "pools": [{"pool": "c6i.large@us-east-1a", "why": "InsufficientInstanceCapacity",
                          "since": "2026-11-23T12:00:10+00:00", "until": "2026-11-23T12:15:10+00:00"},
                         {"pool": "m6i.large@us-east-1a", "why": "spot reclaim", "since": None, "until": None}],
               "next_try_at": "2026-11-23T12:15:10+00:00", "deadline_policy": None,
               "on_demand": "no: refused launches are not faults"}
    fake_api.answer(f"GET /jobs/{JOB_ID}", 200, job_view(state="QUEUED", waiting=waiting))
    fake_api.answer(f"GET /jobs/{JOB_ID}/tasks", 200, {"tasks": [task_view(0, state="QUEUED")], "next_token": None})
    code, out, _ = run(capsys, "status", JOB_ID)
    assert code == 0
    assert "waiting  2 task(s) wait: no capacity in any of the 2 pools" in out
    assert "c6i.large@us-east-1a: InsufficientInstanceCapacity at 12:00:10, cooling down until 12:15:10" in out
    assert "next try by 2026-11-23 12:15:10 UTC" in out and "on-demand fallback: no: refused launches" in out


def test_outputs_of_a_finished_job_without_any_say_so(cli_env: Any, fake_api: FakeApi,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    fake_api.answer(f"GET /jobs/{JOB_ID}/outputs", 200, {"outputs": []})
    fake_api.answer(f"GET /jobs/{JOB_ID}", 200, job_view(state="CANCELLED"))
    assert run(capsys, "outputs", JOB_ID)[2] == f"job {JOB_ID} has no outputs (it is CANCELLED: no task uploaded any)\n"
    fake_api.answer(f"GET /jobs/{JOB_ID}", 200, job_view(state="RUNNING"))
    assert run(capsys, "outputs", JOB_ID)[2] == f"job {JOB_ID} has no outputs yet\n"
