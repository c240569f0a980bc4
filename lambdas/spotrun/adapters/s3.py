"""S3: presigned transfer URLs for users (inputs up, outputs down) and the job's stored spec."""

from __future__ import annotations

import json
from typing import Any

URL_SECONDS = 3600


class S3Blobs:
    """Takes a boto3 S3 client and the bucket name."""

    def __init__(self, client: Any, bucket: str):
        self.client = client
        self.bucket = bucket

    def upload_url(self, key: str) -> str:
        return str(self.client.generate_presigned_url(
            "put_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=URL_SECONDS
        ))

    def download_url(self, key: str) -> str:
        return str(self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=URL_SECONDS
        ))

    def keys(self, prefix: str, limit: int = 1000) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            found.extend({"key": o["Key"], "size": o["Size"]} for o in page.get("Contents", []))
            if len(found) >= limit:
                break
        return found[:limit]

    def put_json(self, key: str, value: Any) -> None:
        self.client.put_object(
            Bucket=self.bucket, Key=key, Body=json.dumps(value, separators=(",", ":")).encode(),
            ContentType="application/json",
        )
