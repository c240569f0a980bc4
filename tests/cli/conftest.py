"""Fixtures for the CLI and the local API gateway: a fake API handler, the gateway in front of it, and
a tiny blob server standing in for S3's presigned URLs."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "cli"))  # until pyproject's pytest pythonpath lists "cli"

JOB_ID = "j-0194f3a2b1c0a1b2c3d4"


def job_view(state: str = "RUNNING", **changes: Any) -> dict[str, Any]:
    return {"job_id": JOB_ID, "name": "pi-sweep", "state": state, "desired": "RUN", "tasks": 2, "combine": True,
            "counts": {"RUNNING": 1, "SUCCEEDED": 1, "WAITING": 1}, "active": 1,
            "created_at": "2026-11-23T12:00:00+00:00", "updated_at": "2026-11-23T12:05:00+00:00", "spec": {},
            **changes}


def task_view(index: int, state: str = "RUNNING", **changes: Any) -> dict[str, Any]:
    return {"index": index, "kind": "task", "state": state, "attempt": 1, "desired": "RUN",
            "pool": "c6i.large@us-east-1a", "market": "spot", "instance_id": "i-0abc", "progress": 0.5,
            "program_failures": 0, "environment_failures": 0, "interruptions": 0, "exit_code": None, "reason": "",
            "log_tail": "", "last_heartbeat_at": None, "checkpoint": {"seq": 2, "attempt": 1, "bytes": 10,
                                                                        "committed_at": "2026-11-23T12:04:00+00:00"},
            "launched_at": None, "started_at": None, "finished_at": None, **changes}


def log_page(attempt: int, lines: list[str], token: str, task: int = 0) -> dict[str, Any]:
    return {"job_id": JOB_ID, "task": task, "attempt": attempt, "next_token": token, "kept": True,
            "events": [{"at": f"2026-11-23T12:00:{n:02d}+00:00", "message": line} for n, line in enumerate(lines)]}


def event_view(at: str, kind: str, task: int | None = None) -> dict[str, Any]:
    return {"at": at, "kind": kind, "task": task, "attempt": 1 if task is not None else None, "detail": {}}


class FakeApi:
    """An API handler with canned answers per 'METHOD /path'; records every event it gets."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.routes: dict[str, Any] = {}

    def answer(self, route: str, status: int, body: Any) -> None:
        """`body` may be a list: one answer per call, the last one repeated."""
        self.routes[route] = (status, body)

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self.events.append(event)
        route = f"{event['httpMethod']} {event['path']}"
        status, body = self.routes.get(route, (404, {"error": f"no route {route}"}))
        if isinstance(body, list):
            body = body.pop(0) if len(body) > 1 else body[0]
        return {"statusCode": status, "multiValueHeaders": {"Content-Type": ["application/json"]},
                "body": json.dumps(body), "isBase64Encoded": False}

    def calls(self, route: str) -> list[dict[str, Any]]:
        return [e for e in self.events if f"{e['httpMethod']} {e['path']}" == route]


@pytest.fixture
def fake_api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def gateway(fake_api: FakeApi) -> Iterator[Any]:
    from spotrun_local.gateway import new_local_credentials, start_gateway

    server = start_gateway(fake_api, new_local_credentials())
    yield server
    server.stop()


@pytest.fixture
def cli_env(gateway: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """The environment a user sets after `make run`: SPOTRUN_API and the gateway's credentials."""
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("SPOTRUN_API", gateway.url)
    for name, value in gateway.credentials.env().items():
        monkeypatch.setenv(name, value)
    return gateway


class BlobServer:
    """Stands in for S3 presigned URLs: PUT stores a body, GET returns it."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        blobs = self.blobs

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:  # noqa: N802
                blobs[self.path] = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:  # noqa: N802
                body = blobs.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}{path}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def blobs() -> Iterator[BlobServer]:
    server = BlobServer()
    yield server
    server.stop()
