"""The agent's view of the control plane: the worker routes, and AWS clients confined to one task.

On an instance the agent holds two identities. The instance role (from the metadata service) may
only call the worker routes (`POST /worker/<operation>` on the worker-api function's own URL, AuthType
AWS_IAM: SigV4 for service `lambda`) and end its own instance. The routes answer with the attempt the instance serves and credentials of the task role
tagged for that one task: its own items (to read, and its beat to write), its own checkpoint and
output prefixes, and the report queue. The agent's DynamoDB, S3 and SQS clients use those, renewed
through the routes before they expire (botocore's refreshable credentials: 15 minutes ahead);
a new task (instance reuse) gets new ones.

`InProcessRoutes` answers the same calls from a ControlPlane in this process, for tests.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from spotrun.attempts import ClaimRefused
from spotrun.domain.messages import AttemptRef
from spotrun.domain.reasons import clip

log = logging.getLogger(__name__)
REQUEST_TIMEOUT = 20.0
SIGNING_SERVICE = "lambda"  # a function URL with AuthType AWS_IAM verifies SigV4 for Lambda
RETRY_CAP_SECONDS = 8.0


@dataclass(frozen=True)
class Assignment:
    ref: AttemptRef
    kind: str
    spec: dict[str, Any]


class RouteError(Exception):
    """The worker routes answered with an error (after retries for the transient ones)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status


class HttpRoutes:
    """The worker routes over HTTPS (`base_url`: the worker-api function's URL), signed with the instance's own
    credentials."""

    def __init__(self, base_url: str, session: Any, region: str, client_config: Any = None,
                 sleep: Any = time.sleep, jitter: random.Random | None = None):
        import boto3

        self.base_url = base_url.rstrip("/")
        self.instance_session = session  # boto3 session with the instance role's credentials
        self.region = region
        self.client_config = client_config
        self.sleep = sleep
        self.jitter = jitter or random.Random()
        self._boto3 = boto3
        self._lock = threading.Lock()
        self.store: Any = None
        self.s3: Any = None
        self.sqs: Any = None
        self.logs: Any = None  # CloudWatch Logs: the attempt's own log stream
        self._table = ""

    def configure(self, table: str) -> None:
        self._table = table

    # --------------------------------------------------------------- operations

    def session(self) -> Assignment | None:
        try:
            answer = self._post("session", {})
        except RouteError as error:
            if error.status == 409:
                return None  # no attempt names this instance (yet)
            raise
        self._use(answer)
        return _assignment(answer)

    def claim(self, ref: AttemptRef) -> None:
        try:
            self._post("claim", {"attempt": ref.attempt})
        except RouteError as error:
            if error.status == 409:
                raise ClaimRefused(str(error)) from None
            raise

    def commit(self, ref: AttemptRef, seq: int, size_bytes: int, method: str, committed_at: datetime,
               measured: dict[str, Any] | None = None, seconds: float | None = None, ranks: int = 1) -> bool:
        """`measured`: the final checkpoint's prediction and the rates behind it (checkpoints.final_measures);
        `seconds`: the capture and upload, for the operators' CheckpointSeconds; `ranks`: a gang checkpoint's parts."""
        try:
            answer = self._post("checkpoint", {"attempt": ref.attempt, "seq": seq, "size_bytes": size_bytes,
                                               "method": method, "committed_at": committed_at.isoformat(),
                                               **(measured or {}), **_seconds(seconds),
                                               **({"ranks": ranks} if ranks > 1 else {})})
        except RouteError as error:
            if error.status == 409:
                return False  # the attempt no longer serves its task
            raise
        return bool(answer.get("committed"))

    def restored(self, ref: AttemptRef, seq: int, from_attempt: int, seconds: float | None = None) -> None:
        try:
            self._post("restored", {"attempt": ref.attempt, "seq": seq, "from_attempt": from_attempt,
                                    **_seconds(seconds)})
        except RouteError as error:  # a timeline note: the restore itself stands
            log.warning("restore of checkpoint %s not noted: %s", seq, error)

    def next(self, ref: AttemptRef) -> tuple[bool, bool]:
        """(got a next task, ask again later). A new task's credentials come with the next `session`."""
        try:
            answer = self._post("next", {"attempt": ref.attempt})
        except RouteError as error:
            if error.status == 409:
                return False, False
            raise
        return answer.get("next") is not None, bool(answer.get("ask_again"))

    # ---------------------------------------------------------------- plumbing

    def _use(self, answer: dict[str, Any]) -> None:
        """Clients for the task the answer names, with its credentials, renewed through `session`."""
        from botocore.credentials import RefreshableCredentials
        from botocore.session import get_session

        from spotrun.adapters.dynamo import DynamoStore

        credentials = answer.get("credentials")
        if not credentials:
            raise RouteError(500, "the worker routes returned no task credentials")

        def metadata(values: dict[str, str]) -> dict[str, str]:
            return {"access_key": values["access_key_id"], "secret_key": values["secret_access_key"],
                    "token": values["session_token"], "expiry_time": values["expiration"]}

        def refresh() -> dict[str, str]:
            fresh = self._post("session", {})
            if (fresh["job_id"], fresh["index"], fresh["attempt"]) != (answer["job_id"], answer["index"],
                                                                     answer["attempt"]):
                # The instance moved on (reused): the old task's clients keep their last credentials.
                return metadata(credentials)
            return metadata(fresh["credentials"])

        botocore_session = get_session()
        botocore_session._credentials = RefreshableCredentials.create_from_metadata(  # noqa: SLF001 - botocore's way
            metadata(credentials), refresh, "spotrun-worker-routes")
        session = self._boto3.session.Session(botocore_session=botocore_session, region_name=self.region)

        def client(name: str) -> Any:
            return session.client(name, region_name=self.region, config=self.client_config)

        with self._lock:
            self.store = DynamoStore(client("dynamodb"), self._table)
            self.s3 = client("s3")
            self.sqs = client("sqs")
            self.logs = client("logs")

    def _post(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        """A signed POST; throttling, 5xx and network errors are retried with backoff."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        url = f"{self.base_url}/worker/{operation}"
        data = json.dumps(body).encode()
        last: Exception | None = None
        for attempt in range(6):
            request = AWSRequest(method="POST", url=url, data=data, headers={"Content-Type": "application/json"})
            frozen = self.instance_session.get_credentials().get_frozen_credentials()
            SigV4Auth(frozen, SIGNING_SERVICE, self.region).add_auth(request)
            prepared = urllib.request.Request(url, data=data, method="POST", headers=dict(request.headers.items()))
            try:
                with urllib.request.urlopen(prepared, timeout=REQUEST_TIMEOUT) as response:  # noqa: S310 - https API
                    return json.loads(response.read() or b"{}")
            except urllib.error.HTTPError as error:
                message = _error_text(error)
                if error.code != 429 and error.code < 500:
                    raise RouteError(error.code, message) from None
                last = RouteError(error.code, message)
            except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
                last = error
            log.warning("worker route %s failed (try %d): %s", operation, attempt + 1, last)
            # Full jitter: a fleet whose calls failed together (a throttled function, a restarted one) must
            # not come back together, on the same exponential beat.
            self.sleep(self.jitter.uniform(0.0, min(RETRY_CAP_SECONDS, 0.5 * 2**attempt)))
        raise RouteError(503, f"worker route {operation} kept failing: {last}")


def _seconds(seconds: float | None) -> dict[str, float]:
    """How long a checkpoint or a restore took, for the operators' metrics (rounded to what they need)."""
    return {} if seconds is None else {"seconds": round(max(0.0, seconds), 3)}


def _error_text(error: urllib.error.HTTPError) -> str:
    try:
        return clip(str(json.loads(error.read() or b"{}").get("error") or error.reason), 500)
    except ValueError:
        return clip(str(error.reason), 500)


def _assignment(answer: dict[str, Any]) -> Assignment:
    ref = AttemptRef(job_id=answer["job_id"], index=answer["index"], attempt=answer["attempt"],
                     instance_id=answer["instance_id"], rank=answer.get("rank", 0))
    return Assignment(ref, answer["kind"], answer["spec"])


class InProcessRoutes:
    """The same operations answered in this process (no HTTP, no task credentials): tests."""

    def __init__(self, cp: Any, instance_id: str, store: Any = None, s3: Any = None, sqs: Any = None,
                 logs: Any = None):
        self.cp = cp
        self.instance_id = instance_id
        self.store = store if store is not None else (cp.store if cp is not None else None)
        self.s3 = s3
        self.sqs = sqs
        self.logs = logs

    def configure(self, table: str) -> None:
        return None

    def session(self) -> Assignment | None:
        from spotrun import assignments

        try:
            found = assignments.assignment(self.cp, self.instance_id)
        except assignments.NotServing:
            return None
        return Assignment(found.ref, found.kind, found.spec)

    def claim(self, ref: AttemptRef) -> None:
        from spotrun import assignments

        try:
            assignments.claim_attempt(self.cp, self.instance_id, ref.attempt)
        except assignments.NotServing as problem:
            raise ClaimRefused(str(problem)) from None

    def commit(self, ref: AttemptRef, seq: int, size_bytes: int, method: str, committed_at: datetime,
               measured: dict[str, Any] | None = None, seconds: float | None = None, ranks: int = 1) -> bool:
        from spotrun import assignments

        try:
            return assignments.commit(self.cp, self.instance_id, ref.attempt, seq, size_bytes, method, committed_at,
                                      **(measured or {}), ranks=ranks)
        except assignments.NotServing:
            return False

    def restored(self, ref: AttemptRef, seq: int, from_attempt: int, seconds: float | None = None) -> None:
        from spotrun import assignments

        assignments.restored(self.cp, self.instance_id, ref.attempt, seq, from_attempt)

    def next(self, ref: AttemptRef) -> tuple[bool, bool]:
        from spotrun import assignments

        try:
            found = assignments.next_task(self.cp, self.instance_id, ref.attempt)
        except assignments.NotServing:
            return False, False
        return found.worker is not None, found.ask_again

