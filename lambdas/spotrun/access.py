"""What a worker may touch: the task role's policy, the session tags it is evaluated with, and the
session name that ties a worker's messages to its attempt.

One source for three users: the CDK stack deploys `task_policy` as the task role's policy, the
`worker-api` function assumes that role with `session_tags` for each attempt, and the local runtime
enforces the same document on its agents (`spotrun_local.iam_guard`), since moto does not
evaluate IAM. The instance role itself may do almost nothing (call the worker routes through the
worker-api function's URL, end its own instance): everything a program on the instance could reach through the metadata service is
scoped to the task the instance serves.
"""

from __future__ import annotations

import re
from typing import Any

UPLOADS_PREFIX = "uploads/"  # inputs users upload through presigned URLs
JOBS_PREFIX = "jobs/"  # per job: outputs, logs
CHECKPOINTS_PREFIX = "checkpoints/"  # per task: numbered checkpoints with their manifests

# Session tags (IAM tag values may not contain '#', so the task's partition key is rebuilt from parts).
TAG_JOB = "job"
TAG_TASK = "task"  # the task index as in S3 keys: checkpoints/<job>/<index>/
TAG_TASK_KEY = "task_key"  # the index as in the partition key: TASK#<job>#<index:06d>
TAG_KIND = "kind"  # task | combine (the combine step reads every task's outputs)

# The one attribute of its task item a worker writes itself: its liveness and progress
# (`TaskStore.record_beat`), beside the table's key attributes.
BEAT = "beat"
KEY_ATTRIBUTES = ("pk", "sk")

_JOB = "${aws:PrincipalTag/job}"
_TASK = "${aws:PrincipalTag/task}"
_TASK_KEY = "${aws:PrincipalTag/task_key}"
_SESSION_NAME = re.compile(r"^(?P<job>j-[0-9a-z]{1,40})\.(?P<index>\d{1,7})\.(?P<attempt>\d{1,5})$")


def session_tags(job_id: str, index: int, kind: str) -> dict[str, str]:
    return {TAG_JOB: job_id, TAG_TASK: str(index), TAG_TASK_KEY: f"{index:06d}", TAG_KIND: kind}


def session_name(job_id: str, index: int, attempt: int) -> str:
    """The task-role session of one attempt; SQS reports it in each message's SenderId."""
    return f"{job_id}.{index}.{attempt}"


def log_stream(job_id: str, index: int, attempt: int) -> str:
    """The attempt's stream in the deployment's log group: `<job>/<task>/<attempt>`, so the task role's
    policy can confine a session to its own task's streams by prefix."""
    return f"{job_id}/{index}/{attempt}"


def parse_session_name(name: str) -> tuple[str, int, int] | None:
    match = _SESSION_NAME.match(name)
    if match is None:
        return None
    return match["job"], int(match["index"]), int(match["attempt"])


# What a call through a function URL with AuthType AWS_IAM asks IAM, beside the action: Lambda authorizes
# lambda:InvokeFunctionUrl with lambda:FunctionUrlAuthType and, since October 2025, lambda:InvokeFunction too,
# with lambda:InvokedViaFunctionUrl true (a direct Invoke carries no such key: it is false or missing).
FUNCTION_URL_CALL: tuple[tuple[str, dict[str, str]], ...] = (
    ("lambda:InvokeFunctionUrl", {"lambda:FunctionUrlAuthType": "AWS_IAM"}),
    ("lambda:InvokeFunction", {"lambda:InvokedViaFunctionUrl": "true"}),
)


def worker_routes_statements(function_arn: str) -> list[dict[str, Any]]:
    """The instance role's grant of the worker routes: the worker-api function through its URL, and only so.

    InvokeFunction is conditioned on lambda:InvokedViaFunctionUrl: granted plainly, a program on the instance
    (which can read the instance role's credentials) could invoke the function directly with a made-up URL
    event naming another instance as the caller; through the URL, Lambda writes the signed caller itself."""
    return [
        {
            "Sid": "CallWorkerRoutesUrl",
            "Effect": "Allow",
            "Action": "lambda:InvokeFunctionUrl",
            "Resource": function_arn,
            "Condition": {"StringEquals": {"lambda:FunctionUrlAuthType": "AWS_IAM"}},
        },
        {
            "Sid": "InvokeWorkerApiOnlyThroughItsUrl",
            "Effect": "Allow",
            "Action": "lambda:InvokeFunction",
            "Resource": function_arn,
            "Condition": {"Bool": {"lambda:InvokedViaFunctionUrl": "true"}},
        },
    ]


def instance_policy(*, instances_arn: str, managed_tag: tuple[str, str]) -> dict[str, Any]:
    """What the instance role may do besides calling the worker routes (`worker_routes_statements`)."""
    key, value = managed_tag
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                # The agent ends its own instance when its task is over: the instance whose ARN is the
                # caller's own (${ec2:SourceInstanceARN}, filled in by IAM at request time), and only
                # if it is spotrun's. Should EC2 ever refuse the self-match, the call fails closed and
                # the reaper ends the instance (shutdown behaviour is terminate, too).
                "Sid": "TerminateOwnInstanceOnly",
                "Effect": "Allow",
                "Action": ["ec2:TerminateInstances"],
                "Resource": [instances_arn],
                "Condition": {"StringEquals": {f"aws:ResourceTag/{key}": value,
                                               "aws:ARN": "${ec2:SourceInstanceARN}"}},
            },
        ],
    }


def task_policy(*, table_arn: str, bucket_arn: str, queue_arns: list[str], log_group_arn: str) -> dict[str, Any]:
    """The task role's policy document, evaluated with the session tags of one attempt.

    `log_group_arn` (arn:aws:logs:<region>:<account>:log-group:<name>, without a trailing `:*`) is the
    attempts' log group: a session may put events into its own task's streams and nothing else (the
    worker-api function creates each attempt's stream when the attempt claims its task)."""
    own_checkpoints = f"{bucket_arn}/{CHECKPOINTS_PREFIX}{_JOB}/{_TASK}/*"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "WriteOwnLogStreams",
                "Effect": "Allow",
                "Action": ["logs:PutLogEvents"],
                "Resource": [f"{log_group_arn}:log-stream:{_JOB}/{_TASK}/*"],  # log_stream's layout
            },
            {
                # The task's own item and attempt records (one partition): its desired state, its
                # checkpoint pointer, the predecessor's handover. Every write but the beat (below) goes
                # through the worker-api function, which checks the attempt owns the task.
                "Sid": "ReadOwnTaskItems",
                "Effect": "Allow",
                "Action": ["dynamodb:GetItem", "dynamodb:Query"],
                "Resource": [table_arn],
                "Condition": {
                    "ForAllValues:StringEquals": {"dynamodb:LeadingKeys": [f"TASK#{_JOB}#{_TASK_KEY}"]},
                    "Null": {"dynamodb:LeadingKeys": "false"},
                },
            },
            {
                # The agent's heartbeat: one UpdateItem of its own task's `beat` (no queue, no function).
                # dynamodb:Attributes (every top-level name the request uses; IAM may or may not count a
                # ConditionExpression's, and record_beat's names only `pk` and `beat` there) keeps the write
                # off every other attribute: state, attempt, desired, checkpoint stay the control plane's.
                # What a program holding the session can do with it: write `beat` on items of its own task's
                # partition, or create items there holding only the key and `beat` (UpdateItem upserts; the
                # readers skip them). Readers honour a beat only for the attempt it names while that attempt
                # runs (`items.beat_of`), so at worst the session makes its own attempt look alive or silent,
                # which it could do anyway by beating or not. ReturnValues NONE: the answer carries nothing.
                "Sid": "WriteOwnBeat",
                "Effect": "Allow",
                "Action": ["dynamodb:UpdateItem"],
                "Resource": [table_arn],
                "Condition": {
                    "ForAllValues:StringEquals": {"dynamodb:LeadingKeys": [f"TASK#{_JOB}#{_TASK_KEY}"],
                                                  "dynamodb:Attributes": [*KEY_ATTRIBUTES, BEAT]},
                    "Null": {"dynamodb:LeadingKeys": "false", "dynamodb:Attributes": "false"},
                    "StringEqualsIfExists": {"dynamodb:ReturnValues": "NONE"},
                },
            },
            {
                "Sid": "ReadWriteOwnCheckpoints",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
                           "s3:ListMultipartUploadParts"],
                "Resource": [own_checkpoints],
            },
            {
                "Sid": "ListOwnCheckpoints",
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": [bucket_arn],
                "Condition": {"StringLike": {"s3:prefix": [f"{CHECKPOINTS_PREFIX}{_JOB}/{_TASK}/*"]}},
            },
            {
                "Sid": "WriteOwnOutputsAndLogs",
                "Effect": "Allow",
                "Action": ["s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
                "Resource": [f"{bucket_arn}/{JOBS_PREFIX}{_JOB}/outputs/{_TASK}/*",
                             f"{bucket_arn}/{JOBS_PREFIX}{_JOB}/logs/{_TASK}/*"],
            },
            {
                # Inputs users uploaded through the API (keys are random per upload).
                "Sid": "ReadUploadedInputs",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": [f"{bucket_arn}/{UPLOADS_PREFIX}*"],
            },
            {
                # The combine step runs after every task and reads all of its job's outputs.
                "Sid": "CombineReadsItsJobsOutputs",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": [f"{bucket_arn}/{JOBS_PREFIX}{_JOB}/outputs/*"],
                "Condition": {"StringEquals": {f"aws:PrincipalTag/{TAG_KIND}": "combine"}},
            },
            {
                "Sid": "CombineListsItsJobsOutputs",
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": [bucket_arn],
                "Condition": {"StringLike": {"s3:prefix": [f"{JOBS_PREFIX}{_JOB}/outputs/*"]},
                              "StringEquals": {f"aws:PrincipalTag/{TAG_KIND}": "combine"}},
            },
            {
                # The report queue: its consumer checks each message against the SenderId (this
                # session's name), so a worker cannot speak for another attempt.
                "Sid": "SendReports",
                "Effect": "Allow",
                "Action": ["sqs:SendMessage"],
                "Resource": list(queue_arns),
            },
        ],
    }
