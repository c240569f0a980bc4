"""docs/jobs.md against the code: every field of the spec model with its default and limits, the job files
it and the README show, and its complete `signal` program run under the real checkpointer."""

from __future__ import annotations

import json
import os
import re
import shlex
import time
import typing
from pathlib import Path
from typing import Any

import annotated_types
import pytest
import yaml
from pydantic import BaseModel, StringConstraints
from pydantic.fields import FieldInfo

from spotrun.domain.spec import JobSpec
from spotrun_cli.jobfile import check_spec, local_inputs
from spotrun_worker.checkpointers import SignalCheckpointer

REPO = Path(__file__).resolve().parents[2]
JOBS_MD = REPO / "docs" / "jobs.md"
README = REPO / "README.md"


# ---------------------------------------------------------------------- the model's fields

def _submodel(annotation: Any) -> type[BaseModel] | None:
    candidates = [annotation, *typing.get_args(annotation)]
    return next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)


def model_fields(model: type[BaseModel] = JobSpec, prefix: str = "") -> dict[str, FieldInfo]:
    """Dotted path -> field, for every field a user writes (sections like `resources` are not rows; an
    optional section like `combine` is, as are its fields)."""
    found = {}
    for name, info in model.model_fields.items():
        sub = _submodel(info.annotation)
        if sub is None:
            found[prefix + name] = info
            continue
        if info.default is None:
            found[prefix + name] = info
        found.update(model_fields(sub, f"{prefix}{name}."))
    return found


def limits_of(info: FieldInfo) -> tuple[set[float], set[str]]:
    """The numbers its constraints name (bounds and lengths, nested ones too) and its allowed literals."""
    numbers: set[float] = set()
    literals: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, FieldInfo):
            for item in node.metadata:
                visit(item)
        elif isinstance(node, annotated_types.Ge | annotated_types.Gt | annotated_types.Le | annotated_types.Lt):
            numbers.add(next(getattr(node, a) for a in ("ge", "gt", "le", "lt") if hasattr(node, a)))
        elif isinstance(node, annotated_types.MinLen | annotated_types.MaxLen):
            numbers.add(getattr(node, "min_length", None) or node.max_length)  # type: ignore[union-attr]
        elif isinstance(node, StringConstraints):
            numbers.update(n for n in (node.min_length, node.max_length) if n is not None)
        elif typing.get_origin(node) is typing.Literal:
            literals.update(str(a) for a in typing.get_args(node))
        elif typing.get_origin(node) is typing.Annotated:
            base, *extras = typing.get_args(node)
            visit(base)
            for extra in extras:
                visit(extra)
        else:
            for argument in typing.get_args(node):
                visit(argument)

    visit(info.annotation)
    for item in info.metadata:
        visit(item)
    return numbers, literals


def documented_fields() -> dict[str, dict[str, str]]:
    """The rows of the field table in docs/jobs.md: path -> its cells."""
    rows = {}
    for line in JOBS_MD.read_text().splitlines():
        match = re.match(r"^\| `([a-z_.]+)` \|(.*)\|$", line)
        if match:
            cells = [cell.strip() for cell in match.group(2).split("|")]
            assert len(cells) == 4, f"a row of the field table has {len(cells) + 1} cells: {line}"
            rows[match.group(1)] = dict(zip(("type", "default", "limits", "what"), cells, strict=True))
    return rows


def rendered_default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True)
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    return f"`{json.dumps(value) if isinstance(value, list | dict) else value}`"


def test_every_field_of_the_model_is_documented_and_nothing_else() -> None:
    assert set(documented_fields()) == set(model_fields())


@pytest.mark.parametrize("path", sorted(model_fields()))
def test_each_documented_default_and_limit_is_the_models(path: str) -> None:
    info, row = model_fields()[path], documented_fields()[path]
    default = rendered_default(info)
    assert row["default"].startswith(default) or (default == "none" and row["default"] == "none (1 task)") \
        or (default == "required" and row["default"].startswith("required")), (row["default"], default)
    numbers, literals = limits_of(info)
    same_as = re.fullmatch(r"as `([a-z_.]+)`", row["limits"])  # "as `command`": that row's limits
    limits = (documented_fields()[same_as.group(1)] if same_as else row)["limits"].replace(",", "")
    for number in numbers:
        shown = f"{number:g}" if isinstance(number, float) else str(number)
        assert re.search(rf"(?<![\d.]){re.escape(shown)}(?![\d.])", limits), f"{path}: limit {number} not in {limits!r}"
    for literal in literals:
        assert f"`{literal}`" in row["type"] + row["limits"], f"{path}: value {literal!r} not named"


# ---------------------------------------------------------------------- the job files the docs show

def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def test_the_readme_job_file_is_valid(tmp_path: Path) -> None:
    [example] = [b for b in _blocks(README.read_text(), "yaml") if b.startswith("name:")]
    document = yaml.safe_load(example)
    for name in ("estimate_pi.py", "merge.py"):  # its local inputs, as `spotrun submit` would upload them
        (tmp_path / name).write_text("")
    spec = check_spec(document, local_inputs(document, tmp_path), "README.md")
    assert spec.task_count == 3 and spec.combine is not None and spec.checkpoint.method == "dmtcp"
    assert len(spec.inputs) == 3 and spec.command.startswith("python3 inputs/")


def test_the_job_files_in_docs_jobs_are_valid(tmp_path: Path) -> None:
    blocks = [b for b in _blocks(JOBS_MD.read_text(), "yaml") if b.startswith("name:")]
    assert blocks
    for block in blocks:
        spec = yaml.safe_load(block)
        (tmp_path / "count.py").write_text("")  # its local input, as `spotrun submit` would upload it
        check_spec(spec, local_inputs(spec, tmp_path), "docs/jobs.md")


# ---------------------------------------------------------------------- the complete signal program

def test_the_signal_program_in_the_docs_resumes_where_its_checkpoint_left_it(tmp_path: Path) -> None:
    """The job file's own command (with a shorter count), as the agent runs it: in the work directory with
    the program in inputs/, checkpointed, stopped, and restored into another attempt's directory."""
    [program] = _blocks(JOBS_MD.read_text().split("### A complete program for `signal`", 1)[1], "python")[:1]
    job = yaml.safe_load(_blocks(JOBS_MD.read_text(), "yaml")[0])
    words = shlex.split(job["command"])
    assert words[1] == "inputs/count.py"
    command = shlex.join([*words[:-1], "40"])  # 40 steps of 0.1 s

    def attempt(number: int) -> tuple[Path, dict[str, str]]:
        work = tmp_path / f"attempt-{number}"
        (work / "inputs").mkdir(parents=True)
        (work / "inputs" / "count.py").write_text(program)
        (work / ".spotrun").mkdir()
        env = {**os.environ, "SPOTRUN_TASK_INDEX": "0", "SPOTRUN_TASK_COUNT": "1", "SPOTRUN_WORK_DIR": str(work),
               "SPOTRUN_PROGRESS_FILE": str(work / ".spotrun" / "progress")}
        return work, env

    work, env = attempt(1)
    first = SignalCheckpointer(job["checkpoint"].get("signal", "SIGUSR1"))
    first.start(command, env, work, work / ".spotrun" / "attempt-1.log")
    try:
        time.sleep(1.0)
        files = first.checkpoint(tmp_path / "checkpoint", timeout=10)
        saved = json.loads((tmp_path / "checkpoint" / "state.json").read_text())["step"]
        assert [f.name for f in files] == ["state.json"] and 0 < saved < 40
    finally:
        first.stop(grace_seconds=0)  # the instance is gone
    assert not (work / "result.json").exists()

    work, env = attempt(2)
    second = SignalCheckpointer()
    second.start(command, env, work, work / ".spotrun" / "attempt-2.log", restore_from=tmp_path / "checkpoint")
    assert second.wait(30) == 0
    assert json.loads((work / "result.json").read_text()) == {"steps": 40, "task": "0"}
    assert f"restored at step {saved}" in (work / ".spotrun" / "attempt-2.log").read_text()
    assert float((work / ".spotrun" / "progress").read_text()) == 1.0
