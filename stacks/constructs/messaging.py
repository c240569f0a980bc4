"""Messaging: the control and notification topics, every work queue with its dead-letter queue,
and the SNS -> SQS subscriptions, all built from `spotrun.resources`."""

from __future__ import annotations

from aws_cdk import Aws, Duration, Tags
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from spotrun import resources

# Tags that name what a queue is for, so operators (and the wiring test) can tell them apart.
QUEUE_TAG = "spotrun:queue"
DEAD_LETTER_TAG = "spotrun:dead-letter-for"
# Users subscribe to the notifications topic for job events; the alarms publish to the operations topic.
ALARM_TOPIC = "operations"
EVENTS_TOPIC = "notifications"

DEAD_LETTER_RETENTION = Duration.days(14)  # the SQS maximum: time to look at what failed


class Messaging(Construct):
    """Topics and queues. Queues use SQS-managed SSE: SNS and EventBridge can deliver into them
    without key grants, and the agent's role needs no KMS permission to send its reports."""

    def __init__(self, scope: Construct, construct_id: str, *, notification_email: str | None,
                 operations_email: str | None = None) -> None:
        super().__init__(scope, construct_id)
        # One customer-managed key for the topics: the AWS-managed aws/sns key cannot be granted to
        # CloudWatch, whose alarms publish to the operations topic.
        self.topic_key = kms.Key(
            self,
            "TopicKey",
            description="spotrun: encrypts the control, notifications and operations topics",
            enable_key_rotation=True,
        )
        self.topic_key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchAlarmsToPublish",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],  # in a key policy, "*" is this key
                conditions={"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}},
            )
        )
        self.topics: dict[str, sns.Topic] = {name: self._topic(name) for name in resources.TOPICS}
        self.queues: dict[str, sqs.Queue] = {}
        self.dead_letter_queues: dict[str, sqs.Queue] = {}
        for definition in resources.QUEUES:
            self.queues[definition.key], self.dead_letter_queues[definition.key] = self._queue(definition)
        for subscription in resources.SUBSCRIPTIONS:
            self._subscribe(subscription)
        self.alarm_topic = self.topics[ALARM_TOPIC]
        # The SSL-only topic policy replaces SNS's default one, so CloudWatch alarms need their own
        # allow on the topic they publish to; functions publish with their IAM roles.
        self.alarm_topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchAlarmsToPublish",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[self.alarm_topic.topic_arn],
                conditions={"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}},
            )
        )
        if notification_email:
            self.topics[EVENTS_TOPIC].add_subscription(subscriptions.EmailSubscription(notification_email))
        if operations_email:
            self.alarm_topic.add_subscription(subscriptions.EmailSubscription(operations_email))

    def _topic(self, name: str) -> sns.Topic:
        return sns.Topic(
            self,
            f"{name}-topic",
            display_name=f"spotrun {name}",
            master_key=self.topic_key,
            enforce_ssl=True,
        )

    def _queue(self, definition: resources.QueueDef) -> tuple[sqs.Queue, sqs.Queue]:
        dead_letter = sqs.Queue(
            self,
            f"{definition.key}-dlq",
            retention_period=DEAD_LETTER_RETENTION,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
        )
        Tags.of(dead_letter).add(DEAD_LETTER_TAG, definition.key)
        queue = sqs.Queue(
            self,
            f"{definition.key}-queue",
            visibility_timeout=Duration.seconds(definition.visibility_timeout_seconds),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            dead_letter_queue=sqs.DeadLetterQueue(queue=dead_letter, max_receive_count=definition.max_receive_count),
        )
        Tags.of(queue).add(QUEUE_TAG, definition.key)
        return queue, dead_letter

    def _subscribe(self, definition: resources.SubscriptionDef) -> None:
        # Raw delivery stays off: the handlers parse the SNS envelope (message attributes included)
        # out of the SQS body.
        self.topics[definition.topic].add_subscription(
            subscriptions.SqsSubscription(
                self.queues[definition.queue],
                raw_message_delivery=False,
                filter_policy={
                    attribute: sns.SubscriptionFilter.string_filter(allowlist=list(values))
                    for attribute, values in definition.filter_policy().items()
                },
            )
        )
