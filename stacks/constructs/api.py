"""The users' HTTP API: API Gateway REST API, every method IAM-authorized, proxied to the api function.
The workers' own calls (`POST /worker/<operation>`) do not come here: they go to the worker-api
function's own function URL (`Functions.worker_routes`), which costs nothing beyond the invocation."""

from __future__ import annotations

from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.constructs.nag import acknowledge, logical_ref

STAGE = "v1"
# A guard against a runaway client loop; the CLI and the web page need far less.
THROTTLE_RATE = 50
THROTTLE_BURST = 100
# What a user of spotrun calls (the CLI's every command), as (method, resource path) of the stage;
# `/jobs/*` covers a job's own routes (its id is made at submission). Not the worker routes.
USER_ROUTES = (("GET", "/jobs"), ("GET", "/jobs/*"), ("POST", "/jobs"), ("POST", "/jobs/*"), ("POST", "/uploads"),
               ("GET", "/openapi.json"))


class Api(Construct):
    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        access_logs = logs.LogGroup(self, "AccessLogs", retention=logs.RetentionDays.ONE_MONTH)
        self.rest_api = apigateway.RestApi(
            self,
            "RestApi",
            rest_api_name="spotrun",
            description="spotrun: submit, list, inspect and control jobs",
            endpoint_types=[apigateway.EndpointType.REGIONAL],
            # Stage execution logs need the account-level CloudWatch role.
            cloud_watch_role=True,
            deploy_options=apigateway.StageOptions(
                stage_name=STAGE,
                tracing_enabled=True,
                metrics_enabled=True,
                logging_level=apigateway.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,  # bodies may carry job specs; keep them out of logs
                access_log_destination=apigateway.LogGroupLogDestination(access_logs),
                access_log_format=apigateway.AccessLogFormat.json_with_standard_fields(
                    caller=True,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=True,
                ),
                throttling_rate_limit=THROTTLE_RATE,
                throttling_burst_limit=THROTTLE_BURST,
            ),
            # SigV4 with the caller's AWS credentials, on every method including {proxy+}.
            default_method_options=apigateway.MethodOptions(authorization_type=apigateway.AuthorizationType.IAM),
        )
        # The stack's own ApiUrl output replaces the construct's generated one.
        self.rest_api.node.try_remove_child("Endpoint")

        acknowledge(
            self.rest_api,
            "APIG2",
            "Requests are validated in the api function (Powertools event handler with pydantic models "
            "from spotrun.domain.spec), which names every wrong field; a gateway model would duplicate it.",
        )
        acknowledge(
            self.rest_api,
            "APIG3",
            "Every method requires SigV4 (IAM) authorization and the stage is throttled; a WAF web ACL "
            "adds cost without a threat model it addresses for an account-internal API.",
        )
        acknowledge(
            self.rest_api,
            "COG4",
            "Authorization is IAM (SigV4): the CLI and web page sign with the caller's AWS credentials, "
            "so there is no Cognito user pool to authorize against.",
        )
        cloud_watch_role = self.rest_api.node.try_find_child("CloudWatchRole")
        if cloud_watch_role is not None:
            acknowledge(
                cloud_watch_role,
                "IAM4",
                "API Gateway's account-level logging role; AmazonAPIGatewayPushToCloudWatchLogs is the "
                "AWS-maintained policy the service documents for it.",
                "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs",
            )

    def serve(self, handler: lambda_.IFunction) -> None:
        integration = apigateway.LambdaIntegration(handler, proxy=True, allow_test_invoke=False)
        self.rest_api.root.add_method("ANY", integration)
        self.rest_api.root.add_proxy(default_integration=integration, any_method=True)

    def user_policies(self) -> dict[str, iam.ManagedPolicy]:
        """Managed policies to attach to the people (users, groups, roles) who use spotrun: `users` may call
        every user route (submit, steer, upload, download), `readers` only the GET routes."""
        policies = {}
        for key, description, methods in (
            ("users", "spotrun users: submit, list, inspect and steer jobs through the API", ("GET", "POST")),
            ("readers", "spotrun readers: list and inspect jobs through the API (no submit, no steering)", ("GET",)),
        ):
            routes = [(method, path) for method, path in USER_ROUTES if method in methods]
            policy = iam.ManagedPolicy(self, f"{key.title()}Policy", description=description, statements=[
                iam.PolicyStatement(sid="CallUserRoutes", actions=["execute-api:Invoke"],
                                    resources=[self.rest_api.arn_for_execute_api(m, p, STAGE) for m, p in routes]),
            ])
            prefix = f"Resource::arn:<AWS::Partition>:execute-api:<AWS::Region>:<AWS::AccountId>:<{logical_ref(self.rest_api)}>"
            acknowledge(
                policy,
                "IAM5",
                "A job's routes are /jobs/<job id>/...: the id is made at submission, so the wildcard is the "
                "user's own API under /jobs of this stage, nothing else.",
                *(f"{prefix}/{STAGE}/{m}/jobs/*" for m in methods),
            )
            policies[key] = policy
        return policies

    @property
    def url(self) -> str:
        return self.rest_api.url
