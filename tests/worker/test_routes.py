"""The agent's client of the worker routes retries throttling and 5xx answers with full jitter."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from botocore.credentials import Credentials

from spotrun_worker.routes import RETRY_CAP_SECONDS, HttpRoutes, RouteError


class Busy(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(429)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"message": "Too Many Requests"}')

    def log_message(self, *_: Any) -> None:
        return None


@pytest.fixture
def busy_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Busy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


class InstanceSession:
    def get_credentials(self) -> Credentials:
        return Credentials("AKIDEXAMPLE", "secret")


def waits(url: str, seed: int) -> list[float]:
    slept: list[float] = []
    routes = HttpRoutes(url, InstanceSession(), "us-east-1", sleep=slept.append, jitter=random.Random(seed))
    with pytest.raises(RouteError, match="kept failing"):
        routes.claim(type("Ref", (), {"attempt": 1})())  # type: ignore[arg-type]
    return slept


def test_retries_back_off_exponentially_with_full_jitter(busy_url: str) -> None:
    """A fleet whose calls failed together (a throttled stage) used to retry together: 0.5, 1, 2, 4, 8 s."""
    first, second = waits(busy_url, 1), waits(busy_url, 2)
    assert len(first) == len(second) == 6
    caps = [min(RETRY_CAP_SECONDS, 0.5 * 2**n) for n in range(6)]
    for slept in (first, second):
        assert all(0 <= wait <= cap for wait, cap in zip(slept, caps, strict=True))
    assert first != second and first != caps  # two instances do not come back on the same beat
