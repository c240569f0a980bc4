"""`spotrun logs`: attempts' logs (the agent's and the program's output) from the API, which reads them
from CloudWatch Logs: a whole log, the newest lines of every task, or a task's log followed live
across its attempts (an interruption moves it to the next attempt's stream)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from spotrun_cli.client import ApiClient

FINISHED_TASK_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
PAGE = 1000
MAX_FOLLOWED = 20  # tasks followed at once without TASK
RELIST_SECONDS = 5.0  # how often, without TASK, the running tasks are listed again


@dataclass
class Printer:
    out: TextIO
    as_json: bool = False
    timestamps: bool = False
    prefix: bool = False  # name the task on each line (several tasks followed at once)

    def line(self, task: int, attempt: int, event: dict[str, Any]) -> None:
        if self.as_json:
            print(json.dumps({"task": task, "attempt": attempt, "at": event.get("at"), "message": event.get("message")}),
                  file=self.out)
            return
        parts = [f"[task {task}]"] if self.prefix else []
        if self.timestamps:
            parts.append(str(event.get("at")))
        parts.append(str(event.get("message", "")))
        print(" ".join(parts), file=self.out)

    def note(self, text: str, err: TextIO) -> None:
        """Said on stderr, so that stdout is the log alone."""
        if not self.as_json:
            print(text, file=err)


def whole_log(client: ApiClient, job_id: str, index: int, attempt: int | None, printer: Printer,
              tail: int | None = None) -> tuple[int, str]:
    """Print an attempt's log (or its newest `tail` lines); returns the attempt and the token after it."""
    page = client.task_log(job_id, index, attempt, limit=tail or PAGE, newest=tail is not None)
    number = int(page["attempt"])
    while True:
        for event in page["events"]:
            printer.line(index, number, event)
        token = page["next_token"]
        if tail is not None or number == 0:
            return number, token
        page = client.task_log(job_id, index, number, token, PAGE)
        if not page["events"] and page["next_token"] == token:  # CloudWatch's end: the same token again
            return number, token


def every_task(client: ApiClient, job_id: str, tasks: list[dict[str, Any]], tail: int) -> list[dict[str, Any]]:
    """The newest `tail` lines of each task's current attempt."""
    found = []
    for task in tasks:
        page = client.task_log(job_id, task["index"], limit=tail, newest=True) if task.get("attempt") else None
        found.append({"task": task["index"], "attempt": task.get("attempt", 0), "state": task.get("state"),
                      "events": page["events"] if page else [], "kept": page["kept"] if page else True})
    return found


def render_every_task(found: list[dict[str, Any]]) -> str:
    blocks = []
    for entry in found:
        head = f"==> task {entry['task']}, attempt {entry['attempt']} ({entry['state']}) <=="
        lines = [str(e.get("message", "")) for e in entry["events"]]
        if not entry["kept"]:
            lines = ["(this deployment keeps no attempt logs)"]
        elif not lines:
            lines = ["(no output yet)" if entry["attempt"] else "(it has not run yet)"]
        blocks.append("\n".join([head, *lines]))
    return "\n\n".join(blocks) if blocks else "no tasks"


@dataclass
class Followed:
    """One task's log followed: the attempt read and where reading goes on."""

    index: int
    attempt: int = 0
    token: str | None = None
    done: bool = False
    seen_end: bool = field(default=False)


def follow(client: ApiClient, job_id: str, indexes: list[int] | None, printer: Printer, err: TextIO, *,
           interval: float = 1.0, tail: int | None = None, sleep: Callable[[float], None] = time.sleep,
           clock: Callable[[], float] = time.monotonic) -> None:
    """Print new lines as they are written until the tasks finish (`indexes` None: the job's running
    tasks, listed again every few seconds, until the job finishes)."""
    followed: dict[int, Followed] = {i: Followed(i) for i in indexes or []}
    listed_at = -RELIST_SECONDS
    job_finished = False
    while True:
        if indexes is None and clock() - listed_at >= RELIST_SECONDS:
            listed_at = clock()
            job = client.get_job(job_id)
            job_finished = job.get("state") in ("SUCCEEDED", "FAILED", "CANCELLED")
            running = client.list_tasks(job_id, limit=MAX_FOLLOWED, state="RUNNING").get("tasks", [])
            for task in running:
                followed.setdefault(task["index"], Followed(task["index"]))
        for entry in list(followed.values()):
            if not entry.done:
                _poll(client, job_id, entry, printer, err, tail)
        if all(f.done for f in followed.values()) and (indexes is not None or job_finished):
            return
        sleep(interval)


def _poll(client: ApiClient, job_id: str, entry: Followed, printer: Printer, err: TextIO, tail: int | None) -> None:
    task = client.get_task(job_id, entry.index)
    current = int(task.get("attempt") or 0)
    if current == 0:
        return  # not launched yet
    if current != entry.attempt:
        if entry.attempt:  # the old attempt's last lines first
            _drain(client, job_id, entry, printer)
            printer.note(f"--- task {entry.index}: attempt {current} ({task.get('pool') or 'pool pending'}) ---", err)
        entry.attempt, entry.token = current, None
        if tail is not None:
            page = client.task_log(job_id, entry.index, current, limit=tail, newest=True)
            for event in page["events"]:
                printer.line(entry.index, current, event)
            entry.token = page["next_token"]
    got = _drain(client, job_id, entry, printer)
    state = task.get("state")
    if state in FINISHED_TASK_STATES or state == "SUSPENDED":
        if entry.seen_end and not got:  # one more read after the end: the last lines are in
            entry.done = True
            printer.note(f"--- task {entry.index} is {state} ---", err)
        entry.seen_end = True


def _drain(client: ApiClient, job_id: str, entry: Followed, printer: Printer) -> int:
    """Everything written since the last read of the entry's attempt; how many lines."""
    count = 0
    while True:
        page = client.task_log(job_id, entry.index, entry.attempt, entry.token, PAGE)
        for event in page["events"]:
            printer.line(entry.index, entry.attempt, event)
        count += len(page["events"])
        entry.token = page["next_token"] or entry.token
        if len(page["events"]) < PAGE:
            return count
