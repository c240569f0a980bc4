"""Reading a job file (YAML or JSON), finding the local input files it names, and validating it locally
with the API's own model (`spotrun.domain.spec`) before anything is uploaded."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml


class JobFileError(Exception):
    """The job file cannot be used; the message says why, for the user."""


class InvalidSpec(JobFileError):
    """The job file's spec would be refused by the API; `problems` names each wrong field as the API does."""

    def __init__(self, name: str, problems: list[dict[str, str]]):
        self.problems = problems
        super().__init__(f"{name} is not a valid job spec")


@dataclass(frozen=True)
class LocalInput:
    position: int  # its index in `inputs:`
    written: str  # as written in the file
    path: Path  # resolved against the job file's directory


def load_job_file(path: str) -> tuple[dict[str, Any], Path]:
    """The job spec as a dict, and the directory its relative input paths are resolved against.

    `-` reads standard input. A `.json` file is parsed as JSON, anything else as YAML (of which
    JSON is a subset). Only the file's syntax is checked here; `check_spec` checks the fields.
    """
    if path == "-":
        text, name, base = sys.stdin.read(), "<stdin>", Path.cwd()
    else:
        file = Path(path)
        if not file.exists():
            raise JobFileError(f"job file not found: {path}")
        if file.is_dir():
            raise JobFileError(f"{path} is a directory, not a job file")
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise JobFileError(f"cannot read job file {path}: {error}") from error
        name, base = path, file.resolve().parent
    document = _parse(text, name, as_json=name.endswith(".json"))
    if document is None:
        raise JobFileError(f"{name} is empty: a job file is a mapping with at least `name` and `command`")
    if not isinstance(document, dict):
        raise JobFileError(f"{name} must be a mapping of job fields (name, command, ...), "
                           f"not a {_kind(document)}")
    return _plain(document), base


def _parse(text: str, name: str, as_json: bool) -> Any:
    if as_json:
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise JobFileError(f"{name} is not valid JSON: line {error.lineno}, column {error.colno}: "
                               f"{error.msg}") from error
    try:
        return _parameters_as_written(yaml.safe_load(text), text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        context = getattr(error, "context", None)
        detail = f"{problem} ({context})" if context else problem
        raise JobFileError(f"{name} is not valid YAML: {where}{detail}") from error


_NULL = "tag:yaml.org,2002:null"


def _parameters_as_written(document: Any, text: str) -> Any:
    """Parameters become environment variables, which are text: a value YAML would read as a number or a
    boolean (`SEED: 007`, `FAST: yes`, `RATE: 1e3`) is kept as written ('007', 'yes', '1e3')."""
    if not isinstance(document, dict) or not isinstance(document.get("parameters"), list):
        return document
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    node = next((value for key, value in getattr(root, "value", [])
                 if isinstance(key, yaml.ScalarNode) and key.value == "parameters"), None)
    if not isinstance(node, yaml.SequenceNode):
        return document
    for entry, mapping in zip(document["parameters"], node.value, strict=False):
        if not isinstance(entry, dict) or not isinstance(mapping, yaml.MappingNode):
            continue
        for key, value in mapping.value:
            plain = isinstance(value, yaml.ScalarNode) and value.style is None and value.tag != _NULL
            if plain and isinstance(key, yaml.ScalarNode) and key.value in entry and not isinstance(entry[key.value], str):
                entry[key.value] = value.value
    return document


def _kind(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(value), type(value).__name__)


def _plain(value: Any) -> Any:
    """YAML turns unquoted timestamps into datetimes; the API wants the JSON (ISO 8601) text."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value


def local_inputs(spec: dict[str, Any], base: Path) -> list[LocalInput]:
    """The entries of `inputs:` that are local paths (anything without a URI scheme like s3://)."""
    inputs = spec.get("inputs")
    if not isinstance(inputs, list):
        return []
    found = []
    for position, item in enumerate(inputs):
        if not isinstance(item, str) or "://" in item:
            continue  # s3:// URIs go to the API as they are; anything else is the API's to judge
        path = Path(item).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.exists():
            raise JobFileError(f"input file not found: {item} (looked at {path})")
        if not path.is_file():
            raise JobFileError(f"input {item} is not a file (upload files one by one, or archive a directory)")
        found.append(LocalInput(position, item, path))
    return found


def with_uploaded(spec: dict[str, Any], uris: dict[int, str]) -> dict[str, Any]:
    """The spec with the local inputs at these positions replaced by their s3:// URIs."""
    inputs = list(spec.get("inputs") or [])
    for position, uri in uris.items():
        inputs[position] = uri
    return {**spec, "inputs": inputs} if uris else spec


# Where a local input will be once uploaded: `POST /uploads` answers s3://<bucket>/uploads/<16 hex>/<16 hex>/<name>,
# with the file name made safe and cut at 200 characters (spotrun.jobs.upload_url). The bucket's name is the
# deployment's; this one is as long as S3 allows, so a spec that passes here is not too long there.
_PLACEHOLDER_BUCKET = "spotrun-data-" + "x" * 50


def upload_uri(path: Path) -> str:
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in path.name)[:200] or "input"
    return f"s3://{_PLACEHOLDER_BUCKET}/uploads/{'0' * 16}/{'0' * 16}/{safe}"


def check_spec(spec: dict[str, Any], uploads: list[LocalInput], name: str) -> Any:
    """The spec as the API will validate it, local inputs standing for the URIs their upload will give them:
    the `JobSpec`, or InvalidSpec naming every wrong field (nothing has been uploaded yet)."""
    from spotrun.domain.spec import SpecError, load_document, parse_spec

    document = with_uploaded(spec, {item.position: upload_uri(item.path) for item in uploads})
    try:
        return parse_spec(load_document(json.dumps(document)))  # the API's own path: JSON text, then the model
    except SpecError as error:
        raise InvalidSpec(name, error.problems) from None
