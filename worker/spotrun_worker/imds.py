"""Instance metadata (IMDSv2): who this instance is, and whether it is about to be reclaimed.

The endpoint comes from SPOTRUN_IMDS_ENDPOINT (the local runtime's stand-in), else botocore's
AWS_EC2_METADATA_SERVICE_ENDPOINT, else the link-local address.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from datetime import datetime
from typing import Any

DEFAULT_ENDPOINT = "http://169.254.169.254"
TOKEN_TTL_SECONDS = 21600


class MetadataUnavailable(RuntimeError):
    pass


class Imds:
    def __init__(self, endpoint: str | None = None, timeout: float = 2.0):
        self.endpoint = (endpoint or os.environ.get("SPOTRUN_IMDS_ENDPOINT")
                         or os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
        self.timeout = timeout
        self._token: str | None = None
        self._token_expires = 0.0

    def _fetch_token(self) -> str:
        if self._token and time.monotonic() < self._token_expires:
            return self._token
        request = urllib.request.Request(
            f"{self.endpoint}/latest/api/token", method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_SECONDS)},
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as answer:  # noqa: S310 - fixed metadata URL
            self._token = answer.read().decode()
        self._token_expires = time.monotonic() + TOKEN_TTL_SECONDS - 60
        return self._token

    def get(self, path: str) -> str | None:
        """The value at a metadata path, or None when it is not there (404)."""
        for attempt in range(3):
            try:
                request = urllib.request.Request(f"{self.endpoint}/latest/meta-data/{path}",
                                                 headers={"X-aws-ec2-metadata-token": self._fetch_token()})
                with urllib.request.urlopen(request, timeout=self.timeout) as answer:  # noqa: S310
                    return answer.read().decode()
            except urllib.error.HTTPError as error:
                if error.code == 404:
                    return None
                if error.code == 401:
                    self._token = None  # expired token: fetch a new one
                    continue
                raise MetadataUnavailable(f"{path}: HTTP {error.code}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
                if attempt == 2:
                    raise MetadataUnavailable(f"{path}: {error}") from None
                time.sleep(0.2 * (attempt + 1))
        return None

    def instance_id(self) -> str:
        value = self.get("instance-id")
        if not value:
            raise MetadataUnavailable("no instance-id")
        return value

    def spot_action(self) -> dict[str, Any] | None:
        """`{"action": "terminate", "time": ...}` once a reclaim is scheduled, else None."""
        raw = self.get("spot/instance-action")
        if not raw:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            return None
        if isinstance(value, dict) and isinstance(value.get("time"), str):
            value["deadline"] = datetime.fromisoformat(value["time"].replace("Z", "+00:00"))
        return value if isinstance(value, dict) else None

    def rebalance_notice(self) -> bool:
        return self.get("events/recommendations/rebalance") is not None
