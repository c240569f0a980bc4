"""A job's spec as its item keeps it, and back: one conversion, used by every use case."""

from __future__ import annotations

from spotrun.domain.spec import agent_form, from_stored, parse_spec, stored_form


def test_the_stored_form_keeps_the_parameters_count_not_the_parameters():
    spec = parse_spec({"name": "sweep", "command": "x", "parameters": [{"SEED": "1"}, {"SEED": "2"}],
                       "max_concurrency": 3, "retries": {"program": 2}})
    stored = stored_form(spec)
    assert "parameters" not in stored and stored["parameter_count"] == 2
    back = from_stored(stored)
    assert (back.task_count, back.max_concurrency, back.retries.program) == (2, 3, 2)
    assert back.parameters is None
    assert "parameter_count" not in agent_form(stored) and agent_form(stored)["command"] == "x"


def test_a_spec_without_parameters_comes_back_as_it_was_stored():
    spec = parse_spec({"name": "one", "command": ["python", "x.py"], "tasks": 4})
    assert stored_form(spec) == agent_form(stored_form(spec))
    assert from_stored(stored_form(spec)) == spec
