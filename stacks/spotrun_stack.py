"""The spotrun stack: one construct per capability, wired from `spotrun.resources`."""

from __future__ import annotations

from typing import Any

from aws_cdk import App, CfnOutput, Stack, Validations
from cdk_nag import AwsSolutionsChecks
from constructs import Construct

from stacks.config import SpotrunConfig, cdk_json_context
from stacks.constructs.api import Api
from stacks.constructs.events import Events
from stacks.constructs.fleet import Fleet
from stacks.constructs.functions import Functions, FunctionWiring
from stacks.constructs.messaging import Messaging
from stacks.constructs.observability import Observability
from stacks.constructs.state import State

STACK_ID = "Spotrun"


class SpotrunStack(Stack):
    """Region- and account-agnostic: synthesizes offline, deploys anywhere the Powertools layer exists."""

    def __init__(self, scope: Construct, construct_id: str, *, config: SpotrunConfig, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config

        self.state = State(self, "State")
        self.messaging = Messaging(self, "Messaging", notification_email=config.notification_email,
                                   operations_email=config.operations_email)
        queues = self.messaging.queues
        self.api = Api(self, "Api")
        # Construct id "Workers": it names the resources' logical ids, which a rename would replace.
        self.fleet = Fleet(
            self,
            "Workers",
            max_azs=config.max_azs,
            root_volume_gib=config.root_volume_gib,
            table=self.state.table,
            bucket=self.state.bucket,
            log_bucket=self.state.log_bucket,
            report_queue=queues["reports"],
            worker_ami=config.worker_ami,
            task_log_group=self.state.task_logs.log_group_name,
        )
        self.functions = Functions(
            self,
            "Functions",
            wiring=FunctionWiring(
                table=self.state.table,
                bucket=self.state.bucket,
                page_key=self.state.page_key,
                topics=self.messaging.topics,
                queues=queues,
                fleet=self.fleet,
                config=config,
                task_logs=self.state.task_logs,
            ),
        )
        self.events = Events(self, "Events", queues=queues, functions=self.functions.functions)
        self.api.serve(self.functions.functions["api"])
        self.fleet.allow_worker_routes(self.functions.worker_routes)
        self.observability = Observability(
            self,
            "Observability",
            queues=queues,
            dead_letter_queues=self.messaging.dead_letter_queues,
            functions=self.functions.functions,
            alarm_topic=self.messaging.alarm_topic,
            console=self.functions.functions["console"],
            spend_alarm_per_hour=config.spend_alarm_per_hour,
        )

        CfnOutput(self, "ApiUrl", value=self.api.url, description="Base URL of the spotrun API (SigV4)")
        self.user_policies = self.api.user_policies()
        CfnOutput(self, "UserPolicyArn", value=self.user_policies["users"].managed_policy_arn,
                  description="Attach to whoever uses spotrun (the CLI's every command): IAM user, group or role")
        CfnOutput(self, "ReaderPolicyArn", value=self.user_policies["readers"].managed_policy_arn,
                  description="Attach to whoever only lists and inspects jobs")
        CfnOutput(self, "BucketName", value=self.state.bucket.bucket_name)
        CfnOutput(self, "WorkerImageId", value=self.fleet.image.image_id,
                  description="The AMI workers boot from (DMTCP and the agent's Python built in)")
        CfnOutput(self, "TableName", value=self.state.table.table_name)
        CfnOutput(
            self,
            "NotificationsTopicArn",
            value=self.messaging.topics["notifications"].topic_arn,
            description="Subscribe here for job events",
        )
        CfnOutput(
            self,
            "OperationsTopicArn",
            value=self.messaging.alarm_topic.topic_arn,
            description="Subscribe here for the operators' alarms (handler errors, dead letters, capacity, spend)",
        )
        CfnOutput(
            self,
            "DashboardUrl",
            value=f"https://{self.region}.console.aws.amazon.com/cloudwatch/home?region={self.region}#dashboards/"
                  f"dashboard/{self.observability.dashboard.dashboard_name}",
            description="The console: jobs, tasks, logs, costs and actions, beside the operators' metrics",
        )
        CfnOutput(
            self,
            "ConsoleAccessPolicyArn",
            value=self.observability.console_access.managed_policy_arn,
            description="Attach to the users and roles who may see and steer jobs in the dashboard's console",
        )


def build_app(*, outdir: str | None = None, context: dict[str, Any] | None = None) -> tuple[App, SpotrunStack]:
    """The app as `app.py` synthesizes it: cdk.json context, the stack, cdk-nag AwsSolutions.

    `context` overrides cdk.json (tests use it); the CLI's own context overrides both.
    """
    app = App(outdir=outdir, context={**cdk_json_context(), **(context or {})})
    stack = SpotrunStack(
        app,
        STACK_ID,
        config=SpotrunConfig.from_context(app.node),
        description="spotrun: event-driven control plane for batch jobs on EC2 Spot",
    )
    # cdk-nag v3 is a policy-validation plugin (the v2 Aspect is gone): findings land in the
    # assembly's validation-report.json and an unacknowledged error fails the synth. Acknowledgments
    # are also written into each resource's Metadata (cdk_nag.rules_to_suppress) as an audit trail.
    Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True, write_suppressions_to_cloud_formation=True))
    return app, stack
