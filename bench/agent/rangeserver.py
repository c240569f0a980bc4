"""A read-only S3 look-alike on the loopback that serves files from a directory at full speed.

moto answers each ranged GET of a large object slowly (it copies the object for every request), so
download strategies are compared against this server too: path-style `GET|HEAD /<bucket>/<key>`
with `Range: bytes=a-b` (206 + Content-Range), `If-Match` (412) and an ETag, answered from the file
with `os.sendfile`. boto3 reaches it with `endpoint_url` and any credentials (it checks no signature).
Enough for `HeadObject`, `GetObject` and s3transfer's `download_file`; nothing else.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: RangeServer

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._answer(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        path = self.server.resolve(self.path.split("?", 1)[0])
        if path is None:
            self._empty(404)
            return
        size = path.stat().st_size
        etag = self.server.etag(path)
        wanted = self.headers.get("If-Match")
        if wanted is not None and wanted != etag:
            self._empty(412)
            return
        start, end, status = 0, size - 1, 200
        match = _RANGE.match(self.headers.get("Range", ""))
        if match:
            start = int(match.group(1))
            end = min(int(match.group(2)) if match.group(2) else size - 1, size - 1)
            if start >= size:
                self._empty(416)
                return
            status = 206
        length = end - start + 1
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        self.send_header("ETag", etag)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if body and length:
            with path.open("rb") as source:
                offset, left = start, length
                while left:
                    sent = os.sendfile(self.connection.fileno(), source.fileno(), offset, left)
                    if sent == 0:
                        break
                    offset, left = offset + sent, left - sent

    def _empty(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


class RangeServer(ThreadingHTTPServer):
    """Serves `<root>/<bucket>/<key>`; `url` is the endpoint to give boto3."""

    daemon_threads = True

    def __init__(self, root: Path):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root.resolve()
        self._etags: dict[Path, str] = {}
        self._thread = threading.Thread(target=self.serve_forever, daemon=True, name="range-server")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def resolve(self, url_path: str) -> Path | None:
        path = (self.root / url_path.lstrip("/")).resolve()
        return path if path.is_relative_to(self.root) and path.is_file() else None

    def etag(self, path: Path) -> str:
        if path not in self._etags:
            stat = path.stat()
            self._etags[path] = '"' + hashlib.md5(f"{stat.st_ino}-{stat.st_size}-{stat.st_mtime_ns}".encode(),  # noqa: S324
                                                  usedforsecurity=False).hexdigest() + '"'
        return self._etags[path]

    def __enter__(self) -> RangeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()
        self.server_close()


def main() -> None:
    """`python -m bench.agent.rangeserver ROOT`: serve ROOT, print the endpoint URL, run until killed."""
    import sys

    with RangeServer(Path(sys.argv[1])) as server:
        print(server.url, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
