"""An attempt's output, live, in CloudWatch Logs: the program's log file and the agent's own lines,
shipped every second to the attempt's stream (`spotrun.access.log_stream`) in the deployment's log
group, with the task credentials (which may put events into this task's streams and nothing else).

The file stays the record on the instance (its tail goes with the completion report, the whole of it
to S3 when the attempt ends); shipping is best effort: a failed put is retried on the next tick, and
what cannot be kept within MAX_PENDING_BYTES is dropped with a line saying how much.
"""

from __future__ import annotations

import codecs
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spotrun.access import log_stream

# Not under "spotrun.agent": the shipper's own troubles are not shipped (AgentLines listens there).
log = logging.getLogger("spotrun.logship")

# CloudWatch Logs' limits for one PutLogEvents call (an event costs its UTF-8 bytes plus 26).
MAX_BATCH_BYTES = 1_048_576
MAX_BATCH_EVENTS = 10_000
EVENT_OVERHEAD = 26
MAX_EVENT_BYTES = 256 * 1024 - EVENT_OVERHEAD
MAX_PENDING_BYTES = 8 * 1024 * 1024
# A line the program has not finished (no newline yet, e.g. a progress bar) is shipped after this long.
PARTIAL_LINE_SECONDS = 2.0
READ_CHUNK = 1 << 20
AGENT_PREFIX = "[spotrun] "


class LogShipper:
    def __init__(self, client: Any, group: str, stream: str, path: Path, *, interval: float = 1.0,
                 clock: Callable[[], float] = time.time):
        self.client, self.group, self.stream, self.path = client, group, stream, path
        self.interval = interval
        self.clock = clock
        self._offset = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""
        self._partial_since: float | None = None
        self._continued = False  # the last line was shipped before its newline came
        self._pending: list[tuple[int, str]] = []  # (epoch ms, message), in the order they happened
        self._pending_bytes = 0
        self._dropped_bytes = 0
        self._read_lock = threading.Lock()  # the file's offset and decoder
        self._lock = threading.Lock()  # the pending lines (notes come from other threads)
        self._ship_lock = threading.Lock()  # one put at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.shipped_events = 0
        self.failed_puts = 0

    def start(self) -> LogShipper:
        self._thread = threading.Thread(target=self._run, name="log-shipper", daemon=True)
        self._thread.start()
        return self

    def note(self, text: str) -> None:
        """One of the agent's own lines, in order with the program's output."""
        self._read_file()  # the program's output so far comes first
        with self._lock:
            for line in text.splitlines() or [""]:
                self._add(AGENT_PREFIX + line)

    def flush(self, final: bool = False) -> None:
        """Read what the program wrote since the last call and put it, with the agent's notes."""
        self._read_file(final)
        with self._ship_lock:
            with self._lock:
                events, self._pending, self._pending_bytes = self._pending, [], 0
            unsent = self._put(events)
            if unsent:
                with self._lock:
                    self._pending[:0] = unsent
                    self._pending_bytes += sum(_cost(m) for _, m in unsent)
                    self._bound()

    def close(self) -> None:
        """Stop the thread and ship the rest (an unfinished last line included)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush(final=True)

    # ------------------------------------------------------------------------- inside

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - shipping must never take the attempt down
                log.warning("shipping the log failed", exc_info=True)

    def _read_file(self, final: bool = False) -> None:
        with self._read_lock:
            self._read_file_locked(final)

    def _read_file_locked(self, final: bool) -> None:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                chunks = []
                while chunk := handle.read(READ_CHUNK):
                    chunks.append(chunk)
                    self._offset += len(chunk)
        except FileNotFoundError:
            chunks = []
        text = self._decoder.decode(b"".join(chunks), final=final)
        now = self.clock()
        with self._lock:
            if text:
                lines = (self._partial + text).split("\n")
                self._partial = lines.pop()
                if self._continued and lines:  # the first newline ends the line shipped unfinished
                    if not lines[0]:
                        lines.pop(0)
                    self._continued = False
                for line in lines:
                    self._add(line)
                self._partial_since = (self._partial_since or now) if self._partial else None
            stale = self._partial_since is not None and now - self._partial_since >= PARTIAL_LINE_SECONDS
            if self._partial and (final or stale):
                self._add(self._partial)
                self._partial, self._partial_since, self._continued = "", None, True

    def _add(self, line: str) -> None:
        """Append one line (split when longer than an event may be); the caller holds the lock."""
        at = int(self.clock() * 1000)
        for piece in _pieces(line.rstrip("\r")):
            self._pending.append((at, piece))
            self._pending_bytes += _cost(piece)
        self._bound()

    def _bound(self) -> None:
        while self._pending_bytes > MAX_PENDING_BYTES and self._pending:
            _, dropped = self._pending.pop(0)
            self._pending_bytes -= _cost(dropped)
            self._dropped_bytes += len(dropped.encode())
        if self._dropped_bytes and self._pending_bytes + 200 <= MAX_PENDING_BYTES:
            message = f"{AGENT_PREFIX}{self._dropped_bytes} bytes of output could not be shipped and were dropped here"
            self._pending.insert(0, (self._pending[0][0] if self._pending else int(self.clock() * 1000), message))
            self._pending_bytes += _cost(message)
            self._dropped_bytes = 0

    def _put(self, events: list[tuple[int, str]]) -> list[tuple[int, str]]:
        """Put the events in batches CloudWatch accepts; what could not be put is returned."""
        start = 0
        while start < len(events):
            size, end = 0, start
            while end < len(events) and end - start < MAX_BATCH_EVENTS and size + _cost(events[end][1]) <= MAX_BATCH_BYTES:
                size += _cost(events[end][1])
                end += 1
            batch = [{"timestamp": at, "message": message or " "} for at, message in events[start:end]]
            try:
                self.client.put_log_events(logGroupName=self.group, logStreamName=self.stream, logEvents=batch)
            except Exception as error:  # noqa: BLE001 - kept, retried on the next tick
                self.failed_puts += 1
                log.warning("log events not shipped (kept for the next try): %s", error)
                return events[start:]
            self.shipped_events += len(batch)
            start = end
        return []


class NoShipper:
    """Stands in when the deployment keeps no logs (or the routes give no logs client)."""

    shipped_events = 0

    def start(self) -> NoShipper:
        return self

    def note(self, text: str) -> None:
        return None

    def flush(self, final: bool = False) -> None:
        return None

    def close(self) -> None:
        return None


class AgentLines(logging.Handler):
    """The agent's log records, as lines in the attempt's log."""

    def __init__(self, shipper: LogShipper | NoShipper):
        super().__init__(logging.INFO)
        self.shipper = shipper
        self.setFormatter(logging.Formatter("%(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.shipper.note(self.format(record))
        except Exception:  # noqa: BLE001 - logging must not fail the agent
            self.handleError(record)


def for_attempt(client: Any, group: str, job_id: str, index: int, attempt: int, path: Path,
                interval: float = 1.0) -> LogShipper | NoShipper:
    if client is None or not group:
        return NoShipper()
    return LogShipper(client, group, log_stream(job_id, index, attempt), path, interval=interval).start()


def _cost(message: str) -> int:
    return len(message.encode("utf-8", "replace")) + EVENT_OVERHEAD


def _pieces(line: str) -> list[str]:
    """A line cut into pieces an event can hold (by bytes, never inside a character)."""
    if len(line.encode("utf-8", "replace")) <= MAX_EVENT_BYTES:
        return [line]
    pieces, current, size = [], [], 0
    for char in line:
        width = len(char.encode("utf-8", "replace"))
        if size + width > MAX_EVENT_BYTES:
            pieces.append("".join(current))
            current, size = [], 0
        current.append(char)
        size += width
    pieces.append("".join(current))
    return pieces
