"""Spec errors in words: the field, the limit and the value given, never the validator's internals."""

from __future__ import annotations

import pytest

from spotrun.domain.spec import SpecError, parse_spec

GOOD = {"name": "sweep", "command": "python x.py"}


def problems(**changes: object) -> list[dict[str, str]]:
    with pytest.raises(SpecError) as raised:
        parse_spec({**GOOD, **changes})
    return raised.value.problems


@pytest.mark.parametrize(("changes", "expected"), [
    ({"checkpoint": {"interval": 5}}, [("checkpoint.interval", "must be 'auto' or at least 30, got 5")]),
    ({"checkpoint": {"interval": 90_000}}, [("checkpoint.interval", "must be 'auto' or at most 86400, got 90000")]),
    ({"command": 5}, [("command", "must be text or a list, got 5")]),
    ({"command": ["python", 3]}, [("command.1", "must be text, got 3")]),
    ({"command": []}, [("command", "must have at least 1 entry")]),
    ({"resources": {"vcpus": 1000}}, [("resources.vcpus", "must be at most 448, got 1000")]),
    ({"tasks": 0}, [("tasks", "must be at least 1, got 0")]),
    ({"name": "x" * 200}, [("name", "must be letters, digits, '.', '_' and '-', starting with a letter or digit, "
                                    "at most 128 characters, got a text of 200 characters")]),
    ({"inputs": ["data.csv"]}, [("inputs.0", "must be an S3 URI like s3://bucket/key (a local path is uploaded by "
                                              "the CLI), got \"data.csv\"")]),
    ({"colour": "red"}, [("colour", "is not a field here (a typo?)")]),
    ({"name": "job\x1b[2J\u202e"}, [("name", "must be letters, digits, '.', '_' and '-', starting with a letter or "
                                             "digit, at most 128 characters, got \"job\\u001b[2J\\u202e\"")]),
    ({"parameters": [{"TOKEN": "s" * 5000}]}, [("parameters.0.TOKEN", "must be at most 4096 characters (it has 5000)")]),
    ({"tags": {"team": ["a"]}}, [("tags.team", "must be text")]),
])
def test_each_problem_names_the_field_the_limit_and_the_value(changes, expected):
    assert [(p["field"], p["problem"]) for p in problems(**changes)] == expected


def test_values_of_parameters_and_tags_are_never_repeated_back():
    found = problems(parameters=[{"PASSWORD": "hunter2" * 700}], tags={"k": "secret\x00"})
    assert found and not any("hunter2" in p["problem"] or "secret" in p["problem"] for p in found)


@pytest.mark.parametrize(("written", "taken"), [(7, "7"), (True, "true"), (False, "false"), (1.5, "1.5"), ("x", "x")])
def test_a_parameter_written_as_a_number_or_true_false_is_taken_as_its_text(written, taken):
    assert parse_spec({**GOOD, "parameters": [{"SEED": written}]}).parameters == [{"SEED": taken}]
