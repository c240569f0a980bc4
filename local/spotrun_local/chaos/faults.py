"""Faults in AWS calls, injected with botocore event hooks on a session's or a client's event emitter.

- `transient`: a throttling or 5xx answer instead of sending the request (`before-send`); the SDK's
  retry logic sees it like a real one and retries the call;
- `surfaced`: the same answer returned before the SDK's retry loop (`before-call`), as when the
  retries are used up: the caller gets the error;
- `lost_response`: a DynamoDB write or an S3 PutObject is sent and applied, then its answer is
  replaced by a 500 (`before-send`);
  the SDK sends it again, so a conditional write finds its own change (an ambiguous outcome, as after
  a timeout in AWS);
- `crash_before_write` / `crash_after_write` (the control plane only): the invocation dies just
  before a write is sent, or just after a write succeeded (`before-call` / `after-call` raise
  `InjectedCrash`), so the invocation ends between two of its writes;
- `kill_mid_checkpoint_upload` (agents only): right after a checkpoint file reached S3 the agent
  process SIGKILLs itself, leaving files without a manifest or a commit;
- `drop_beat` (agents only): a heartbeat's write (the agent's one DynamoDB write, an UpdateItem of
  its task's beat) fails past the SDK's retries (`before-call`): the beat is lost, the agent logs it
  and beats again at its next interval. Counted as `heartbeat_dropped`.

Every fault is counted in a `FaultLog` (and appended to a JSON-lines file in agent processes).
Only this module's dependencies (botocore, the standard library) are imported: it is loaded at the
start of every agent process.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WRITE_OPERATIONS: dict[str, frozenset[str]] = {
    "dynamodb": frozenset({"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"}),
    "s3": frozenset({"PutObject", "UploadPart", "CreateMultipartUpload", "CompleteMultipartUpload", "DeleteObject",
                     "DeleteObjects", "CopyObject"}),
    "sns": frozenset({"Publish", "PublishBatch"}),
    "ec2": frozenset({"RunInstances", "TerminateInstances", "CreateTags"}),
}  # (the control plane sends nothing to SQS; the SQS calls of the pumps are the event source's, not spotrun's)
TRANSIENT_SERVICES = frozenset({"dynamodb", "s3"})

# (status, code) answers AWS gives when it is busy or broken; all of them are retryable.
TRANSIENT_ANSWERS: dict[str, tuple[tuple[int, str], ...]] = {
    "dynamodb": ((400, "ThrottlingException"), (400, "ProvisionedThroughputExceededException"),
                 (500, "InternalServerError"), (503, "ServiceUnavailable")),
    "s3": ((503, "SlowDown"), (500, "InternalError"), (503, "ServiceUnavailable")),
}


class InjectedCrash(Exception):
    """The invocation dies here (an injected fault, not a product error)."""


@dataclass
class FaultRates:
    """Probabilities per call (or per write, for the write faults)."""

    transient: float = 0.0
    surfaced: float = 0.0
    lost_response: float = 0.0
    crash_before_write: float = 0.0
    crash_after_write: float = 0.0
    kill_mid_checkpoint_upload: float = 0.0
    drop_beat: float = 0.0
    # Faults are injected only while this is true (the soak turns chaos off before its final checks).
    enabled: bool = True

    RATES = ("transient", "surfaced", "lost_response", "crash_before_write", "crash_after_write",
             "kill_mid_checkpoint_upload", "drop_beat")

    def env(self, prefix: str = "SPOTRUN_CHAOS_") -> dict[str, str]:
        return {f"{prefix}{name.upper()}": str(getattr(self, name)) for name in self.RATES}

    @classmethod
    def from_env(cls, env: Mapping[str, str], prefix: str = "SPOTRUN_CHAOS_") -> FaultRates:
        rates = cls()
        for name in cls.RATES:
            raw = env.get(f"{prefix}{name.upper()}")
            if raw is not None:
                setattr(rates, name, float(raw))
        return rates


@dataclass
class FaultLog:
    """Counts of injected faults by kind; thread-safe; optionally appended to a JSON-lines file."""

    path: Path | None = None
    counts: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _local: threading.local = field(default_factory=threading.local)

    def add(self, kind: str, **detail: Any) -> None:
        with self._lock:
            self.counts[kind] += 1
        self._local.count = getattr(self._local, "count", 0) + 1
        if self.path is not None:
            line = json.dumps({"kind": kind, "at": time.time(), **detail}, default=str)
            with self.path.open("a") as handle:  # one write per line, flushed at close: survives a SIGKILL
                handle.write(line + "\n")

    def in_this_thread(self) -> int:
        """Faults injected so far in the calling thread (to tell whether an invocation met one)."""
        return getattr(self._local, "count", 0)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)


class _Body:
    def __init__(self, data: bytes):
        self._data = data

    def stream(self, **_: Any) -> Any:
        yield self._data

    def read(self, *_: Any) -> bytes:
        data, self._data = self._data, b""
        return data


def error_answer(service: str, status: int, code: str, url: str = "http://chaos") -> Any:
    """An HTTP answer shaped as `service` shapes its errors, for botocore to parse and retry."""
    from botocore.awsrequest import AWSResponse
    from botocore.compat import HTTPHeaders

    message = f"injected by the spotrun chaos soak ({code})"
    if service == "s3":
        body = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message>"
                "<RequestId>chaos</RequestId></Error>").encode()
        content_type = "application/xml"
    else:
        body = json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message}).encode()
        content_type = "application/x-amz-json-1.0"
    headers = HTTPHeaders()
    headers["Content-Type"] = content_type
    headers["x-amzn-RequestId"] = "chaos"
    headers["Content-Length"] = str(len(body))
    return AWSResponse(url, status, headers, _Body(body))


def _parsed_error(status: int, code: str) -> dict[str, Any]:
    return {"Error": {"Code": code, "Message": f"injected by the spotrun chaos soak ({code})"},
            "ResponseMetadata": {"HTTPStatusCode": status, "RequestId": "chaos", "HTTPHeaders": {}, "RetryAttempts": 0}}


class _Status:
    def __init__(self, status: int):
        self.status_code = status
        self.headers: dict[str, str] = {}
        self.content = b""


def _split(event_name: str) -> tuple[str, str]:
    parts = event_name.split(".")
    return (parts[1], parts[2]) if len(parts) >= 3 else ("", "")


class ServiceFaults:
    """The hooks for one role ("cp" or "agent"); `install` registers them on an event emitter."""

    def __init__(self, role: str, rng: random.Random, log: FaultLog, rates: FaultRates,
                 ensure: set[str] | None = None):
        self.role = role
        self.rng = rng
        self.log = log
        self.rates = rates
        # Rate names to inject at the first chance regardless of the dice (shared by the caller, emptied here):
        # the soak uses it so that every kind of fault happens at least once, however short the run.
        self.ensure = ensure if ensure is not None else set()
        self._lock = threading.Lock()

    def _roll(self, probability: float, name: str = "") -> bool:
        if probability <= 0 or not self.rates.enabled:
            return False
        with self._lock:
            if name in self.ensure:
                self.ensure.discard(name)
                return True
            return self.rng.random() < probability

    def _choice(self, options: tuple[Any, ...]) -> Any:
        with self._lock:
            return self.rng.choice(options)

    def install(self, events: Any) -> None:
        events.register("before-call", self.before_call)
        events.register("before-send", self.before_send)
        events.register("after-call", self.after_call)

    # ------------------------------------------------------------- hooks

    def before_call(self, event_name: str = "", **_: Any) -> Any:
        service, operation = _split(event_name)
        if operation in WRITE_OPERATIONS.get(service, ()) and self._roll(self.rates.crash_before_write, "crash_before_write"):
            self.log.add(f"{self.role}_crash_before_write", op=f"{service}.{operation}")
            raise InjectedCrash(f"injected crash before {service}.{operation}")
        # An agent's only DynamoDB write is its beat (every other change goes through the worker routes).
        if (self.role == "agent" and service == "dynamodb" and operation == "UpdateItem"
                and self._roll(self.rates.drop_beat, "drop_beat")):
            self.log.add("heartbeat_dropped", op=f"{service}.{operation}")
            return _Status(500), _parsed_error(500, "InternalServerError")
        if service in TRANSIENT_SERVICES and self._roll(self.rates.surfaced, "surfaced"):
            status, code = self._choice(TRANSIENT_ANSWERS[service])
            self.log.add(f"{self.role}_surfaced_error", op=f"{service}.{operation}", code=code)
            return _Status(status), _parsed_error(status, code)
        return None

    def before_send(self, event_name: str = "", request: Any = None, **_: Any) -> Any:
        service, operation = _split(event_name)
        if service not in TRANSIENT_SERVICES:
            return None
        # Agents write one table attribute themselves (their beat); their other ambiguous writes are S3
        # puts: checkpoint manifests, outputs, logs.
        if (((service == "dynamodb" and operation in WRITE_OPERATIONS["dynamodb"])
             or (service == "s3" and operation == "PutObject"))
                and self._roll(self.rates.lost_response, "lost_response")):
            from botocore.httpsession import URLLib3Session

            real = URLLib3Session().send(request)
            if real.status_code < 300:
                self.log.add(f"{self.role}_lost_response", op=f"{service}.{operation}")
                return error_answer(service, 500, "InternalServerError", request.url)
            return real
        if self._roll(self.rates.transient, "transient"):
            status, code = self._choice(TRANSIENT_ANSWERS[service])
            self.log.add(f"{self.role}_transient_error", op=f"{service}.{operation}", code=code,
                         checkpoint="/checkpoints/" in (request.url if request is not None else ""))
            return error_answer(service, status, code, request.url if request is not None else "http://chaos")
        return None

    def after_call(self, event_name: str = "", http_response: Any = None, context: Any = None, **_: Any) -> None:
        service, operation = _split(event_name)
        ok = http_response is not None and http_response.status_code < 300
        if not ok or operation not in WRITE_OPERATIONS.get(service, ()):
            return
        if self.role == "agent" and service == "s3" and operation in ("PutObject", "UploadPart"):
            url = getattr(http_response, "url", "") or ""
            if "/checkpoints/" in url and "/files/" in url and self._roll(self.rates.kill_mid_checkpoint_upload, "kill_mid_checkpoint_upload"):
                self.log.add(f"{self.role}_kill_mid_checkpoint_upload", op=f"{service}.{operation}", url=url)
                os.kill(os.getpid(), signal.SIGKILL)
        if self._roll(self.rates.crash_after_write, "crash_after_write"):
            self.log.add(f"{self.role}_crash_after_write", op=f"{service}.{operation}")
            raise InjectedCrash(f"injected crash after {service}.{operation} succeeded")


def install_in_process(env: Mapping[str, str]) -> ServiceFaults | None:
    """For an agent process (called from sitecustomize): every botocore client it makes gets the hooks."""
    seed = env.get("SPOTRUN_CHAOS_SEED")
    if not seed:
        return None
    import botocore.session

    rates = FaultRates.from_env(env)
    rates.crash_before_write = rates.crash_after_write = 0.0  # an agent's crash is a SIGKILL, injected apart
    log_path = env.get("SPOTRUN_CHAOS_LOG")
    ensure = {name for name in env.get("SPOTRUN_CHAOS_ENSURE", "").split(",") if name}
    faults = ServiceFaults("agent", random.Random(seed), FaultLog(Path(log_path) if log_path else None), rates, ensure)
    original = botocore.session.Session.create_client

    def create_client(self: Any, *args: Any, **kwargs: Any) -> Any:
        client = original(self, *args, **kwargs)
        faults.install(client.meta.events)
        return client

    botocore.session.Session.create_client = create_client  # type: ignore[method-assign]
    return faults
