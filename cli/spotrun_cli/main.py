"""`spotrun`: submit, inspect and steer spotrun jobs over the IAM-authenticated API.

The endpoint is `--api` or SPOTRUN_API (the local one `make run` prints, or the deployed stack's
API URL); requests are signed with SigV4 (`execute-api`) using botocore's default credential chain.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, TextIO

import requests
from botocore.exceptions import BotoCoreError

from spotrun_cli import __version__, logs, render
from spotrun_cli.client import TIMEOUT, ApiClient, ApiError, ConfigError, EventFeed, Unreachable
from spotrun_cli.jobfile import InvalidSpec, JobFileError, check_spec, load_job_file, local_inputs, with_uploaded

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_CLOSED_PIPE = 141  # 128 + SIGPIPE, as a program the shell saw die of it (`spotrun events J | head`)
HINT_UNREACHABLE = ("  is it running? `make run` starts the local API and prints its URL and credentials;\n"
                    "  for a deployed stack set SPOTRUN_API (or --api) to its API URL")


class Fail(Exception):
    """A command failed in a way already explained; carries the exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED):
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------- arguments

def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--api", help="the API base URL (default: $SPOTRUN_API)")
    common.add_argument("--region", help="the region to sign for (default: the API host's, then AWS_REGION, "
                                         "AWS_DEFAULT_REGION, the profile's)")
    common.add_argument("--profile", help="the AWS profile whose credentials sign the requests")
    # The same options after the command too; SUPPRESS keeps a value given before the command.
    late = argparse.ArgumentParser(add_help=False)
    for action in common._actions:
        late.add_argument(*action.option_strings, help=action.help, default=argparse.SUPPRESS)

    parser = argparse.ArgumentParser(
        prog="spotrun", parents=[common],
        description="Submit, inspect and steer batch jobs on EC2 Spot (spotrun's API, signed with your AWS "
                    "credentials).",
        epilog="Locally: `make run`, then export the SPOTRUN_API and AWS_* lines it prints.")
    parser.add_argument("--version", action="version", version=f"spotrun {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=[late], help=help_text, description=help_text)

    p = command("submit", "submit a job file (YAML or JSON; - reads stdin); local inputs are uploaded first")
    p.add_argument("job_file")
    p.add_argument("--idempotency-key", help="retrying with the same key returns the same job")
    p.add_argument("--watch", action="store_true", help="then follow the job until it finishes")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the job id")
    _watch_options(p)

    p = command("validate", "check a job file as the API would, locally: nothing is uploaded or submitted")
    p.add_argument("job_file")

    p = command("ls", "list jobs, newest first")
    p.add_argument("--state", type=_job_state, help="only jobs in this state (" + ", ".join(render.JOB_STATES) + ")")
    p.add_argument("--limit", type=_positive(1000), default=20, help="at most this many jobs (default 20)")
    _json_option(p, '{"jobs": [job, ...], "next_token"}')

    p = command("status", "a job, its task counts and a table of its tasks")
    p.add_argument("job_id")
    p.add_argument("--tasks", type=_positive(100_000), default=100, help="show at most this many tasks (default 100)")
    _json_option(p, '{"job": job, "tasks": [task, ...], "more_tasks"}')

    p = command("watch", "follow a job live until it finishes (exit 0 if it succeeded, 1 otherwise)")
    p.add_argument("job_id")
    _watch_options(p)
    _json_option(p, 'one JSON object a line: {"event": event} for each new event, {"job": job} when it changes')

    p = command("logs", "an attempt's log (the agent's and the program's output): one task's, or every task's newest "
                        "lines; --follow prints new lines as they are written")
    p.add_argument("job_id")
    p.add_argument("task", nargs="?", type=_index, help="a task index (default: every task)")
    p.add_argument("--attempt", type=_positive(2**31 - 1), help="with TASK: this attempt (default: the current one)")
    p.add_argument("-f", "--follow", action="store_true",
                   help="keep printing new lines until the task (without TASK: the job) finishes, across attempts")
    p.add_argument("--tail", type=_positive(10_000), default=None,
                   help="only the newest N lines (default: all of one task's log; 20 of each task's without TASK)")
    p.add_argument("--timestamps", action="store_true", help="each line with the time it was written (UTC)")
    p.add_argument("--interval", type=float, default=1.0, help="with --follow: seconds between reads (default 1)")
    p.add_argument("--tasks", type=_positive(100_000), default=100, help="without TASK: at most this many tasks")
    _json_option(p, 'one JSON object a line: {"task", "attempt", "at", "message"}; without TASK and --follow: '
                    '{"job_id", "tasks": [{"task", "attempt", "state", "events": [{"at", "message"}], "kept"}]}')

    p = command("events", "the job's timeline, oldest first")
    p.add_argument("job_id")
    _json_option(p, '{"job_id", "events": [event, ...]}')

    for action, text in (("cancel", "cancel a job (its running tasks are killed)"),
                         ("suspend", "suspend a job (running tasks checkpoint and stop)"),
                         ("resume", "resume a suspended job")):
        command(action, text).add_argument("job_id")

    p = command("cancel-task", "cancel one task of a job")
    p.add_argument("job_id")
    p.add_argument("index", type=_index)

    p = command("checkpoint", "checkpoint now: every running task of a job, or one, without stopping")
    p.add_argument("job_id")
    p.add_argument("task", nargs="?", type=_index, help="a task index (default: every running task)")

    p = command("outputs", "download a job's outputs to DIR/<task index>/<path>")
    p.add_argument("job_id")
    p.add_argument("--dir", type=Path, help="where to put them (default: ./<job id>)")
    _json_option(p, '{"job_id", "dir", "files": [{"key", "path", "bytes"}], "failed": [{"key", "error"}]}')

    p = command("stats", "tasks, failures and interruptions per pool, times, spot and on-demand cost, speedup")
    p.add_argument("job_id")
    _json_option(p, "the API's statistics object (GET /jobs/{id}/stats)")
    return parser


def _json_option(p: argparse.ArgumentParser, keys: str) -> None:
    p.add_argument("--json", action="store_true", help=f"print JSON instead of text: {keys} (README: 'The CLI')")


def _watch_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes (default 2)")
    p.add_argument("--tasks", type=_positive(100), default=None,
                   help="progress bars for at most this many tasks (default: what fits the terminal)")


def _job_state(value: str) -> str:
    state = value.upper()
    if state not in render.JOB_STATES:
        raise argparse.ArgumentTypeError(f"unknown state {value!r}: one of {', '.join(render.JOB_STATES)}")
    return state


def _positive(most: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
        if not 1 <= number <= most:
            raise argparse.ArgumentTypeError(f"must be between 1 and {most}")
        return number
    return parse


def _index(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a task index is a whole number, got {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError("a task index is 0 or more")
    return number


# ---------------------------------------------------------------------- commands

def cmd_submit(client: ApiClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    spec, base = load_job_file(args.job_file)
    uploads = local_inputs(spec, base)
    check_spec(spec, uploads, args.job_file)  # the whole spec, before any input is uploaded
    uris: dict[int, str] = {}
    for item in uploads:
        target = client.upload_url(item.path.name)
        _put_file(target["url"], item.path)
        uris[item.position] = target["uri"]
        print(f"uploaded {item.written} -> {target['uri']}", file=err)
    accepted = client.submit(with_uploaded(spec, uris), args.idempotency_key)
    name = spec.get("name") if isinstance(spec.get("name"), str) else None
    print(accepted["job_id"] if args.quiet else render.render_submitted(accepted, name), file=out)
    if args.watch:
        out.flush()
        return watch(client, accepted["job_id"], out, interval=args.interval, tasks_shown=args.tasks)
    return EXIT_OK


def cmd_validate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    spec, base = load_job_file(args.job_file)
    uploads = local_inputs(spec, base)
    job = check_spec(spec, uploads, args.job_file)
    print(render.render_valid(args.job_file, job, [item.written for item in uploads]), file=out)
    return EXIT_OK


def _put_file(url: str, path: Path) -> None:
    try:
        with path.open("rb") as handle:
            # An empty file object would be sent chunked, which presigned S3 PUTs refuse.
            data = handle if path.stat().st_size else b""
            response = requests.put(url, data=data, timeout=(10, 600))
    except requests.RequestException as error:
        raise Fail(f"error: uploading {path} failed: {error}") from error
    if not 200 <= response.status_code < 300:
        raise Fail(f"error: uploading {path} failed: HTTP {response.status_code} {response.text[:300]}")


def cmd_ls(client: ApiClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    jobs: list[dict[str, Any]] = []
    token = None
    while len(jobs) < args.limit:
        page = client.list_jobs(args.state, min(100, args.limit - len(jobs)), token)
        jobs.extend(page.get("jobs", []))
        token = page.get("next_token")
        if not token:
            break
    if args.json:
        return _json(out, {"jobs": jobs[:args.limit], "next_token": token})
    print(render.render_jobs(jobs[:args.limit], more=bool(token)), file=out)
    return EXIT_OK


def _json(out: TextIO, value: Any) -> int:
    print(json.dumps(value, indent=2, sort_keys=True), file=out)
    return EXIT_OK


def cmd_status(client: ApiClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    job = client.get_job(args.job_id)
    tasks, more = client.tasks(args.job_id, args.tasks)
    if args.json:
        return _json(out, {"job": job, "tasks": tasks, "more_tasks": more})
    print(render.render_status(job, tasks, more), file=out)
    return EXIT_OK


def cmd_watch(client: ApiClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    return watch(client, args.job_id, out, interval=args.interval, tasks_shown=args.tasks, as_json=args.json)


def cmd_logs(client: ApiClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    printer = logs.Printer(out, as_json=args.json, timestamps=args.timestamps, prefix=args.task is None)
    if args.attempt is not None and args.task is None:
        raise Fail("error: --attempt is for one task: spotrun logs JOB TASK --attempt N", EXIT_BAD_INPUT)
    if args.follow:
        logs.follow(client, args.job_id, None if args.task is None else [args.task], printer, err,
                    interval=args.interval, tail=args.tail)
        return EXIT_OK
    if args.task is not None:
        attempt, _ = logs.whole_log(client, args.job_id, args.task, args.attempt, printer, args.tail)
        if attempt == 0:
            printer.note(f"task {args.task} has not run yet", err)
        return EXIT_OK
    tasks, more = client.tasks(args.job_id, args.tasks)
    found = logs.every_task(client, args.job_id, tasks, args.tail or 20)
    if args.json:
        return _json(out, {"job_id": args.job_id, "tasks": found})
    print(logs.render_every_task(found), file=out)
    if more:
        print("(more tasks not shown: raise --tasks)", file=err)
    return EXIT_OK


def cmd_events(client: ApiClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.json:
        return _json(out, {"job_id": args.job_id, "events": list(client.all_events(args.job_id))})
    count = 0
    for event in client.all_events(args.job_id):
        print(render.render_event(event), file=out)
        count += 1
    if not count:
        print("no events", file=out)
    return EXIT_OK


def cmd_control(client: ApiClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    print(render.render_control(args.command, client.control(args.job_id, args.command)), file=out)
    return EXIT_OK


def cmd_cancel_task(client: ApiClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    print(render.render_task_cancelled(args.job_id, client.cancel_task(args.job_id, args.index)), file=out)
    reason = client.get_job(args.job_id).get("reason")
    if reason:  # what it means for the job (e.g. its combine step will not run)
        print(f"note: {reason}", file=out)
    return EXIT_OK


def cmd_checkpoint(client: ApiClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    asked = client.checkpoint(args.job_id, args.task).get("tasks", [])
    what = f"task {asked[0]}" if args.task is not None and asked else f"{len(asked)} running task(s): {asked}"
    print(f"job {args.job_id}: checkpoint requested of {what}; each checkpoints at its agent's next control poll",
          file=out)
    return EXIT_OK


def output_destination(key: str, job_id: str) -> PurePosixPath | None:
    """jobs/<job>/outputs/<index>/<path> -> <index>/<path>; None for a key that would not stay inside."""
    prefix = f"jobs/{job_id}/outputs/"
    if not key.startswith(prefix):
        return None
    relative = PurePosixPath(key[len(prefix):])
    parts = key[len(prefix):].split("/")
    if len(parts) < 2 or not parts[0].isdigit() or any(p in ("", ".", "..") for p in parts):
        return None
    return relative


def cmd_outputs(client: ApiClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    outputs = client.outputs(args.job_id)
    root: Path = args.dir or Path(args.job_id)
    if not outputs:
        if args.json:
            return _json(out, {"job_id": args.job_id, "dir": str(root), "files": [], "failed": []})
        state = client.get_job(args.job_id).get("state")
        print(f"job {args.job_id} has no outputs " + (
            f"(it is {state}: no task uploaded any)" if state in render.FINISHED_JOB_STATES else "yet"), file=err)
        return EXIT_OK
    files: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []
    for item in outputs:
        relative = output_destination(item["key"], args.job_id)
        if relative is None:
            failed.append({"key": item["key"], "error": "not a task output path"})
            if not args.json:
                print(f"skipped {item['key']}: not a task output path", file=err)
            continue
        target = root.joinpath(*relative.parts)
        try:
            size = _download(item["url"], target)
        except (OSError, requests.RequestException, Fail) as error:
            failed.append({"key": item["key"], "error": str(error)})
            if not args.json:
                print(f"error: {item['key']}: {error}", file=err)
            continue
        files.append({"key": item["key"], "path": str(target), "bytes": size})
        if not args.json:
            print(str(target), file=out)
    if args.json:
        _json(out, {"job_id": args.job_id, "dir": str(root), "files": files, "failed": failed})
    else:
        print(f"{len(files)} file(s), {sum(f['bytes'] for f in files)} bytes in {root}"
              + (f"; {len(failed)} failed" if failed else ""), file=err)
    return EXIT_FAILED if failed else EXIT_OK


def _download(url: str, target: Path) -> int:
    target.parent.mkdir(parents=True, exist_ok=True)
    with requests.get(url, stream=True, timeout=TIMEOUT) as response:
        if response.status_code != 200:
            raise Fail(f"HTTP {response.status_code}")
        size = 0
        with tempfile.NamedTemporaryFile("wb", dir=target.parent, prefix=f".{target.name}.", delete=False) as tmp:
            try:
                for chunk in response.iter_content(1 << 20):
                    tmp.write(chunk)
                    size += len(chunk)
            except BaseException:
                tmp.close()
                os.unlink(tmp.name)
                raise
        os.replace(tmp.name, target)
        return size


def cmd_stats(client: ApiClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    stats = client.stats(args.job_id)
    if args.json:
        return _json(out, stats)
    print(render.render_stats(stats), file=out)
    return EXIT_OK


COMMANDS: dict[str, Callable[..., int]] = {
    "submit": cmd_submit, "ls": cmd_ls, "status": cmd_status, "watch": cmd_watch, "logs": cmd_logs,
    "events": cmd_events, "cancel": cmd_control, "suspend": cmd_control, "resume": cmd_control,
    "cancel-task": cmd_cancel_task, "checkpoint": cmd_checkpoint, "outputs": cmd_outputs, "stats": cmd_stats,
}


# ---------------------------------------------------------------------- watch

CLEAR, HIDE_CURSOR, SHOW_CURSOR = "\x1b[H\x1b[2J", "\x1b[?25l", "\x1b[?25h"


def watch(client: ApiClient, job_id: str, out: TextIO, *, interval: float = 2.0, tasks_shown: int | None = None,
          tty: bool | None = None, sleep: Callable[[float], None] = time.sleep, events_shown: int = 8,
          max_failures: int = 5, as_json: bool = False) -> int:
    """Follow a job until it finishes: redraw a frame on a terminal, print plain lines otherwise (or JSON
    lines: each new event, and the job whenever it changed)."""
    tty = (out.isatty() if tty is None else tty) and not as_json
    color = tty and "NO_COLOR" not in os.environ
    feed = EventFeed(client, job_id)
    newest: deque[dict[str, Any]] = deque(maxlen=events_shown)
    last_line, failures = None, 0
    if tty:
        out.write(HIDE_CURSOR)
    try:
        while True:
            try:
                job = client.get_job(job_id)
                fresh = feed.poll()
                size = shutil.get_terminal_size()
                shown = tasks_shown or max(3, min(100, size.lines - events_shown - 12))
                tasks, more = client.tasks(job_id, shown) if tty else ([], False)
                failures = 0
            except (Unreachable, ApiError) as error:
                if (isinstance(error, ApiError) and error.status < 500) or failures >= max_failures:
                    raise
                failures += 1
                note = f"({error}; retrying)"
                print(note, file=out, flush=True)  # below the last frame on a terminal
                sleep(interval)
                continue
            newest.extend(fresh)
            if tty:
                hidden = sum((job.get("counts") or {}).values()) - len(tasks) if more else 0
                frame = render.render_watch(job, tasks, list(newest), more_tasks=hidden, width=size.columns - 1,
                                            color=color)
                out.write(CLEAR + frame + "\n")
                out.flush()
            elif as_json:
                for event in fresh:
                    print(json.dumps({"event": event}, sort_keys=True), file=out)
                line = json.dumps({"job": job}, sort_keys=True)
                if line != last_line:
                    print(line, file=out)
                    last_line = line
                out.flush()
            else:
                for event in fresh:
                    print(render.render_event(event), file=out)
                line = render.render_watch_line(job)
                if line != last_line:
                    print(line, file=out)
                    last_line = line
                out.flush()
            if job.get("state") in render.FINISHED_JOB_STATES:
                if not as_json:
                    print(render.render_outcome(job), file=out, flush=True)
                return EXIT_OK if job["state"] == "SUCCEEDED" else EXIT_FAILED
            sleep(interval)
    finally:
        if tty:
            out.write(SHOW_CURSOR)
            out.flush()


# ---------------------------------------------------------------------- entry point

def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else EXIT_BAD_INPUT
    try:
        if args.command == "validate":  # local: no endpoint, no credentials
            return cmd_validate(args, out, err)
        client = ApiClient.from_environment(args.api, args.region, args.profile)
        return COMMANDS[args.command](client, args, out, err)
    except InvalidSpec as error:
        print(render.render_api_error(400, {"error": str(error), "problems": error.problems}), file=err)
        return EXIT_BAD_INPUT
    except JobFileError as error:
        print(f"error: {error}", file=err)
        return EXIT_BAD_INPUT
    except ConfigError as error:
        print(f"error: {error}", file=err)
        return EXIT_BAD_INPUT
    except ApiError as error:
        print(render.render_api_error(error.status, error.body, error.text), file=err)
        return EXIT_BAD_INPUT if error.status == 400 else EXIT_FAILED
    except Unreachable as error:
        print(f"error: {error}\n{HINT_UNREACHABLE}", file=err)
        return EXIT_FAILED
    except BotoCoreError as error:  # e.g. an expired SSO session while refreshing credentials
        print(f"error: AWS credentials: {error}", file=err)
        return EXIT_FAILED
    except Fail as error:
        print(str(error), file=err)
        return error.code
    except KeyboardInterrupt:
        print("", file=err)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return closed_pipe(out)


def closed_pipe(out: TextIO) -> int:
    """The reader of our output went away (`| head`): end quietly, and keep Python from complaining at exit
    when it flushes what is still buffered for that pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a real file (a test's StringIO)
        pass
    return EXIT_CLOSED_PIPE
