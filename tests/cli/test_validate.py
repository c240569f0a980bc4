"""The CLI validates the whole job spec locally, with the API's own model, before it uploads anything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from spotrun_cli.main import main
from tests.cli.conftest import JOB_ID, BlobServer, FakeApi

INVALID = ("name: primes\ncommand: python3 inputs/primes.py\ninputs: [primes.py]\n"
           "checkpoint: {method: signal, interval: 10}\nresources: {vcpus: 0}\ntasks: 2\n")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_submit_of_an_invalid_spec_uploads_nothing_and_names_every_problem(
        cli_env: Any, fake_api: FakeApi, blobs: BlobServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "primes.py").write_text("print('hi')\n")
    (tmp_path / "job.yaml").write_text(INVALID)
    fake_api.answer("POST /uploads", 200, {"url": blobs.url("/put/primes.py"), "uri": "s3://bucket/uploads/primes.py"})
    fake_api.answer("POST /jobs", 202, {"job_id": JOB_ID, "state": "QUEUED", "created": True, "tasks": 2})

    code, out, err = run(capsys, "submit", str(tmp_path / "job.yaml"))

    assert code == 2 and out == ""
    assert fake_api.events == [] and blobs.blobs == {}  # no upload URL asked for, nothing uploaded, nothing submitted
    lines = err.splitlines()
    assert lines[0] == f"error: {tmp_path / 'job.yaml'} is not a valid job spec"
    assert "  - checkpoint.interval: must be 'auto' or at least 30, got 10" in lines  # field, limit, value
    assert any(line.startswith("  - resources.vcpus") for line in lines)


def test_submit_of_a_valid_spec_still_uploads_and_submits(cli_env: Any, fake_api: FakeApi, blobs: BlobServer,
                                                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "primes.py").write_text("print('hi')\n")
    (tmp_path / "job.yaml").write_text("name: primes\ncommand: python3 inputs/primes.py\ninputs: [primes.py]\n")
    fake_api.answer("POST /uploads", 200, {"url": blobs.url("/put/primes.py"), "uri": "s3://bucket/uploads/primes.py"})
    fake_api.answer("POST /jobs", 202, {"job_id": JOB_ID, "state": "QUEUED", "created": True, "tasks": 1})
    assert run(capsys, "submit", "-q", str(tmp_path / "job.yaml"))[:2] == (0, f"{JOB_ID}\n")
    assert blobs.blobs == {"/put/primes.py": b"print('hi')\n"}


def test_validate_needs_no_api_and_sends_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("SPOTRUN_API", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SPOTRUN_API", "http://127.0.0.1:9")  # would refuse every connection, were one made
    (tmp_path / "primes.py").write_text("")
    (tmp_path / "job.yaml").write_text(
        "name: primes\ncommand: python3 inputs/primes.py\ninputs: [primes.py, s3://data/seeds.csv]\ntasks: 4\n"
        "combine: {command: python3 inputs/primes.py combine}\ncheckpoint: {method: signal, interval: 60}\n")
    code, out, err = run(capsys, "validate", str(tmp_path / "job.yaml"))
    assert (code, err) == (0, "")
    assert out.splitlines() == [f"{tmp_path / 'job.yaml'}: a valid job spec", "  primes: 4 tasks + a combine step",
                                "  each on 1 vCPU, 2 GiB", "  checkpoint signal, every 60s",
                                "  local inputs uploaded at submit: primes.py"]

    (tmp_path / "job.yaml").write_text(INVALID)
    code, out, err = run(capsys, "validate", str(tmp_path / "job.yaml"))
    assert code == 2 and out == "" and "is not a valid job spec" in err

    (tmp_path / "job.yaml").write_text("name: primes\ncommand: x\ninputs: [missing.py]\n")
    code, _, err = run(capsys, "validate", str(tmp_path / "job.yaml"))
    assert code == 2 and "input file not found: missing.py" in err

