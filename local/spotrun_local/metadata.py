"""A stand-in for the instance metadata service (IMDSv2) of every local instance.

One HTTP server; each instance's agent is pointed at `http://127.0.0.1:<port>/<instance-id>` and
sees the paths of the real service under it. Tokens are required as with IMDSv2
(`PUT /latest/api/token`, then the `X-aws-ec2-metadata-token` header), and the market replay posts
spot instance-action and rebalance notices here.
"""

from __future__ import annotations

import json
import secrets
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from spotrun.provision import WORKER_IMAGE_ID


class MetadataService:
    def __init__(self) -> None:
        self._instances: dict[str, dict[str, str]] = {}
        self._actions: dict[str, dict[str, str]] = {}
        self._rebalance: dict[str, str] = {}
        self._tokens: set[str] = set()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def register(self, instance_id: str, instance_type: str, zone: str, image_id: str = WORKER_IMAGE_ID,
                 address: str | None = None) -> None:
        with self._lock:
            self._instances[instance_id] = {"instance-id": instance_id, "instance-type": instance_type,
                                            "placement/availability-zone": zone, "ami-id": image_id,
                                            **({"local-ipv4": address} if address else {})}

    def schedule_action(self, instance_id: str, action: str, at: datetime) -> None:
        with self._lock:
            self._actions[instance_id] = {"action": action, "time": at.strftime("%Y-%m-%dT%H:%M:%SZ")}

    def recommend_rebalance(self, instance_id: str, at: datetime) -> None:
        with self._lock:
            self._rebalance[instance_id] = at.strftime("%Y-%m-%dT%H:%M:%SZ")

    def endpoint(self, instance_id: str) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/{instance_id}"

    def _answer(self, instance_id: str, path: str) -> str | None:
        with self._lock:
            facts = self._instances.get(instance_id)
            if facts is None:
                return None
            if path == "spot/instance-action":
                action = self._actions.get(instance_id)
                return json.dumps(action) if action else None
            if path == "events/recommendations/rebalance":
                notice = self._rebalance.get(instance_id)
                return json.dumps({"noticeTime": notice}) if notice else None
            return facts.get(path)

    def start(self, host: str = "127.0.0.1", port: int = 0) -> MetadataService:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def _split(self) -> tuple[str, str]:
                parts = self.path.lstrip("/").split("/", 1)
                return parts[0], "/" + (parts[1] if len(parts) > 1 else "")

            def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
                _, path = self._split()
                if path != "/latest/api/token" or "X-aws-ec2-metadata-token-ttl-seconds" not in self.headers:
                    self.send_error(400)
                    return
                token = secrets.token_urlsafe(24)
                with service._lock:
                    service._tokens.add(token)
                self._send(200, token)

            def do_GET(self) -> None:  # noqa: N802
                instance_id, path = self._split()
                with service._lock:
                    valid = self.headers.get("X-aws-ec2-metadata-token") in service._tokens
                if not valid:
                    self._send(401, "")
                    return
                prefix = "/latest/meta-data/"
                value = service._answer(instance_id, path[len(prefix):]) if path.startswith(prefix) else None
                if value is None:
                    self._send(404, "Not Found")
                else:
                    self._send(200, value)

            def _send(self, status: int, body: str) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer((host, port), Handler)
        threading.Thread(target=self._server.serve_forever, name="imds", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
