"""A corpus of wrong job specs through the real API handler: each is a 400 whose `problems` name the
offending field, and nothing is stored or announced. A hostile but valid command is kept verbatim and
never comes back as HTML."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from spotrun.handlers import api
from tests.fuzz.support import job_items, table_items
from tests.support import api_event

OK = {"name": "sweep", "command": "python sim.py"}


def spec(**changes: Any) -> dict[str, Any]:
    return {**OK, **changes}


def submit(cp: Any, context: Any, body: Any, method: str = "POST", path: str = "/jobs") -> tuple[int, Any, dict[str, str]]:
    answer = api.handler(api_event(method, path, body), context, control=cp)
    headers = {k.lower(): v for k, v in (answer.get("headers") or {}).items()}
    headers.update({k.lower(): v[-1] for k, v in (answer.get("multiValueHeaders") or {}).items()})
    return answer["statusCode"], json.loads(answer["body"]), headers


def named(field: str, problems: list[dict[str, str]]) -> bool:
    """Whether a problem names `field` (or a part of it: 'tags' is named by 'tags.k.[key]')."""
    return any(p["field"] == field or p["field"].startswith(field + ".") for p in problems)


def raw(text: str) -> str:
    """A body given as JSON text, for what json.dumps cannot write (duplicate keys, NaN literals...)."""
    return text


TOO_MANY_BYTES = [{f"V{n}": "é" * 4096 for n in range(64)}]  # 512 KiB in UTF-8: more than a task's item holds

CORPUS: dict[str, tuple[Any, set[str]]] = {
    # missing fields
    "empty object": ({}, {"name", "command"}),
    "no command": ({"name": "x"}, {"command"}),
    "no name": ({"command": "x"}, {"name"}),
    "null name": (spec(name=None), {"name"}),
    # wrong types
    "name a number": (spec(name=5), {"name"}),
    "command a number": (spec(command=5), {"command"}),
    "command an object": (spec(command={"run": "x"}), {"command"}),
    "command an empty list": (spec(command=[]), {"command"}),
    "command a list of numbers": (spec(command=[1, 2]), {"command"}),
    "tasks a word": (spec(tasks="many"), {"tasks"}),
    "tasks a numeric string": (spec(tasks="3"), {"tasks"}),
    "tasks a fraction": (spec(tasks=2.5), {"tasks"}),
    "resources a string": (spec(resources="big"), {"resources"}),
    "vcpus a numeric string": (spec(resources={"vcpus": "4"}), {"resources.vcpus"}),
    "memory a numeric string": (spec(resources={"memory_gib": "4"}), {"resources.memory_gib"}),
    "inputs a string": (spec(inputs="s3://bucket/a.csv"), {"inputs"}),
    "tags a list": (spec(tags=["a"]), {"tags"}),
    "parameters an object": (spec(parameters={"A": "1"}), {"parameters"}),
    # (a number or true/false is taken as its text: parameters are environment variables)
    "a parameter value a list": (spec(parameters=[{"A": [1]}]), {"parameters.0.A"}),
    "a parameter value null": (spec(parameters=[{"A": None}]), {"parameters.0.A"}),
    "checkpoint interval a numeric string": (spec(checkpoint={"interval": "60"}), {"checkpoint.interval"}),
    "allow_partial a word": (spec(combine={"command": "x", "allow_partial": "yes"}), {"combine.allow_partial"}),
    "allow_partial a number": (spec(combine={"command": "x", "allow_partial": 1}), {"combine.allow_partial"}),
    "deadline a unix time": (spec(deadline=1_795_435_200), {"deadline"}),
    # absurd sizes
    "a billion tasks": (spec(tasks=10**9), {"tasks"}),
    "zero tasks": (spec(tasks=0), {"tasks"}),
    "tasks 1e308": (spec(tasks=1e308), {"tasks"}),
    "a 1 MB command": (spec(command="x" * 1_000_000), {"command"}),
    "a 257-word argv": (spec(command=["x"] * 257), {"command"}),
    "a 1 MB argv": (spec(command=["a" * 16_384] * 64), {"command"}),
    "a 20 kB setup": (spec(setup="x" * 20_000), {"setup"}),
    "a 1 MB combine command": (spec(combine={"command": "x" * 1_000_000}), {"combine.command"}),
    "1001 inputs": (spec(inputs=[f"s3://bucket/{n}" for n in range(1001)]), {"inputs"}),
    "1 MB of valid inputs": (spec(inputs=["s3://bucket/" + "k" * 1024] * 1000), {"inputs"}),
    "101 outputs": (spec(outputs=[f"out{n}" for n in range(101)]), {"outputs"}),
    "100 001 parameter sets": (spec(parameters=[{"A": "1"}] * 100_001), {"parameters"}),
    "65 parameters in a task": (spec(parameters=[{f"V{n}": "x" for n in range(65)}]), {"parameters"}),
    "a 4097-character parameter": (spec(parameters=[{"V": "x" * 4097}]), {"parameters.0.V"}),
    "half a MB of parameters in a task": (spec(parameters=TOO_MANY_BYTES), {"parameters"}),
    "51 tags": (spec(tags={f"k{n}": "v" for n in range(51)}), {"tags"}),
    "a 257-character tag value": (spec(tags={"k": "v" * 257}), {"tags.k"}),
    "a 100 kB instance type": (spec(resources={"instance_types": ["c6i." + "a" * 100_000]}),
                               {"resources.instance_types.0"}),
    "a million GiB": (spec(resources={"memory_gib": 1e6}), {"resources.memory_gib"}),
    "a million in parallel": (spec(max_concurrency=10**6), {"max_concurrency"}),
    "a 31-day timeout": (spec(timeout="31d"), {"timeout"}),
    "a timeout of 10^20 days": (spec(timeout="99999999999999999999d"), {"timeout"}),
    # unknown keys
    "an unknown key": (spec(colour="red"), {"colour"}),
    "an unknown resource": (spec(resources={"cpu": 4}), {"resources.cpu"}),
    "an unknown combine key": (spec(combine={"command": "x", "extra": 1}), {"combine.extra"}),
    "an unknown retry key": (spec(retries={"forever": True}), {"retries.forever"}),
    # hostile names
    "NUL in the name": (spec(name="job\x00"), {"name"}),
    "a newline in the name": (spec(name="job\nINFO forged log line"), {"name"}),
    "an escape sequence in the name": (spec(name="job\x1b[2J"), {"name"}),
    "an RTL override in the name": (spec(name="job\u202eexe.txt"), {"name"}),
    "a 129-character name": (spec(name="a" * 129), {"name"}),
    "a 100 kB name": (spec(name="a" * 100_000), {"name"}),
    "shell in the name": (spec(name="x; rm -rf /"), {"name"}),
    "a command substitution in the name": (spec(name="$(id)"), {"name"}),
    "SQL in the name": (spec(name="x' OR '1'='1"), {"name"}),
    "a template in the name": (spec(name="{{template}}"), {"name"}),
    "a path in the name": (spec(name="../../etc/passwd"), {"name"}),
    "HTML in the name": (spec(name="<script>alert(1)</script>"), {"name"}),
    "an empty name": (spec(name=""), {"name"}),
    # hostile commands: what can never run, or reads otherwise than it runs
    "NUL in the command": (spec(command="echo a\x00b"), {"command"}),
    "NUL in an argv word": (spec(command=["python", "a\x00b"]), {"command"}),
    "a terminal escape in the command": (spec(command="echo \x1b]0;pwned\x07"), {"command"}),
    "an RTL override in the command": (spec(command="echo safe \u202e; rm -rf ~ \u202c"), {"command"}),
    "a blank command": (spec(command="   "), {"command"}),
    "NUL in the setup": (spec(setup="pip install x\x00"), {"setup"}),
    "NUL in the combine command": (spec(combine={"command": "cat *\x00"}), {"combine.command"}),
    "NUL in a parameter value": (spec(parameters=[{"A": "1\x00"}]), {"parameters"}),
    "a lone surrogate in the command": (raw('{"name": "x", "command": "echo \\ud800"}'), {"command"}),
    "a control character in a tag value": (spec(tags={"k": "v\x00"}), {"tags.k"}),
    "an RTL override in a tag key": (spec(tags={"k\u202e": "v"}), {"tags"}),
    "a reserved parameter name": (spec(parameters=[{"AWS_SECRET_ACCESS_KEY": "x"}]), {"parameters"}),
    "a parameter name with shell": (spec(parameters=[{"A;rm -rf /": "x"}]), {"parameters"}),
    # path traversal in outputs
    "a parent output": (spec(outputs=["../x"]), {"outputs.0"}),
    "a deep parent output": (spec(outputs=["a/../../etc/passwd"]), {"outputs.0"}),
    "an absolute output": (spec(outputs=["/etc/passwd"]), {"outputs.0"}),
    "the parent itself": (spec(outputs=[".."]), {"outputs.0"}),
    "a dotted parent output": (spec(outputs=["./.."]), {"outputs.0"}),
    "NUL in an output": (spec(outputs=["a\x00b"]), {"outputs.0"}),
    "a parent combine output": (spec(combine={"command": "x", "outputs": ["../all.csv"]}), {"combine.outputs.0"}),
    # inputs that are not s3
    "an http input": (spec(inputs=["http://example.com/a"]), {"inputs.0"}),
    "a file input": (spec(inputs=["file:///etc/passwd"]), {"inputs.0"}),
    "a local input": (spec(inputs=["/etc/passwd"]), {"inputs.0"}),
    "a bucket without key": (spec(inputs=["s3://bucket/"]), {"inputs.0"}),
    "an upper-case scheme": (spec(inputs=["S3://bucket/a"]), {"inputs.0"}),
    "a newline in an input": (spec(inputs=["s3://bucket/a\nb"]), {"inputs.0"}),
    # negative, NaN and infinite numbers
    "negative vcpus": (spec(resources={"vcpus": -1}), {"resources.vcpus"}),
    "negative memory": (spec(resources={"memory_gib": -0.5}), {"resources.memory_gib"}),
    "NaN memory": (raw('{"name": "x", "command": "x", "resources": {"memory_gib": NaN}}'), {"resources.memory_gib"}),
    "infinite memory": (raw('{"name": "x", "command": "x", "resources": {"memory_gib": Infinity}}'),
                        {"resources.memory_gib"}),
    "infinite tasks": (raw('{"name": "x", "command": "x", "tasks": -Infinity}'), {"tasks"}),
    "NaN timeout": (raw('{"name": "x", "command": "x", "timeout": NaN}'), {"timeout"}),
    "negative gpus": (spec(resources={"gpus": -1}), {"resources.gpus"}),
    "negative retries": (spec(retries={"program": -1}), {"retries.program"}),
    "exit code 0": (spec(retries={"exit_codes": [0]}), {"retries.exit_codes.0"}),
    "exit code 256": (spec(retries={"exit_codes": [256]}), {"retries.exit_codes.0"}),
    "no concurrency": (spec(max_concurrency=0), {"max_concurrency"}),
    "a negative timeout": (spec(timeout=-5), {"timeout"}),
    "a negative duration": (spec(timeout="-5m"), {"timeout"}),
    "a zero task runtime": (spec(task_runtime=0), {"task_runtime"}),
    "a 5-second checkpoint interval": (spec(checkpoint={"interval": 5}), {"checkpoint.interval"}),
    # booleans where numbers are expected
    "tasks true": (spec(tasks=True), {"tasks"}),
    "vcpus true": (spec(resources={"vcpus": True}), {"resources.vcpus"}),
    "memory false": (spec(resources={"memory_gib": False}), {"resources.memory_gib"}),
    "gpus true": (spec(resources={"gpus": True}), {"resources.gpus"}),
    "concurrency true": (spec(max_concurrency=True), {"max_concurrency"}),
    "program retries true": (spec(retries={"program": True}), {"retries.program"}),
    "environment retries true": (spec(retries={"environment": True}), {"retries.environment"}),
    "exit codes true": (spec(retries={"exit_codes": [True]}), {"retries.exit_codes.0"}),
    "timeout true": (spec(timeout=True), {"timeout"}),
    "task runtime true": (spec(task_runtime=True), {"task_runtime"}),
    "checkpoint interval true": (spec(checkpoint={"interval": True}), {"checkpoint.interval"}),
    # deadlines without a time zone (or not a time)
    "a naive deadline": (spec(deadline="2026-12-01T12:00:00"), {"deadline"}),
    "a date deadline": (spec(deadline="2026-12-01"), {"deadline"}),
    "a naive deadline with a space": (spec(deadline="2026-12-01 12:00"), {"deadline"}),
    "a word deadline": (spec(deadline="tomorrow"), {"deadline"}),
    "month 13": (spec(deadline="2026-13-01T00:00:00Z"), {"deadline"}),
    # duplicate keys: JSON parsers disagree on which one wins
    "the name twice": (raw('{"name": "x", "command": "x", "name": "y"}'), {"name"}),
    "the command twice": (raw('{"name": "x", "command": "true", "command": "rm -rf ~"}'), {"command"}),
    "vcpus twice": (raw('{"name": "x", "command": "x", "resources": {"vcpus": 1, "vcpus": 2}}'), {"resources.vcpus"}),
    "a parameter twice": (raw('{"name": "x", "command": "x", "parameters": [{"A": "1", "A": "2"}]}'),
                          {"parameters.0.A"}),
    # two ways to split
    "tasks and parameters": (spec(tasks=2, parameters=[{"A": "1"}]), {"(body)"}),
}


# What the validator's own names look like: never shown to a user.
PYDANTIC_INTERNALS = re.compile(r"function-(after|before|plain|wrap)|functools|<function|constrained-|literal\[|"
                                r"\[key\]|Value error,|Input should")


def announced(module_env: Any) -> int:
    """How many control messages wait on the scheduler's queue (SNS delivers to it at once in moto)."""
    session, env = module_env
    url = json.loads(env["SPOTRUN_QUEUE_URLS"])["scheduler"]
    attributes = session.client("sqs", region_name="us-east-1").get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def test_the_table_starts_empty(module_cp: Any) -> None:
    """The corpus runs first, so the table holds no job, task or timeline item at all while it runs."""
    assert job_items(module_cp) == []


@pytest.mark.parametrize(("body", "fields"), CORPUS.values(), ids=CORPUS.keys())
def test_a_wrong_spec_is_a_400_naming_the_field_and_nothing_is_stored(module_env: Any, module_cp: Any, context: Any,
                                                                      body: Any, fields: set[str]) -> None:
    stored, messages = job_items(module_cp), announced(module_env)
    status, answer, headers = submit(module_cp, context, body)
    assert status == 400, answer
    assert headers["content-type"] == "application/json"
    problems = answer["problems"]
    assert all(set(p) == {"field", "problem"} and p["problem"] for p in problems), problems
    assert all(named(field, problems) for field in fields), problems
    assert not [p for p in problems if PYDANTIC_INTERNALS.search(p["field"] + " " + p["problem"])], problems
    assert job_items(module_cp) == stored, "a rejected spec left items in the table"
    assert announced(module_env) == messages, "a rejected spec was announced to the scheduler"


@pytest.mark.parametrize("body", [
    "[" * 100_000, '{"name": "x", "command": "x", "tags": ' + "[" * 5_000 + "]" * 5_000 + "}",
    "", "not json", "[1, 2]", "null", '"a string"', "\ufeff{}", '{"name": "x", "command": "x"',
    '{"name": "x", "command": "x", "tasks": 1' + "0" * 5_000 + "}",
], ids=["100k nested arrays", "nested tags", "empty", "not json", "array", "null", "string", "BOM", "truncated",
        "a 5001-digit number"])
def test_a_body_that_is_not_a_json_object_is_a_400_not_a_crash(module_cp: Any, context: Any, body: str) -> None:
    stored = job_items(module_cp)
    status, answer, headers = submit(module_cp, context, body)
    assert status == 400, answer
    assert headers["content-type"] == "application/json" and answer["error"]
    assert job_items(module_cp) == stored


def test_a_deeply_nested_upload_request_is_a_400_not_a_crash(module_cp: Any, context: Any) -> None:
    status, answer, _ = submit(module_cp, context, "[" * 100_000, path="/uploads")
    assert status == 400, answer


def test_a_big_spec_that_fits_the_store_is_accepted(module_cp: Any, context: Any) -> None:
    """The byte limits are not tighter than real specs need (this one stores 217 kB, a task's variables 262 kB)."""
    big = spec(command="c" * 16_384, setup="s" * 16_384, inputs=[f"s3://bucket/{n:04d}/" + "k" * 100 for n in range(1000)],
               outputs=[f"{n:03d}/" + "o" * 500 for n in range(100)], tags={f"k{n:02d}": "v" * 256 for n in range(50)},
               parameters=[{f"V{n:02d}": "x" * 4096 for n in range(64)}, {"A": "1"}])
    status, answer, _ = submit(module_cp, context, big)
    assert status == 202, answer
    assert answer["tasks"] == 2


HOSTILE = ("set -eu; echo \"$(id)\" `uname -a` && cat /etc/passwd | grep root > /tmp/x 2>&1 || true\n"
           "python -c 'import os; os.system(\"ls\")' ; echo ${HOME} $((1+1)) ~ * ? [a-z] {a,b}\n"
           "echo '{{template}}' \"{0}\" %s %n %x \\x41 \\u0041\tsqlite3 db \"DROP TABLE jobs; --\" \"' OR '1'='1\"\n"
           "echo '<script>alert(1)</script>' '<img src=x onerror=alert(1)>' \"&lt;\" résumé 日本語 🚀\r\n")


def test_a_hostile_but_valid_command_is_stored_verbatim_and_never_served_as_html(module_cp: Any, context: Any) -> None:
    status, accepted, _ = submit(module_cp, context, spec(command=HOSTILE, setup=HOSTILE, tags={"note": "<b>bold</b> ' \"; --"},
                                                  combine={"command": ["sh", "-c", HOSTILE]}))
    assert status == 202, accepted
    job_id = accepted["job_id"]

    # Verbatim in the store (the job item's spec attribute) ...
    [item] = [i for i in table_items(module_cp) if i["pk"]["S"] == f"JOB#{job_id}"]
    stored = json.loads(item["spec"]["S"])
    assert stored["command"] == stored["setup"] == HOSTILE and stored["combine"]["command"] == ["sh", "-c", HOSTILE]

    # ... and through the API, always as JSON.
    for path in (f"/jobs/{job_id}", "/jobs", f"/jobs/{job_id}/events", f"/jobs/{job_id}/tasks"):
        status, body, headers = submit(module_cp, context, None, method="GET", path=path)
        assert status == 200 and headers["content-type"] == "application/json", (path, body)
    job = submit(module_cp, context, None, method="GET", path=f"/jobs/{job_id}")[1]
    assert job["spec"]["command"] == job["spec"]["setup"] == HOSTILE
    assert job["spec"]["tags"] == {"note": "<b>bold</b> ' \"; --"}


@pytest.mark.parametrize("path", ["/<script>alert(1)</script>", "/jobs/<img src=x onerror=alert(1)>",
                                  "/jobs/j-00000000000000000000/<svg onload=alert(1)>"])
def test_errors_that_echo_the_path_are_json_not_html(module_cp: Any, context: Any, path: str) -> None:
    for method in ("GET", "POST"):
        status, answer, headers = submit(module_cp, context, None, method=method, path=path)
        assert status in (400, 404) and headers["content-type"] == "application/json", answer


def test_a_rejected_hostile_name_is_not_echoed(module_cp: Any, context: Any) -> None:
    status, answer, _ = submit(module_cp, context, spec(name="<script>alert(1)</script>"))
    assert status == 400 and "<script>" not in json.dumps(answer)


def test_many_wrong_parameter_sets_make_a_short_error_that_counts_the_rest() -> None:
    from spotrun.domain.spec import MAX_PROBLEMS_REPORTED, SpecError, parse_spec

    spec = {"name": "sweep", "command": ["python", "x.py"], "parameters": [{"SEED": [i]} for i in range(5_000)]}
    with pytest.raises(SpecError) as raised:
        parse_spec(spec)
    problems = raised.value.problems
    assert len(problems) == MAX_PROBLEMS_REPORTED + 1
    assert problems[0]["field"] == "parameters.0.SEED"
    assert problems[-1] == {"field": "(more)", "problem": f"{5_000 - MAX_PROBLEMS_REPORTED} more problems like these"}
