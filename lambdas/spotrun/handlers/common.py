"""What every handler shares: Powertools logger, metrics and tracer, and the SQS batch loop.

Handlers stay thin: parse the record into a wire model, call one use case, report partial batch
failures. A record that cannot be parsed is dropped with a log line and a metric (retrying it
would never help); a record whose use case raised is reported failed and retried, then dead-lettered.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any, TypeVar

from aws_lambda_powertools import Logger, Metrics, Tracer, single_metric
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from pydantic import BaseModel, ValidationError

from spotrun.access import session_name
from spotrun.domain.messages import AttemptRef
from spotrun.domain.reasons import clip
from spotrun.resources import METRICS_NAMESPACE, METRICS_SERVICE, EnvVar

NAMESPACE, SERVICE = METRICS_NAMESPACE, METRICS_SERVICE
logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
tracer = Tracer(service=SERVICE)


def metric_by(name: str, unit: MetricUnit, value: float, **dimensions: str) -> None:
    """One EMF metric with a dimension more than the service (a pool, a task state, a market): the
    dashboard graphs one line per value of it. `metrics` (flushed once per invocation) carries the
    service-wide totals the alarms watch."""
    if os.environ.get("POWERTOOLS_METRICS_DISABLED", "").lower() == "true":
        return
    with single_metric(name=name, unit=unit, value=value, namespace=NAMESPACE,
                       default_dimensions={"service": SERVICE, **dimensions}):
        pass


def count_per_pool(name: str, per_pool: dict[str, int]) -> None:
    """A count per pool (one metric each) and its total (the alarms' metric), when anything happened."""
    for pool, count in sorted(per_pool.items()):
        metric_by(name, MetricUnit.Count, count, pool=pool)
    if per_pool:
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=sum(per_pool.values()))


def instrumented(handler: Callable[..., Any]) -> Callable[..., Any]:
    """Every function's Powertools wrapping: structured logs with the Lambda context, EMF metrics, X-Ray.

    Neither the event nor the response is logged or traced (they can hold a job's environment, a
    program's output or presigned URLs): a log line names ids, counts and states, never payloads.
    """
    return logger.inject_lambda_context(
        metrics.log_metrics(tracer.capture_lambda_handler(handler, capture_response=False)), log_event=False)


class Malformed(Exception):
    """A message that can never be handled: acknowledged and counted, not retried."""


Model = TypeVar("Model", bound=BaseModel)
Sent = TypeVar("Sent", bound=AttemptRef)


def load_json(text: str, what: str = "message") -> Any:
    """A record's JSON, or `Malformed` whatever breaks the parser (not only a ValueError: 5,000 levels of
    nesting raise RecursionError) and whatever text DynamoDB could not store (a lone surrogate, which
    JSON's \\u escapes can spell but no UTF-8 can)."""
    try:
        value = json.loads(text)
        json.dumps(value, ensure_ascii=False).encode()
    except MemoryError:
        raise
    except RecursionError:
        raise Malformed(f"{what}: nested too deeply") from None
    except UnicodeEncodeError:
        raise Malformed(f"{what}: text that is not valid Unicode (a lone surrogate)") from None
    except Exception as error:  # noqa: BLE001 - a record no parse can read is malformed, never retried
        raise Malformed(f"{what}: {type(error).__name__}: {clip(str(error), 200)}") from None
    return value


def parse_body(record: SQSRecord, model: type[Model], sns_envelope: bool = False) -> Model:
    body = load_json(record.body, model.__name__)
    if sns_envelope:
        if not isinstance(body, dict) or not isinstance(body.get("Message"), str):
            raise Malformed(f"{model.__name__}: not an SNS notification (no Message text)")
        body = load_json(body["Message"], model.__name__)
    try:
        return model.model_validate(body)
    except ValidationError as error:
        raise Malformed(clip(f"{model.__name__}: {problems(error)}", 300)) from None


def check_sender(record: SQSRecord, job_id: str, index: int, attempt: int) -> None:
    """A worker speaks only for its own attempt: the message must come from that attempt's task-role
    session (SQS's SenderId is `<role id>:<session name>`). Anything else is dropped, not retried.

    Without the task role's id in the environment (the local runtime: moto reports one fixed
    SenderId for every message) there is nothing to compare with; the local runtime confines its
    workers' credentials instead (spotrun_local.iam_guard)."""
    role_id = os.environ.get(EnvVar.TASK_ROLE_ID)
    if not role_id:
        return
    expected = f"{role_id}:{session_name(job_id, index, attempt)}"
    if record.attributes.sender_id != expected:
        metrics.add_metric(name="ForeignSenders", unit=MetricUnit.Count, value=1)
        raise Malformed(f"not sent by the session of attempt {attempt} of task {index} of {job_id}")


def from_its_attempt(model: type[Sent], handle: Callable[[Sent], None]) -> Callable[[SQSRecord], None]:
    """A record handler for a worker's message: parsed into `model`, and dropped (`check_sender`)
    unless the session of the attempt it names sent it."""
    def handle_record(record: SQSRecord) -> None:
        message = parse_body(record, model)
        check_sender(record, message.job_id, message.index, message.attempt)
        handle(message)

    return handle_record


def problems(error: ValidationError) -> str:
    """Which fields were wrong and why, without the values: the log keeps no payload (a report's
    program output, say), only where it was wrong."""
    return "; ".join(f"{'.'.join(str(part) for part in item['loc']) or '(message)'}: {item['msg']}"
                     for item in error.errors(include_url=False, include_input=False, include_context=False))


def run_batch(event: dict[str, Any], context: Any, handle: Callable[[SQSRecord], None]) -> PartialItemFailureResponse:
    """Process an SQS batch with partial failures; malformed records are dropped, not retried."""

    def guarded(record: SQSRecord) -> None:
        try:
            handle(record)
        except Malformed as problem:
            logger.warning("dropped a malformed message", extra={"message_id": record.message_id, "problem": str(problem)})
            metrics.add_metric(name="MalformedMessages", unit=MetricUnit.Count, value=1)

    return process_partial_response(event=event, record_handler=guarded, processor=BatchProcessor(EventType.SQS),
                                    context=context)
