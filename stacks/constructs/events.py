"""EventBridge: the instance-life rules that feed the interruptions queue, and the schedules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from spotrun import resources

# EventBridge pattern fields -> EventPattern keyword arguments (the L2 renders them back as-is).
_PATTERN_FIELDS = {
    "account": "account",
    "detail": "detail",
    "detail-type": "detail_type",
    "id": "id",
    "region": "region",
    "resources": "resources",
    "source": "source",
    "time": "time",
    "version": "version",
}


def event_pattern(pattern: Mapping[str, Any]) -> events.EventPattern:
    unknown = set(pattern) - set(_PATTERN_FIELDS)
    if unknown:
        raise ValueError(f"event pattern fields not supported: {sorted(unknown)}")
    return events.EventPattern(**{_PATTERN_FIELDS[field]: value for field, value in pattern.items()})


class Events(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        queues: Mapping[str, sqs.IQueue],
        functions: Mapping[str, lambda_.Function],
    ) -> None:
        super().__init__(scope, construct_id)
        self.rules: dict[str, events.Rule] = {}
        for definition in resources.RULES:
            self.rules[definition.key] = events.Rule(
                self,
                definition.key,
                description=f"spotrun {definition.key} -> {definition.queue} queue",
                event_pattern=event_pattern(definition.pattern),
                targets=[targets.SqsQueue(queues[definition.queue])],
            )
        for function_def in resources.FUNCTIONS:
            if function_def.schedule_minutes is None:
                continue
            function = functions[function_def.key]
            self.rules[f"{function_def.key}-schedule"] = events.Rule(
                self,
                f"{function_def.key}-schedule",
                description=f"spotrun {function_def.key} every {function_def.schedule_minutes} min",
                schedule=events.Schedule.rate(Duration.minutes(function_def.schedule_minutes)),
                targets=[targets.LambdaFunction(function)],
            )
            # A sweep that failed is not retried, and one that finds the last still running (reserved
            # concurrency) is dropped within a period instead of waiting in Lambda's asynchronous queue:
            # the next tick is the retry, and overlapping sweeps would only contend on the same items.
            function.configure_async_invoke(retry_attempts=0,
                                            max_event_age=Duration.seconds(60 * function_def.schedule_minutes))
