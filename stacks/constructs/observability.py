"""The dashboard and the alarms.

One CloudWatch dashboard: the console (custom widgets of the `console` function: jobs, a job in
detail with its tasks, timeline, logs, costs and buttons), then what operators watch (tasks by state,
launches, capacity refusals and interruptions per pool, checkpoint and restore times and sizes, work
lost per interruption, the time from a warning to running again, spend per hour), then the
pipeline's health (queues, dead letters, handler errors, durations, throttles).

The alarms publish to the operations topic, apart from the job notifications, with thresholds an
operator would pick (each one says why in its description). The metrics are the handlers' EMF
(namespace `spotrun`, dimension `service`; per pool, state or market one more dimension, graphed
with SEARCH so every pool shows up without being named here).
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from spotrun.resources import METRICS_NAMESPACE, METRICS_SERVICE, WORKER_IMAGE_FAULTS_METRIC

PERIOD = Duration.minutes(5)
DLQ_PERIOD = Duration.minutes(1)
NAMESPACE = METRICS_NAMESPACE
SERVICE = {"service": METRICS_SERVICE}
TASK_STATES = ("QUEUED", "LAUNCHING", "RUNNING", "SUSPENDED")
MARKETS = ("spot", "on-demand")

# Alarm thresholds, and why an operator wants to hear of them.
REFUSED_SHARE = 0.9  # of launch calls refused for capacity, 3 periods running: spot is scarce everywhere allowed
REFUSALS_NEED_CALLS = 3  # ...counted only when the scheduler called at least this often in a period
CHECKPOINT_SECONDS_P90 = 90  # a final checkpoint must fit the two-minute warning (the agent keeps 10 s spare)
WORK_LOST_SECONDS = 600  # average per interruption over an hour: checkpoints are too sparse or failing
RECOVERY_SECONDS_P90 = 900  # from a warning to running again: replacements are not getting capacity
INTERRUPTIONS_PER_HOUR = 50
LOST_WORKERS_PER_15_MIN = 5  # instances gone without a word: agents crashing, or instances dying


def metric(name: str, statistic: str = "Sum", period: Duration = PERIOD, label: str | None = None,
           **dimensions: str) -> cloudwatch.Metric:
    return cloudwatch.Metric(namespace=NAMESPACE, metric_name=name, statistic=statistic, period=period,
                             dimensions_map={**SERVICE, **dimensions}, label=label)


def per(dimension: str, name: str, statistic: str, label: str) -> cloudwatch.MathExpression:
    """One line per value of `dimension` (each pool, say), whatever values the handlers emit."""
    return cloudwatch.MathExpression(
        expression=f"SEARCH('{{{NAMESPACE},{dimension},service}} MetricName=\"{name}\"', '{statistic}', 300)",
        label=label, period=PERIOD, using_metrics={},
    )


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
        console: lambda_.IFunction,
        spend_alarm_per_hour: float,
    ) -> None:
        super().__init__(scope, construct_id)
        self._action = actions.SnsAction(alarm_topic)
        self.alarms: list[cloudwatch.Alarm] = []
        self._pipeline_alarms(dead_letter_queues, functions)
        self._operator_alarms(spend_alarm_per_hour)
        # Who may use the console: invoking its function is the access control (CloudWatch invokes it with
        # the viewer's own credentials); attach this policy to the users and roles who may see and steer jobs.
        self.console_access = iam.ManagedPolicy(
            self, "ConsoleAccess", description="spotrun: see and steer jobs in the CloudWatch dashboard's console",
            statements=[iam.PolicyStatement(sid="UseTheSpotrunConsole", actions=["lambda:InvokeFunction"],
                                            resources=[console.function_arn])],
        )
        self.dashboard = cloudwatch.Dashboard(
            self, "Dashboard", default_interval=Duration.hours(3),
            widgets=[*self._console_rows(console), *self._operator_rows(),
                     *self._pipeline_rows(queues, dead_letter_queues, functions)],
        )

    # ------------------------------------------------------------------------ alarms

    def _alarm(self, alarm_id: str, source: cloudwatch.IMetric, description: str, threshold: float,
               periods: int = 1, comparison: cloudwatch.ComparisonOperator =
               cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD) -> cloudwatch.Alarm:
        alarm = source.create_alarm(
            self, alarm_id, alarm_description=f"spotrun: {description}", threshold=threshold,
            comparison_operator=comparison, evaluation_periods=periods, datapoints_to_alarm=periods,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(self._action)
        self.alarms.append(alarm)
        return alarm

    def _pipeline_alarms(self, dead_letter_queues: Mapping[str, sqs.IQueue],
                         functions: Mapping[str, lambda_.IFunction]) -> None:
        for key, dead_letter in dead_letter_queues.items():
            self._alarm(f"{key}-dlq-not-empty", dead_letter.metric_approximate_number_of_messages_visible(
                period=DLQ_PERIOD, statistic=cloudwatch.Stats.MAXIMUM),
                f"messages from the {key} queue gave up and sit in its dead-letter queue", 0)
        for key, function in functions.items():
            self._alarm(f"{key}-errors", function.metric_errors(period=PERIOD, statistic=cloudwatch.Stats.SUM),
                        f"the {key} function raised errors", 0)

    def _operator_alarms(self, spend_alarm_per_hour: float) -> None:
        refused = cloudwatch.MathExpression(
            expression=f"IF(calls >= {REFUSALS_NEED_CALLS}, refused / calls, 0)", period=PERIOD,
            label="share of launch calls refused for capacity",
            using_metrics={"refused": metric("CapacityRefusals"), "calls": metric("LaunchCalls")},
        )
        self._alarm("capacity-refused", refused,
                    f"more than {REFUSED_SHARE:.0%} of launch calls were refused for capacity for 15 minutes: spot "
                    "is scarce in every pool allowed (add instance types or zones, or let tasks use on-demand)",
                    REFUSED_SHARE, periods=3)
        self._alarm("checkpoint-slow", metric("CheckpointSeconds", "p90", Duration.minutes(15)),
                    f"checkpoints take more than {CHECKPOINT_SECONDS_P90} s (p90): a final one may not fit the "
                    "two-minute interruption warning", CHECKPOINT_SECONDS_P90)
        self._alarm("work-lost", metric("WorkLostSeconds", "Average", Duration.hours(1)),
                    f"interruptions lose more than {WORK_LOST_SECONDS} s of work each on average: checkpoints are "
                    "too sparse or failing", WORK_LOST_SECONDS)
        self._alarm("recovery-slow", metric("RecoverySeconds", "p90", Duration.minutes(15)),
                    f"interrupted tasks take more than {RECOVERY_SECONDS_P90} s (p90) from the warning to running "
                    "again: replacements are not getting capacity", RECOVERY_SECONDS_P90)
        self._alarm("interruptions-high", metric("Interruptions", "Sum", Duration.hours(1)),
                    f"more than {INTERRUPTIONS_PER_HOUR} interruptions in an hour", INTERRUPTIONS_PER_HOUR)
        self._alarm("lost-workers", metric("LostWorkers", "Sum", Duration.minutes(15)),
                    f"more than {LOST_WORKERS_PER_15_MIN} workers lost without a word in 15 minutes (agents "
                    "crashing or instances dying)", LOST_WORKERS_PER_15_MIN)
        # A worker image that cannot run a checkpoint method (spotrun.images): the finisher counts it
        # once per image and method; tasks needing it fail until the image is fixed.
        self._alarm("worker-image-faults", metric(WORKER_IMAGE_FAULTS_METRIC),
                    "the worker image cannot run a checkpoint method (see the WorkerImageFault event on the job's "
                    "timeline for which one, why and what to do)", 0)
        self._alarm("spend-high", metric("SpendPerHour", "Maximum", Duration.minutes(15)),
                    f"the running instances cost more than ${spend_alarm_per_hour:g} per hour "
                    "(spotrun:spendAlarmPerHour)", spend_alarm_per_hour)

    # ------------------------------------------------------------------------ the dashboard

    def _console_rows(self, console: lambda_.IFunction) -> list[list[cloudwatch.IWidget]]:
        def widget(title: str, view: str, height: int) -> cloudwatch.CustomWidget:
            # Refreshed with the dashboard (and on resize), not on time-range changes: it shows the present.
            return cloudwatch.CustomWidget(function_arn=console.function_arn, title=title, params={"view": view},
                                           width=24, height=height, update_on_refresh=True, update_on_resize=True,
                                           update_on_time_range_change=False)

        return [
            [cloudwatch.TextWidget(markdown="# spotrun\nThe console (jobs and the newest job: buttons steer them), "
                                            "then the operators' metrics, then the pipeline's health.",
                                   width=24, height=2)],
            [widget("spotrun jobs", "jobs", 9)],
            [widget("spotrun job (the newest; open another from the jobs above)", "job", 16)],
        ]

    def _operator_rows(self) -> list[list[cloudwatch.IWidget]]:
        def graph(title: str, left: list[cloudwatch.IMetric], right: list[cloudwatch.IMetric] | None = None,
                  stacked: bool = False) -> cloudwatch.GraphWidget:
            return cloudwatch.GraphWidget(title=title, left=left, right=right or [], width=8, height=6,
                                          stacked=stacked)

        def spread(name: str) -> list[cloudwatch.IMetric]:
            return [metric(name, statistic, label=statistic) for statistic in ("p50", "p90", "Maximum")]

        return [
            [graph("Tasks by state (open jobs)", [metric("Tasks", "Average", label=s, state=s) for s in TASK_STATES],
                   stacked=True),
             graph("Launches per pool", [per("pool", "Launches", "Sum", "")]),
             graph("Capacity refusals per pool", [per("pool", "CapacityRefusals", "Sum", "")])],
            [graph("Interruptions per pool", [per("pool", "Interruptions", "Sum", "")]),
             graph("Checkpoint seconds (capture + upload)", spread("CheckpointSeconds")),
             graph("Checkpoint size (MiB)", [metric("CheckpointMiB", s, label=s) for s in ("Average", "Maximum")])],
            [graph("Restore seconds (download)", spread("RestoreSeconds")),
             graph("Work lost per interruption (s)", [metric("WorkLostSeconds", s, label=s)
                                                      for s in ("Average", "Maximum")]),
             graph("From a warning to running again (s)", spread("RecoverySeconds"))],
            [graph("Spend per hour (USD)", [metric("SpendPerHour", "Average", label=m, market=m) for m in MARKETS],
                   [metric("OnDemandEquivalentPerHour", "Average", label="all on demand would be")], stacked=True)],
        ]

    def _pipeline_rows(self, queues: Mapping[str, sqs.IQueue], dead_letter_queues: Mapping[str, sqs.IQueue],
                       functions: Mapping[str, lambda_.IFunction]) -> list[list[cloudwatch.IWidget]]:
        return [
            [
                _graph("Queue depth (visible messages)", [
                    q.metric_approximate_number_of_messages_visible(label=k, period=DLQ_PERIOD) for k, q in queues.items()]),
                _graph("Oldest message age (s)", [
                    q.metric_approximate_age_of_oldest_message(label=k, period=DLQ_PERIOD) for k, q in queues.items()]),
                _graph("Dead-letter queues", [
                    q.metric_approximate_number_of_messages_visible(label=k, period=DLQ_PERIOD)
                    for k, q in dead_letter_queues.items()]),
            ],
            [
                _graph("Handler errors", [
                    f.metric_errors(label=k, period=PERIOD, statistic=cloudwatch.Stats.SUM) for k, f in functions.items()]),
                _graph("Handler duration p99 (ms)", [
                    f.metric_duration(label=k, period=PERIOD, statistic=cloudwatch.Stats.p(99)) for k, f in functions.items()]),
                _graph("Handler throttles", [
                    f.metric_throttles(label=k, period=PERIOD, statistic=cloudwatch.Stats.SUM) for k, f in functions.items()]),
            ],
        ]


def _graph(title: str, metrics: list[cloudwatch.IMetric]) -> cloudwatch.GraphWidget:
    return cloudwatch.GraphWidget(title=title, left=metrics, width=8, height=6)
