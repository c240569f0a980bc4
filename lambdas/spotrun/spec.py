"""The job spec: the one validated model users write (YAML or JSON) and the API's request body.

Every size and count has a limit so that one submission cannot exhaust the store or a handler;
every field that is wrong is named in the error (pydantic collects them all).
"""

from __future__ import annotations

import re
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
    field_validator,
    model_validator,
)

MAX_TASKS = 100_000
MAX_INPUTS = 1_000
MAX_OUTPUT_PATTERNS = 100
MAX_COMMAND_CHARS = 16_384
MAX_PARAM_VARS = 64
MAX_PARAM_VALUE_CHARS = 4_096
MAX_TAGS = 50
MAX_TIMEOUT_SECONDS = 30 * 24 * 3600

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
RESERVED_ENV_PREFIXES = ("SPOTRUN_", "AWS_", "DMTCP_")
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> Any:
    """Accept seconds as a number or a string like '90', '30m', '2h', '1d'."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError("a duration is a whole number of seconds or like '30m', '2h', '1d'")
        return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
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
    StringConstraints(min_length=1, max_length=512, pattern=r"^[^/\x00-\x1f][^\x00-\x1f]*$"),
    AfterValidator(_stays_inside),
]
Seconds = Annotated[int, BeforeValidator(parse_duration), Field(ge=1, le=MAX_TIMEOUT_SECONDS)]
TagKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:/=+@ -]{1,128}$")]
TagValue = Annotated[str, StringConstraints(max_length=256, pattern=r"^[^\x00-\x1f]*$")]
Command = Annotated[
    str | Annotated[list[Annotated[str, StringConstraints(max_length=MAX_COMMAND_CHARS)]], Field(min_length=1, max_length=256)],
    Field(description="A shell string, or an argv list run without a shell."),
]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Resources(StrictModel):
    vcpus: int = Field(1, ge=1, le=448)
    memory_gib: float = Field(2.0, gt=0, le=24_576)
    gpus: int = Field(0, ge=0, le=16)
    instance_types: list[Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]+(\.[a-z0-9*-]+)?$")]] = Field(
        default_factory=list,
        max_length=100,
        description="Allowed types ('c6i.large') or families ('c6i'); empty means any that fits.",
    )
    architecture: Literal["x86_64", "arm64"] = "x86_64"


class CheckpointSpec(StrictModel):
    method: Literal["dmtcp", "signal", "none"] = "dmtcp"
    interval: Literal["auto"] | Annotated[int, Field(ge=30, le=86_400)] = "auto"
    signal: Literal["SIGUSR1", "SIGUSR2", "SIGTERM", "SIGINT", "SIGHUP"] = Field(
        "SIGUSR1", description="Sent to the program by the 'signal' checkpointer."
    )


class RetrySpec(StrictModel):
    program: int = Field(0, ge=0, le=10, description="Extra attempts after the program itself failed.")
    environment: int = Field(
        5, ge=0, le=100, description="Attempts after faults of the environment (reclaims, lost instances)."
    )
    exit_codes: list[Annotated[int, Field(ge=1, le=255)]] = Field(
        default_factory=list,
        max_length=255,
        description="Program exit codes worth a retry; empty means any non-zero code.",
    )


class CombineSpec(StrictModel):
    command: Command
    outputs: list[OutputPattern] = Field(default_factory=list, max_length=MAX_OUTPUT_PATTERNS)
    allow_partial: bool = Field(False, description="Run even when some tasks failed.")


class JobSpec(StrictModel):
    name: Name
    command: Command
    setup: Annotated[str, StringConstraints(max_length=MAX_COMMAND_CHARS)] | None = None
    inputs: list[S3Uri] = Field(default_factory=list, max_length=MAX_INPUTS)
    outputs: list[OutputPattern] = Field(default_factory=list, max_length=MAX_OUTPUT_PATTERNS)
    tasks: int | None = Field(None, ge=1, le=MAX_TASKS)
    parameters: list[dict[str, Annotated[str, StringConstraints(max_length=MAX_PARAM_VALUE_CHARS)]]] | None = Field(
        None, min_length=1, max_length=MAX_TASKS
    )
    combine: CombineSpec | None = None
    resources: Resources = Field(default_factory=Resources)
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    retries: RetrySpec = Field(default_factory=RetrySpec)
    max_concurrency: int = Field(100, ge=1, le=10_000)
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
            for name in mapping:
                if not ENV_NAME.match(name):
                    raise ValueError(f"parameters[{position}]: {name!r} is not an environment variable name")
                if name.startswith(RESERVED_ENV_PREFIXES):
                    raise ValueError(f"parameters[{position}]: {name!r} uses a reserved prefix")
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

    def __init__(self, problems: list[dict[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{p['field']}: {p['problem']}" for p in problems))


def problems_of(error: ValidationError) -> list[dict[str, str]]:
    """Turn pydantic's errors into `{field, problem}` pairs a person can act on."""
    problems = []
    for item in error.errors(include_url=False, include_input=False):
        field = ".".join(str(part) for part in item["loc"]) or "(body)"
        problems.append({"field": field, "problem": item["msg"]})
    return problems


def parse_spec(document: Any) -> JobSpec:
    """Validate a decoded JSON/YAML document; raise SpecError naming every wrong field."""
    if not isinstance(document, dict):
        raise SpecError([{"field": "(body)", "problem": "a job spec is a JSON object"}])
    try:
        return JobSpec.model_validate(document)
    except ValidationError as error:
        raise SpecError(problems_of(error)) from None


def utcnow() -> datetime:
    return datetime.now(UTC)
