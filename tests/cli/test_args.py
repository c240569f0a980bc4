"""Argument parsing, job file loading, configuration: everything that needs no API."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from spotrun_cli.client import ApiClient, ConfigError, normalize_api, region_for
from spotrun_cli.jobfile import JobFileError, load_job_file, local_inputs, with_uploaded
from spotrun_cli.main import build_parser, main, output_destination
from tests.cli.conftest import JOB_ID


def parse(*argv: str):
    return build_parser().parse_args(list(argv))


def test_commands_and_their_options() -> None:
    args = parse("submit", "job.yaml", "--idempotency-key", "k1", "--watch")
    assert (args.command, args.job_file, args.idempotency_key, args.watch, args.quiet) == \
        ("submit", "job.yaml", "k1", True, False)
    args = parse("ls", "--state", "running", "--limit", "5")
    assert (args.state, args.limit) == ("RUNNING", 5)
    args = parse("cancel-task", JOB_ID, "3")
    assert (args.command, args.job_id, args.index) == ("cancel-task", JOB_ID, 3)
    args = parse("logs", JOB_ID)
    assert args.task is None
    assert parse("outputs", JOB_ID, "--dir", "out").dir == Path("out")
    assert parse("watch", JOB_ID).interval == 2.0


def test_global_options_before_or_after_the_command() -> None:
    assert parse("--api", "http://a", "status", JOB_ID).api == "http://a"
    assert parse("status", JOB_ID, "--api", "http://b", "--region", "eu-west-1").api == "http://b"
    assert parse("--api", "http://a", "status", JOB_ID, "--region", "eu-west-1").api == "http://a"
    assert parse("status", JOB_ID).api is None


@pytest.mark.parametrize("argv", [
    [], ["frobnicate"], ["ls", "--state", "sleeping"], ["ls", "--limit", "0"], ["cancel-task", JOB_ID, "-1"],
    ["cancel-task", JOB_ID, "two"], ["status"],
])
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage: spotrun" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("submit", "ls", "status", "watch", "logs", "events", "cancel", "suspend", "resume",
                    "cancel-task", "outputs"):
        assert command in out


def test_no_endpoint_is_bad_input(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("SPOTRUN_API", raising=False)
    assert main(["ls"]) == 2
    assert "SPOTRUN_API" in capsys.readouterr().err


def test_region_comes_from_the_flag_then_the_api_host_then_the_environment() -> None:
    api = "https://abc123.execute-api.eu-central-1.amazonaws.com/prod"
    assert region_for(api, "us-west-2", {}) == "us-west-2"
    assert region_for(api, None, {"AWS_REGION": "us-east-1"}) == "eu-central-1"
    assert region_for("http://127.0.0.1:8765", None, {"AWS_REGION": "ap-south-1"}) == "ap-south-1"
    assert region_for("http://127.0.0.1:8765", None, {"AWS_DEFAULT_REGION": "sa-east-1"}) == "sa-east-1"
    assert region_for("http://127.0.0.1:8765", None, {}, configured="eu-west-3") == "eu-west-3"
    assert region_for("http://127.0.0.1:8765", None, {}) == "us-east-1"


def test_endpoint_must_be_an_http_url() -> None:
    assert normalize_api("http://127.0.0.1:8765/") == "http://127.0.0.1:8765"
    with pytest.raises(ConfigError, match="http"):
        normalize_api("127.0.0.1:8765")
    with pytest.raises(ConfigError, match="SPOTRUN_API"):
        normalize_api("")


def test_urls_carry_the_query_in_canonical_order_and_encoding() -> None:
    client = ApiClient("https://x.execute-api.us-east-1.amazonaws.com/prod", credentials=None, region="us-east-1")
    assert client.url("/jobs", {"state": "RUNNING", "limit": 5, "next_token": None}) == \
        "https://x.execute-api.us-east-1.amazonaws.com/prod/jobs?limit=5&state=RUNNING"
    assert client.url("/jobs", {"next_token": "a b/c=="}).endswith("?next_token=a%20b%2Fc%3D%3D")


# ---------------------------------------------------------------- job files

def test_yaml_and_json_job_files(tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text("name: demo\ncommand: echo hi\ndeadline: 2030-01-02T03:04:05Z\n")
    spec, base = load_job_file(str(tmp_path / "job.yaml"))
    assert spec == {"name": "demo", "command": "echo hi", "deadline": "2030-01-02T03:04:05+00:00"}
    assert base == tmp_path.resolve()
    (tmp_path / "job.json").write_text('{"name": "demo", "command": ["echo", "hi"]}')
    assert load_job_file(str(tmp_path / "job.json"))[0] == {"name": "demo", "command": ["echo", "hi"]}


def test_a_missing_job_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(JobFileError, match="job file not found: .*nope.yaml"):
        load_job_file(str(tmp_path / "nope.yaml"))


def test_invalid_yaml_says_where(tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text("name: demo\ncommand: [echo\n  outputs: x\n")
    with pytest.raises(JobFileError, match=r"is not valid YAML: line \d+, column \d+: "):
        load_job_file(str(tmp_path / "job.yaml"))


def test_invalid_json_says_where(tmp_path: Path) -> None:
    (tmp_path / "job.json").write_text('{"name": "demo",\n "command": }')
    with pytest.raises(JobFileError, match="is not valid JSON: line 2, column 13"):
        load_job_file(str(tmp_path / "job.json"))


@pytest.mark.parametrize(("text", "message"), [("", "is empty"), ("- a\n- b\n", "not a list"),
                                                ("just words", "not a string")])
def test_a_job_file_must_be_a_mapping(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "job.yaml").write_text(text)
    with pytest.raises(JobFileError, match=message):
        load_job_file(str(tmp_path / "job.yaml"))


def test_job_file_errors_exit_2_with_the_message(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPOTRUN_API", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    (tmp_path / "job.yaml").write_text("name: [unclosed\n")
    assert main(["submit", str(tmp_path / "job.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "is not valid YAML" in err and "line 2" in err
    assert main(["submit", str(tmp_path / "missing.yaml")]) == 2
    assert "job file not found" in capsys.readouterr().err


def test_local_inputs_are_found_relative_to_the_job_file(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "seeds.csv").write_text("1\n")
    spec = {"inputs": ["s3://bucket/a.csv", "data/seeds.csv"]}
    found = local_inputs(spec, tmp_path)
    assert [(i.position, i.written, i.path) for i in found] == [(1, "data/seeds.csv", tmp_path / "data/seeds.csv")]
    assert with_uploaded(spec, {1: "s3://b/uploads/x/seeds.csv"}) == \
        {"inputs": ["s3://bucket/a.csv", "s3://b/uploads/x/seeds.csv"]}
    with pytest.raises(JobFileError, match="input file not found: missing.csv"):
        local_inputs({"inputs": ["missing.csv"]}, tmp_path)
    with pytest.raises(JobFileError, match="not a file"):
        local_inputs({"inputs": ["data"]}, tmp_path)


def test_output_keys_map_to_index_and_path() -> None:
    assert output_destination(f"jobs/{JOB_ID}/outputs/3/sub/result.json", JOB_ID) == PurePosixPath("3/sub/result.json")
    assert output_destination(f"jobs/{JOB_ID}/outputs/3/../../etc/passwd", JOB_ID) is None
    assert output_destination(f"jobs/{JOB_ID}/outputs/result.json", JOB_ID) is None
    assert output_destination("jobs/j-other/outputs/0/x", JOB_ID) is None
