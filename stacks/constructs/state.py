"""Durable state: the single DynamoDB table and the data bucket (inputs, outputs, logs, checkpoints)."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_s3 as s3
from constructs import Construct

from spotrun import resources
from spotrun.access import CHECKPOINTS_PREFIX, JOBS_PREFIX, UPLOADS_PREFIX

# Key prefixes of the data bucket (spotrun.access), as spotrun.jobs and the worker agent use them;
# the API's presign grant and the task role are scoped to them.
USER_PREFIXES = (UPLOADS_PREFIX, JOBS_PREFIX)

# A superseded checkpoint is worth nothing once the next one is committed; keep it one day in case
# an operator needs to look at it, then let S3 drop it.
CHECKPOINT_NONCURRENT_DAYS = 1
OTHER_NONCURRENT_DAYS = 30
ACCESS_LOG_DAYS = 90


class State(Construct):
    """The table of record and the bucket every job's files go through."""

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.table = self._table(resources.TABLE)
        self.log_bucket = self._log_bucket()
        self.bucket = self._data_bucket(self.log_bucket)

    def _table(self, definition: resources.TableDef) -> dynamodb.Table:
        table = dynamodb.Table(
            self,
            "Table",
            partition_key=dynamodb.Attribute(name=definition.partition_key, type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name=definition.sort_key, type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            time_to_live_attribute=definition.ttl_attribute,
            deletion_protection=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        for index in definition.indexes:
            table.add_global_secondary_index(
                index_name=index.name,
                partition_key=dynamodb.Attribute(name=index.partition_key, type=dynamodb.AttributeType.STRING),
                sort_key=dynamodb.Attribute(name=index.sort_key, type=dynamodb.AttributeType.STRING),
                projection_type=dynamodb.ProjectionType(index.projection),
            )
        return table

    def _log_bucket(self) -> s3.Bucket:
        # SSE-S3 only: S3 server access logging cannot deliver into a KMS-encrypted bucket.
        bucket = s3.Bucket(
            self,
            "AccessLogs",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-logs",
                    expiration=Duration.days(ACCESS_LOG_DAYS),
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                )
            ],
            removal_policy=RemovalPolicy.RETAIN,
        )
        return bucket

    def _data_bucket(self, log_bucket: s3.IBucket) -> s3.Bucket:
        return s3.Bucket(
            self,
            "Data",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            # Versioning guards job outputs against an accidental overwrite or delete; the lifecycle
            # rules below keep the cost of superseded checkpoint versions to about a day.
            versioned=True,
            server_access_logs_bucket=log_bucket,
            server_access_logs_prefix="s3-access/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="abort-incomplete-uploads",
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                    expired_object_delete_marker=True,
                ),
                s3.LifecycleRule(
                    id="expire-superseded-checkpoints",
                    prefix=CHECKPOINTS_PREFIX,
                    noncurrent_version_expiration=Duration.days(CHECKPOINT_NONCURRENT_DAYS),
                ),
                # Overlaps the rule above for checkpoints/; S3 honours the shorter expiration.
                s3.LifecycleRule(
                    id="expire-noncurrent-versions",
                    noncurrent_version_expiration=Duration.days(OTHER_NONCURRENT_DAYS),
                ),
            ],
            removal_policy=RemovalPolicy.RETAIN,
        )
