"""The job spec: the one validated model users write (YAML or JSON) and the API's request body.

Every size and count has a limit so that one submission cannot exhaust the store or a handler;
every field that is wrong is named in the error (pydantic collects them all).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from spotrun.domain.problems import MAX_PROBLEMS_REPORTED as MAX_PROBLEMS_REPORTED  # the API, the CLI, the tests
from spotrun.domain.problems import problems_of as problems_of

# A sweep by count is stored lazily (tasks get their items as they are admitted), so its size costs the
# submit nothing; parameter sets are stored with their tasks at submit and arrive in the request's body.
MAX_TASKS = 1_000_000
MAX_PARAMETER_SETS = 100_000
MAX_INPUTS = 1_000
MAX_OUTPUT_PATTERNS = 100
MAX_OUTPUT_PATTERN_CHARS = 512
MAX_COMMAND_CHARS = 16_384
MAX_PARAM_VARS = 64
MAX_PARAM_VALUE_CHARS = 4_096
MAX_TAGS = 50
MAX_TIMEOUT_SECONDS = 30 * 24 * 3600
MAX_NODES = 64  # instances of one gang task
# What one job may take in the store: its spec is one attribute of the job's item and each task's parameters
# live in the task's item, and a DynamoDB item holds at most 400 KB (the rest is left for what runs add).
MAX_SPEC_BYTES = 256 * 1024
MAX_TASK_PARAMETER_BYTES = 300_000

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
RESERVED_ENV_PREFIXES = ("SPOTRUN_", "AWS_", "DMTCP_")
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> Any:
    """Accept seconds as a number or a string like '90', '30m', '2h', '1d'."""
    if isinstance(value, bool):
        raise ValueError("a duration is a whole number of seconds or like '30m', '2h', '1d', not true/false")
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError("a duration is a whole number of seconds or like '30m', '2h', '1d'")
        return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    return value


def _a_number(value: Any) -> Any:
    """A number must be a JSON number, as the document says: not "3" for 3, nor true for 1."""
    if isinstance(value, bool | str):
        raise ValueError("a number is expected, not a string or true/false")
    return value


def _env_text(value: Any) -> Any:
    """A task's parameters become environment variables, which are text: a number or true/false written
    without quotes (YAML's `SEED: 7`, JSON's `"SEED": 7`) is taken as its text ('7', 'true')."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


# What the document says a parameter value is: text, or a number or true/false taken as text.
ParameterValue = Annotated[
    str, BeforeValidator(_env_text), StringConstraints(max_length=MAX_PARAM_VALUE_CHARS),
    WithJsonSchema({"anyOf": [{"type": "string", "maxLength": MAX_PARAM_VALUE_CHARS}, {"type": "number"},
                              {"type": "boolean"}]}),
]
Int = Annotated[int, BeforeValidator(_a_number)]
Float = Annotated[float, BeforeValidator(_a_number)]
# Program text runs through a shell or execve and shows in terminals: no NUL (it cannot be passed on),
# no other control characters than tab and line breaks, no bidirectional overrides (text that reads
# differently from what runs).
_NOT_PROGRAM_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u202a-\u202e\u2066-\u2069]")


def _program_text(value: str) -> str:
    found = _NOT_PROGRAM_TEXT.search(value)
    if found:
        raise ValueError(f"character U+{ord(found.group()):04X} is not allowed in a command")
    return value


def _runnable(value: str | list[str]) -> str | list[str]:
    if isinstance(value, str) and len(value) > MAX_COMMAND_CHARS:
        raise ValueError(f"the command is longer than {MAX_COMMAND_CHARS} characters")
    for word in [value] if isinstance(value, str) else value:
        _program_text(word)
    return value


Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
S3Uri = Annotated[
    str, StringConstraints(pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/[^\x00-\x1f]{1,1024}$")
]
# Output patterns are relative to the task's work directory and may not climb out of it.
def _stays_inside(pattern: str) -> str:
    if ".." in pattern.split("/"):
        raise ValueError("an output path may not contain '..'")
    return pattern


OutputPattern = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_OUTPUT_PATTERN_CHARS, pattern=r"^[^/\x00-\x1f][^\x00-\x1f]*$"),
    AfterValidator(_stays_inside),
]
Seconds = Annotated[int, BeforeValidator(parse_duration), Field(ge=1, le=MAX_TIMEOUT_SECONDS)]
TagKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:/=+@ -]{1,128}$")]
TagValue = Annotated[str, StringConstraints(max_length=256, pattern=r"^[^\x00-\x1f]*$")]
Command = Annotated[
    str | Annotated[list[Annotated[str, StringConstraints(max_length=MAX_COMMAND_CHARS)]], Field(min_length=1, max_length=256)],
    AfterValidator(_runnable),
    Field(description="A shell string, or an argv list run without a shell."),
]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Resources(StrictModel):
    vcpus: Int = Field(1, ge=1, le=448)
    memory_gib: Float = Field(2.0, gt=0, le=24_576)
    gpus: Int = Field(0, ge=0, le=16)
    instance_types: list[Annotated[str, StringConstraints(max_length=64, pattern=r"^[a-z0-9-]+(\.[a-z0-9*-]+)?$")]] = Field(
        default_factory=list,
        max_length=100,
        description="Allowed types ('c6i.large') or families ('c6i'); empty means any that fits.",
    )
    architecture: Literal["x86_64", "arm64"] = "x86_64"


class CheckpointSpec(StrictModel):
    method: Literal["dmtcp", "signal", "none"] = "dmtcp"
    interval: Literal["auto"] | Annotated[Int, Field(ge=30, le=86_400)] = "auto"
    signal: Literal["SIGUSR1", "SIGUSR2", "SIGTERM", "SIGINT", "SIGHUP"] = Field(
        "SIGUSR1", description="Sent to the program by the 'signal' checkpointer."
    )


class RetrySpec(StrictModel):
    program: Int = Field(0, ge=0, le=10, description="Extra attempts after the program itself failed.")
    environment: Int = Field(
        5, ge=0, le=100, description="Attempts after faults of the environment (reclaims, lost instances)."
    )
    exit_codes: list[Annotated[Int, Field(ge=1, le=255)]] = Field(
        default_factory=list,
        max_length=255,
        description="Program exit codes worth a retry; empty means any non-zero code.",
    )


class CombineSpec(StrictModel):
    command: Command
    outputs: list[OutputPattern] = Field(default_factory=list, max_length=MAX_OUTPUT_PATTERNS)
    allow_partial: bool = Field(False, strict=True, description="Run even when some tasks failed.")


class JobSpec(StrictModel):
    name: Name
    command: Command
    setup: Annotated[str, StringConstraints(max_length=MAX_COMMAND_CHARS), AfterValidator(_program_text)] | None = None
    inputs: list[S3Uri] = Field(default_factory=list, max_length=MAX_INPUTS)
    outputs: list[OutputPattern] = Field(default_factory=list, max_length=MAX_OUTPUT_PATTERNS)
    tasks: Int | None = Field(None, ge=1, le=MAX_TASKS)
    parameters: list[dict[str, ParameterValue]] | None = Field(
        None, min_length=1, max_length=MAX_PARAMETER_SETS,
        description="One task per entry: its environment variables (numbers and true/false are taken as text).",
    )
    combine: CombineSpec | None = None
    resources: Resources = Field(default_factory=Resources)
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    retries: RetrySpec = Field(default_factory=RetrySpec)
    nodes: Int = Field(
        1, ge=1, le=MAX_NODES, description="Instances each task runs on together (a gang: one pool, one zone, "
        "checkpointed and replaced as one). 1: a task is one instance.",
    )
    placement: Literal["zone", "cluster"] = Field(
        "zone", description="Where a gang's instances go: 'zone' (one availability zone, the default) or "
        "'cluster' (also one cluster placement group of that zone: low latency between nodes, less spot capacity).",
    )
    max_concurrency: Int = Field(100, ge=1, le=10_000)
    timeout: Seconds | None = None
    deadline: datetime | None = None
    task_runtime: Seconds | None = Field(
        None, description="How long one task runs uninterrupted, for the deadline policy (else learned from "
        "the job's finished tasks).",
    )
    tags: dict[TagKey, TagValue] = Field(default_factory=dict, max_length=MAX_TAGS)

    @field_validator("command")
    @classmethod
    def _command_not_blank(cls, value: str | list[str]) -> str | list[str]:
        text = value if isinstance(value, str) else value[0]
        if not text.strip():
            raise ValueError("the command is empty")
        if isinstance(value, str) and len(value) > MAX_COMMAND_CHARS:
            raise ValueError(f"the command is longer than {MAX_COMMAND_CHARS} characters")
        return value

    @field_validator("parameters")
    @classmethod
    def _parameter_names(cls, value: list[dict[str, str]] | None) -> list[dict[str, str]] | None:
        for position, mapping in enumerate(value or []):
            if len(mapping) > MAX_PARAM_VARS:
                raise ValueError(f"parameters[{position}] has more than {MAX_PARAM_VARS} variables")
            for name, text in mapping.items():
                if not ENV_NAME.match(name):
                    raise ValueError(f"parameters[{position}]: {name!r} is not an environment variable name")
                if name.startswith(RESERVED_ENV_PREFIXES):
                    raise ValueError(f"parameters[{position}]: {name!r} uses a reserved prefix")
                if "\x00" in text:
                    raise ValueError(f"parameters[{position}]: the value of {name} contains a NUL character")
            size = sum(len(name) + len(text.encode("utf-8", "surrogatepass")) for name, text in mapping.items())
            if size > MAX_TASK_PARAMETER_BYTES:
                raise ValueError(f"parameters[{position}] takes {size} bytes; at most {MAX_TASK_PARAMETER_BYTES} are allowed")
        return value

    @field_validator("deadline", mode="before")
    @classmethod
    def _deadline_text(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str | datetime):
            raise ValueError("the deadline is a date and time with a time zone, e.g. 2026-12-01T12:00:00Z")
        return value

    @field_validator("deadline")
    @classmethod
    def _deadline_aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("the deadline needs a time zone, e.g. 2026-12-01T12:00:00Z")
        return value

    @model_validator(mode="after")
    def _one_way_to_split(self) -> JobSpec:
        if self.tasks is not None and self.parameters is not None:
            raise ValueError("give either 'tasks' (a count) or 'parameters' (a list), not both")
        return self

    @model_validator(mode="after")
    def _gang_method(self) -> JobSpec:
        if self.placement == "cluster" and self.nodes == 1:
            raise ValueError("placement 'cluster' places a gang's instances together: it needs nodes of 2 or more")
        if self.nodes > self.max_concurrency:
            raise ValueError(f"a task of {self.nodes} nodes needs max_concurrency of at least {self.nodes} (it counts "
                             f"instances), not {self.max_concurrency}")
        return self

    @property
    def task_count(self) -> int:
        if self.parameters is not None:
            return len(self.parameters)
        return self.tasks or 1

    def task_environment(self, index: int) -> dict[str, str]:
        """The variables task `index` runs with (its parameters plus who it is)."""
        env = dict(self.parameters[index]) if self.parameters is not None else {}
        env["SPOTRUN_TASK_INDEX"] = str(index)
        env["SPOTRUN_TASK_COUNT"] = str(self.task_count)
        return env


class SpecError(ValueError):
    """A job spec that cannot be accepted; `problems` names each wrong field."""

    summary = "invalid job spec"

    def __init__(self, problems: list[dict[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{p['field']}: {p['problem']}" for p in problems))


class DocumentError(SpecError):
    """A request body that is not one JSON document spotrun can read (any route's body, not only a spec)."""

    summary = "invalid request"


def parse_spec(document: Any) -> JobSpec:
    """Validate a decoded JSON/YAML document; raise SpecError naming every wrong field."""
    if not isinstance(document, dict):
        raise SpecError([{"field": "(body)", "problem": "a job spec is a JSON object"}])
    try:
        spec = JobSpec.model_validate(document)
    except ValidationError as error:
        raise SpecError(problems_of(error.errors(include_url=False))) from None
    check_stored_size(spec)
    return spec


def stored_form(spec: JobSpec) -> dict[str, Any]:
    """What a job's item keeps of its spec: everything but the parameters (each task keeps its own),
    and their count in their place."""
    stored = spec.model_dump(mode="json", exclude={"parameters"}, exclude_none=True)
    if spec.parameters is not None:
        stored["parameter_count"] = len(spec.parameters)
    return stored


def from_stored(stored: Mapping[str, Any]) -> JobSpec:
    """The spec back from a job's item: the parameters' count stands in for them as `tasks`."""
    return JobSpec.model_validate(_without_parameter_count(stored) | (
        {"tasks": stored["parameter_count"]} if "parameter_count" in stored else {}))


def agent_form(stored: Mapping[str, Any]) -> dict[str, Any]:
    """What an agent is handed of a stored spec (its own task's parameters come from its task item)."""
    return _without_parameter_count(stored)


def _without_parameter_count(stored: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in stored.items() if k != "parameter_count"}


def _stored_bytes(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")))  # ASCII (escaped), as the store writes it


def check_stored_size(spec: JobSpec) -> None:
    """Each field has its limit, but together they could pass the store's item size: name the biggest."""
    stored = stored_form(spec)
    total = _stored_bytes(stored)
    if total > MAX_SPEC_BYTES:
        field = max(stored, key=lambda name: _stored_bytes(stored[name]))
        raise SpecError([{"field": field, "problem": f"the spec takes {total} bytes once stored (this field "
                                                     f"{_stored_bytes(stored[field])}); at most {MAX_SPEC_BYTES} are allowed"}])


class _Object(dict[str, Any]):
    """A decoded JSON object that remembers the keys it was given more than once."""

    repeated: tuple[str, ...] = ()


def _object(pairs: list[tuple[str, Any]]) -> _Object:
    decoded = _Object(pairs)
    if len(decoded) < len(pairs):
        seen: set[str] = set()
        repeated: dict[str, None] = {}
        for key, _ in pairs:
            if key in seen:
                repeated[key] = None
            seen.add(key)
        decoded.repeated = tuple(repeated)
    return decoded


def load_document(text: str) -> Any:
    """Decode a JSON document (a job spec, or any request body the APIs read). A key given twice in one
    object is an error (JSON parsers disagree on which one wins), and so is text that is not Unicode (a
    lone surrogate escape like \\ud800)."""
    try:
        document = json.loads(text, object_pairs_hook=_object)
    except RecursionError:
        raise DocumentError([{"field": "(body)", "problem": "the JSON is nested too deeply"}]) from None
    except ValueError:
        raise DocumentError([{"field": "(body)", "problem": "the body is not a JSON document"}]) from None
    problems: list[dict[str, str]] = []
    pending: list[tuple[str, Any]] = [("", document)]
    while pending:  # not recursive: the document may be nested as deep as the decoder allows
        path, value = pending.pop()
        if isinstance(value, dict):
            problems += [{"field": path + key, "problem": "the key appears more than once in its object"}
                         for key in getattr(value, "repeated", ())]
            for key, item in value.items():
                if not _is_unicode(key):
                    problems.append({"field": path + "(key)", "problem": "a key is not valid Unicode text"})
                pending.append((f"{path}{key}.", item))
        elif isinstance(value, list):
            pending += [(f"{path}{position}.", item) for position, item in enumerate(value)]
        elif isinstance(value, str) and not _is_unicode(value):
            problems.append({"field": path.rstrip(".") or "(body)", "problem": "the text is not valid Unicode"})
    if problems:
        raise DocumentError(problems)
    return document


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def utcnow() -> datetime:
    return datetime.now(UTC)
