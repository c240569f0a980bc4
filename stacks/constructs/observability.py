"""Alarms and a dashboard: anything in a dead-letter queue and any handler error is worth a look."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from spotrun.resources import METRICS_NAMESPACE, METRICS_SERVICE, WORKER_IMAGE_FAULTS_METRIC

PERIOD = Duration.minutes(5)
DLQ_PERIOD = Duration.minutes(1)


class Observability(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        queues: Mapping[str, sqs.IQueue],
        dead_letter_queues: Mapping[str, sqs.IQueue],
        functions: Mapping[str, lambda_.IFunction],
        alarm_topic: sns.ITopic,
    ) -> None:
        super().__init__(scope, construct_id)
        action = actions.SnsAction(alarm_topic)
        self.alarms: list[cloudwatch.Alarm] = []

        for key, dead_letter in dead_letter_queues.items():
            alarm = dead_letter.metric_approximate_number_of_messages_visible(
                period=DLQ_PERIOD, statistic=cloudwatch.Stats.MAXIMUM
            ).create_alarm(
                self,
                f"{key}-dlq-not-empty",
                alarm_description=f"spotrun: messages from the {key} queue gave up and sit in its dead-letter queue",
                threshold=0,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                evaluation_periods=1,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
            alarm.add_alarm_action(action)
            self.alarms.append(alarm)

        for key, function in functions.items():
            alarm = function.metric_errors(period=PERIOD, statistic=cloudwatch.Stats.SUM).create_alarm(
                self,
                f"{key}-errors",
                alarm_description=f"spotrun: the {key} function raised errors",
                threshold=0,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                evaluation_periods=1,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
            alarm.add_alarm_action(action)
            self.alarms.append(alarm)

        # A worker image that cannot run a checkpoint method (spotrun.images): the finisher counts it
        # once per image and method; tasks needing it fail until the image is fixed.
        image_faults = cloudwatch.Metric(
            namespace=METRICS_NAMESPACE, metric_name=WORKER_IMAGE_FAULTS_METRIC,
            dimensions_map={"service": METRICS_SERVICE}, period=PERIOD, statistic=cloudwatch.Stats.SUM,
        )
        alarm = image_faults.create_alarm(
            self,
            "worker-image-faults",
            alarm_description="spotrun: the worker image cannot run a checkpoint method (see the WorkerImageFault "
                              "event on the job's timeline for which one, why and what to do)",
            threshold=0,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(action)
        self.alarms.append(alarm)

        self.dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            default_interval=Duration.hours(3),
            widgets=[
                [
                    _graph(
                        "Queue depth (visible messages)",
                        [
                            q.metric_approximate_number_of_messages_visible(label=k, period=DLQ_PERIOD)
                            for k, q in queues.items()
                        ],
                    ),
                    _graph(
                        "Oldest message age (s)",
                        [
                            q.metric_approximate_age_of_oldest_message(label=k, period=DLQ_PERIOD)
                            for k, q in queues.items()
                        ],
                    ),
                    _graph(
                        "Dead-letter queues",
                        [
                            q.metric_approximate_number_of_messages_visible(label=k, period=DLQ_PERIOD)
                            for k, q in dead_letter_queues.items()
                        ],
                    ),
                ],
                [
                    _graph(
                        "Handler errors",
                        [
                            f.metric_errors(label=k, period=PERIOD, statistic=cloudwatch.Stats.SUM)
                            for k, f in functions.items()
                        ],
                    ),
                    _graph(
                        "Handler duration p99 (ms)",
                        [
                            f.metric_duration(label=k, period=PERIOD, statistic=cloudwatch.Stats.p(99))
                            for k, f in functions.items()
                        ],
                    ),
                    _graph(
                        "Handler throttles",
                        [
                            f.metric_throttles(label=k, period=PERIOD, statistic=cloudwatch.Stats.SUM)
                            for k, f in functions.items()
                        ],
                    ),
                ],
            ],
        )


def _graph(title: str, metrics: list[cloudwatch.IMetric]) -> cloudwatch.GraphWidget:
    return cloudwatch.GraphWidget(title=title, left=metrics, width=8, height=6)
