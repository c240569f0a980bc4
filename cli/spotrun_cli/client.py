"""The API client: every request signed with SigV4 for `execute-api`, sent with requests."""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import BotoCoreError

from spotrun_cli.render import event_cursor, event_key

SERVICE = "execute-api"
DEFAULT_REGION = "us-east-1"
_API_HOST = re.compile(r"\.execute-api\.([a-z]{2}(?:-[a-z]+)+-\d+)\.")
TIMEOUT = (10, 60)  # connect, read
THROTTLED_TRIES = 6  # a request answered 429 (throttled) is sent up to this many times


class ConfigError(Exception):
    """No endpoint or no credentials: the user must configure something."""


class ApiError(Exception):
    def __init__(self, status: int, body: Any, text: str = ""):
        super().__init__(f"HTTP {status}")
        self.status, self.body, self.text = status, body, text


class Unreachable(Exception):
    """The API could not be reached at all."""


def region_for(api: str, explicit: str | None = None, environ: dict[str, str] | None = None,
               configured: str | None = None) -> str:
    """--region, else the region in an execute-api host name (signing for another one cannot work there),
    else AWS_REGION / AWS_DEFAULT_REGION, else the profile's region, else us-east-1."""
    environ = os.environ if environ is None else environ
    if explicit:
        return explicit
    match = _API_HOST.search(urlsplit(api).hostname or "")
    if match:
        return match.group(1)
    return environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or configured or DEFAULT_REGION


def normalize_api(api: str | None) -> str:
    if not api:
        raise ConfigError("no API endpoint: pass --api URL or set SPOTRUN_API "
                          "(`make run` prints the local one; `cdk deploy` outputs the deployed one)")
    parts = urlsplit(api)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"the API endpoint must be an http(s) URL, got {api!r}")
    return api.rstrip("/")


class ApiClient:
    def __init__(self, api: str, credentials: Any, region: str, http: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep, jitter: random.Random | None = None):
        self.api = normalize_api(api)
        self.credentials = credentials  # botocore credentials (refreshable or not)
        self.region = region
        self.http = http or requests.Session()
        self.sleep = sleep
        self.jitter = jitter or random.Random()

    @classmethod
    def from_environment(cls, api: str | None, region: str | None = None, profile: str | None = None) -> ApiClient:
        import botocore.session

        base = normalize_api(api or os.environ.get("SPOTRUN_API"))
        try:
            session = botocore.session.Session(profile=profile)
            credentials = session.get_credentials()
            configured = session.get_config_variable("region")
        except BotoCoreError as error:
            raise ConfigError(f"cannot load AWS credentials: {error}") from error
        if credentials is None:
            raise ConfigError("no AWS credentials found (botocore's default chain: environment, profile, SSO, "
                              "instance role); for the local API export the AWS_ACCESS_KEY_ID and "
                              "AWS_SECRET_ACCESS_KEY that `make run` printed")
        return cls(base, credentials, region_for(base, region, configured=configured))

    # ------------------------------------------------------------------ plumbing

    def url(self, path: str, query: dict[str, Any] | None = None) -> str:
        """The full URL, with the query in SigV4's canonical encoding so what is signed is what is sent."""
        pairs = sorted((k, str(v)) for k, v in (query or {}).items() if v is not None)
        text = urlencode(pairs, quote_via=quote, safe="-_.~")
        return f"{self.api}{path}" + (f"?{text}" if text else "")

    def signed(self, method: str, url: str, body: bytes | None) -> tuple[str, dict[str, str], bytes | None]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        request = AWSRequest(method=method, url=url, data=body, headers=headers)
        SigV4Auth(self.credentials.get_frozen_credentials(), SERVICE, self.region).add_auth(request)
        prepared = request.prepare()
        return prepared.url, dict(prepared.headers.items()), prepared.body

    def request(self, method: str, path: str, query: dict[str, Any] | None = None, body: Any = None) -> Any:
        payload = None if body is None else json.dumps(body).encode()
        for attempt in range(THROTTLED_TRIES):
            url, headers, data = self.signed(method, self.url(path, query), payload)  # a fresh signature each time
            try:
                response = self.http.request(method, url, headers=headers, data=data, timeout=TIMEOUT)
            except requests.RequestException as error:
                raise Unreachable(f"cannot reach the spotrun API at {self.api} ({_reason(error)})") from error
            if response.status_code != 429 or attempt == THROTTLED_TRIES - 1:
                break
            # Throttled by API Gateway (the stage's rate limit): the request never reached spotrun, so it is
            # sent again, after the server's Retry-After or an exponential wait with full jitter.
            self.sleep(_retry_after(response) or self.jitter.uniform(0.0, min(8.0, 0.5 * 2**attempt)))
        try:
            parsed = response.json() if response.content else None
        except ValueError:
            parsed = None
        if not 200 <= response.status_code < 300:
            raise ApiError(response.status_code, parsed, response.text)
        return parsed

    # ------------------------------------------------------------------ the routes

    def submit(self, spec: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        return self.request("POST", "/jobs", {"idempotency_key": idempotency_key}, spec)

    def list_jobs(self, state: str | None = None, limit: int = 20, next_token: str | None = None) -> dict[str, Any]:
        return self.request("GET", "/jobs", {"state": state, "limit": limit, "next_token": next_token})

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self.request("GET", f"/jobs/{_seg(job_id)}")

    def list_tasks(self, job_id: str, limit: int = 100, next_token: str | None = None,
                   state: str | None = None) -> dict[str, Any]:
        return self.request("GET", f"/jobs/{_seg(job_id)}/tasks",
                            {"limit": limit, "next_token": next_token, "state": state})

    def tasks(self, job_id: str, most: int) -> tuple[list[dict[str, Any]], bool]:
        """Up to `most` tasks in index order, and whether there are more."""
        found: list[dict[str, Any]] = []
        token = None
        while len(found) < most:
            page = self.list_tasks(job_id, limit=min(100, most - len(found)), next_token=token)
            found.extend(page.get("tasks", []))
            token = page.get("next_token")
            if not token:
                return found, False
        return found[:most], True

    def get_task(self, job_id: str, index: int) -> dict[str, Any]:
        return self.request("GET", f"/jobs/{_seg(job_id)}/tasks/{int(index)}")

    def events(self, job_id: str, limit: int = 1000, after: str | None = None) -> list[dict[str, Any]]:
        return self.request("GET", f"/jobs/{_seg(job_id)}/events", {"limit": limit, "after": after})["events"]

    def all_events(self, job_id: str) -> Iterator[dict[str, Any]]:
        """The whole timeline, oldest first, page by page."""
        feed = EventFeed(self, job_id, pages_per_poll=1)
        while True:
            fresh = feed.poll()
            yield from fresh
            if not feed.more:
                return

    def task_log(self, job_id: str, index: int, attempt: int | None = None, next_token: str | None = None,
                 limit: int = 1000, newest: bool = False) -> dict[str, Any]:
        """One page of an attempt's log: {job_id, task, attempt, events: [{at, message}], next_token, kept}."""
        return self.request("GET", f"/jobs/{_seg(job_id)}/tasks/{int(index)}/logs",
                            {"attempt": attempt, "next_token": next_token, "limit": limit,
                             "newest": "true" if newest else None})

    def checkpoint(self, job_id: str, index: int | None = None) -> dict[str, Any]:
        task = "" if index is None else f"/tasks/{int(index)}"
        return self.request("POST", f"/jobs/{_seg(job_id)}{task}/checkpoint")

    def stats(self, job_id: str) -> dict[str, Any]:
        return self.request("GET", f"/jobs/{job_id}/stats")

    def control(self, job_id: str, action: str) -> dict[str, Any]:
        return self.request("POST", f"/jobs/{_seg(job_id)}/{action}")

    def cancel_task(self, job_id: str, index: int) -> dict[str, Any]:
        return self.request("POST", f"/jobs/{_seg(job_id)}/tasks/{int(index)}/cancel")

    def upload_url(self, filename: str) -> dict[str, str]:
        return self.request("POST", "/uploads", body={"filename": filename})

    def outputs(self, job_id: str) -> list[dict[str, Any]]:
        return self.request("GET", f"/jobs/{_seg(job_id)}/outputs")["outputs"]


class EventFeed:
    """A job's timeline read incrementally: each poll returns the events not seen before, oldest first.

    The API's `after` cursor is exclusive of the sort key '<time>#<id>', so events at exactly the
    cursor's time come back once more; they are recognized and dropped.
    """

    PAGE = 1000

    def __init__(self, client: ApiClient, job_id: str, pages_per_poll: int = 3):
        self.client, self.job_id, self.pages_per_poll = client, job_id, pages_per_poll
        self.after: str | None = None
        self.at_cursor: set[str] = set()  # keys of the events seen at the cursor's time
        self.more = True  # whether the last poll stopped at a full page

    def poll(self) -> list[dict[str, Any]]:
        new: list[dict[str, Any]] = []
        for _ in range(self.pages_per_poll):
            batch = self.client.events(self.job_id, self.PAGE, self.after)
            fresh = [e for e in batch if event_key(e) not in self.at_cursor]
            new.extend(fresh)
            if batch:
                cursor = event_cursor(batch[-1]["at"])
                same = {event_key(e) for e in batch if event_cursor(e["at"]) == cursor}
                self.at_cursor = same | (self.at_cursor if cursor == self.after else set())
                self.after = cursor
            self.more = len(batch) >= self.PAGE and bool(fresh)
            if not self.more:
                break
        return new


def _retry_after(response: requests.Response) -> float | None:
    try:
        seconds = float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None
    return min(seconds, 60.0) if seconds >= 0 else None


def _seg(value: str) -> str:
    return quote(str(value), safe="")


def _reason(error: requests.RequestException) -> str:
    text = str(error)
    if isinstance(error, requests.Timeout):
        return "timed out"
    for needle, reason in (("Connection refused", "connection refused"),
                           ("Name or service not known", "unknown host"),
                           ("nodename nor servname", "unknown host"),
                           ("Failed to resolve", "unknown host"),
                           ("CERTIFICATE_VERIFY_FAILED", "TLS certificate not trusted")):
        if needle in text:
            return reason
    return f"{type(error).__name__}: {text[:200]}"
