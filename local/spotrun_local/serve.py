"""`make serve` / `make stop`: spotrun on one machine as a durable deployment.

`serve` runs the local runtime without a demo until it is stopped; everything it holds lives in
one directory (default `.spotrun/`) and survives the death of any of its processes and a restart:

    deployment.json   what makes it the same deployment at every start: the API's port and
                      credentials, the web page's token, moto's port, the market replay's start (0600)
    local.env         `source .spotrun/local.env` points the CLI at it (SPOTRUN_API and the
                      credentials; 0600), and names the web page
    state/            the journal of moto's items, objects and messages (spotrun_local.persistence)
    instances/<id>/   each local instance's agent log and work directory
    serve.log         the runtime's log (`make serve` runs it in the background); serve.pid, serve.lock

A restart is a machine coming back after a power cut: the local instances are gone (their agents
and programs died with the runtime), the table, bucket and queues are as they were, the reaper
finds the lost attempts and the tasks go on from their last committed checkpoints. The market
replay goes on from where wall time says it is (the first start's tick plus the time since).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from spotrun_local.gateway import Gateway, LocalCredentials, new_local_credentials
from spotrun_local.market import MarketReplay, load_traces, pick_window
from spotrun_local.runtime import LocalRuntime, RuntimeOptions

DEPLOYMENT = "deployment.json"
ENV_FILE = "local.env"
LOG = "serve.log"
PID = "serve.pid"
LOCK = "serve.lock"
READY_TIMEOUT_SECONDS = 180.0


class ServeError(RuntimeError):
    """spotrun local cannot be served (or stopped) as asked; the message says why, for the user."""


@dataclass(frozen=True)
class Deployment:
    api_port: int
    moto_port: int
    access_key_id: str
    secret_access_key: str
    ui_token: str
    start_tick: int
    tick_seconds: float
    created_at: float  # wall clock of the first start: the market replay's time zero

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def ui_url(self) -> str:
        return f"{self.api_url}/?token={self.ui_token}"

    @property
    def credentials(self) -> LocalCredentials:
        return LocalCredentials(self.access_key_id, self.secret_access_key)

    def env_file(self) -> str:
        return "\n".join([
            "# spotrun local (make serve): `source` this file to use the CLI against it.",
            f"export SPOTRUN_API={self.api_url}",
            f"export AWS_ACCESS_KEY_ID={self.access_key_id}",
            f"export AWS_SECRET_ACCESS_KEY={self.secret_access_key}",
            "export AWS_DEFAULT_REGION=us-east-1",
            "unset AWS_SESSION_TOKEN AWS_SECURITY_TOKEN AWS_PROFILE",
            f"# read-only web page (from this machine): {self.ui_url}",
            "",
        ])


def load_deployment(directory: Path) -> Deployment | None:
    path = directory / DEPLOYMENT
    if not path.exists():
        return None
    try:
        return Deployment(**json.loads(path.read_text()))
    except (ValueError, TypeError) as error:
        raise ServeError(f"{path} is damaged ({error}); move {directory} away to start a new deployment") from None


def _write_private(path: Path, text: str) -> None:
    """Credentials: readable by this user only, replaced atomically."""
    temporary = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)


# ---------------------------------------------------------------------- the lock: one server per directory

def _lock(directory: Path) -> Any:
    """The open lock file, held (exclusively) for as long as this process serves `directory`; None if taken."""
    handle = (directory / LOCK).open("a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def running_pid(directory: Path) -> int | None:
    """The pid of the process serving `directory`, or None when nothing does (a dead server holds no lock)."""
    if not (directory / LOCK).exists():
        return None
    handle = _lock(directory)
    if handle is not None:
        handle.close()
        return None
    try:
        return int((directory / PID).read_text().strip())
    except (OSError, ValueError):
        return -1  # starting: it holds the lock but has not written its pid yet


# ---------------------------------------------------------------------- serving (in the foreground)

@dataclass(frozen=True)
class ServeOptions:
    directory: Path = Path(".spotrun")
    port: int | None = None  # the API's port; None: the deployment's (a free one at the first start)
    start_tick: int | None = None  # the market window's first tick; None: one where zones lose capacity
    tick_seconds: float | None = None  # None: the deployment's (2 s at its first start)


def serve(options: ServeOptions, out: TextIO | None = None, stop: threading.Event | None = None) -> int:
    """Serve until SIGTERM or SIGINT (or `stop`); the state stays in `options.directory`."""
    out = out or sys.stdout
    directory = options.directory
    directory.mkdir(parents=True, exist_ok=True)
    lock = _lock(directory)
    if lock is None:
        raise ServeError(f"spotrun local already serves {directory} (pid {running_pid(directory)}); "
                         "`make stop` stops it")
    stop = stop or threading.Event()
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    except ValueError:
        pass  # not the main thread (tests): `stop` stops it
    try:
        started = time.monotonic()
        known = load_deployment(directory)
        _clear_dead_instances(directory)
        tick_seconds = options.tick_seconds or (known.tick_seconds if known else 2.0)
        runtime_options = RuntimeOptions(root=directory, state=directory / "state",
                                         moto_port=known.moto_port if known else 0, tick_seconds=tick_seconds)
        traces = load_traces(zones=runtime_options.zones)
        start_tick = options.start_tick if options.start_tick is not None else (known.start_tick if known else None)
        if start_tick is None:
            start_tick = pick_window(traces, runtime_options.zones, ticks=int(90 / tick_seconds), min_losses=2)
        created_at = known.created_at if known else time.time()
        market = MarketReplay(traces, start_tick, tick_seconds, clock=time.time, started=created_at)
        runtime = LocalRuntime(market, runtime_options).start()
        try:
            credentials = known.credentials if known else new_local_credentials()
            port = options.port if options.port is not None else (known.api_port if known else 0)
            try:
                gateway = Gateway(runtime.api_handler, credentials, port=port,
                                  ui_token=known.ui_token if known else secrets.token_urlsafe(24),
                                  console=runtime.console_handler).start()
            except OSError as error:
                raise ServeError(f"the API cannot listen on port {port}: {error.strerror} (another program has it; "
                                 f"stop that, or pass --port to move the API: its URL changes)") from None
            deployment = Deployment(api_port=int(gateway.url.rsplit(":", 1)[1]), moto_port=runtime.moto_port,
                                    access_key_id=credentials.access_key_id,
                                    secret_access_key=credentials.secret_access_key, ui_token=gateway.ui_token,
                                    start_tick=start_tick, tick_seconds=tick_seconds, created_at=created_at)
            _write_private(directory / DEPLOYMENT, json.dumps(asdict(deployment), indent=1) + "\n")
            _write_private(directory / ENV_FILE, deployment.env_file())
            (directory / PID).write_text(f"{os.getpid()}\n")
            restored = runtime.restored
            print(f"spotrun local serves {deployment.api_url} (state in {directory}; "
                  f"{'restored ' + _describe(restored) if restored and restored.journal_bytes else 'new'}; "
                  f"ready in {time.monotonic() - started:.1f}s)", file=out, flush=True)
            print(f"  `source {directory / ENV_FILE}` points the CLI at it", file=out, flush=True)
            stop.wait()
            print("stopping (the state stays; the local instances go, as on a machine that is turned off)", file=out,
                  flush=True)
            gateway.stop()
        finally:
            runtime.stop()
    finally:
        with contextlib.suppress(FileNotFoundError):
            (directory / PID).unlink()
        lock.close()
    return 0


def _clear_dead_instances(directory: Path) -> None:
    """The instances of an earlier life of this deployment are gone: so are their disks (work directories
    with inputs and checkpoint captures); their agents' logs stay."""
    for work in (directory / "instances").glob("*/work"):
        shutil.rmtree(work, ignore_errors=True)


def _describe(report: Any) -> str:
    return (f"{report.items} items, {report.objects} objects ({report.blob_bytes / 1e6:.1f} MB), "
            f"{report.messages} messages in {report.seconds:.2f}s")


# ---------------------------------------------------------------------- make serve / make stop

def start_background(options: ServeOptions, argv: list[str], out: TextIO | None = None,
                     timeout: float = READY_TIMEOUT_SECONDS) -> int:
    """Start `python -m spotrun_local --serve ARGV` in the background; return once its API answers."""
    out = out or sys.stdout
    directory = options.directory
    directory.mkdir(parents=True, exist_ok=True)
    pid = running_pid(directory)
    if pid is None:
        with (directory / LOG).open("ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} make serve\n".encode())
            log.flush()
            child = subprocess.Popen([sys.executable, "-m", "spotrun_local", "--serve", *argv], stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not _answers(directory, child.pid):
            if child.poll() is not None:
                print(f"spotrun local did not start (exit code {child.returncode}); the end of {directory / LOG}:\n"
                      + _tail(directory / LOG), file=out)
                return 1
            if time.monotonic() > deadline:
                print(f"spotrun local did not answer within {timeout:.0f}s; see {directory / LOG}", file=out)
                return 1
            time.sleep(0.2)
        pid = child.pid
        print(f"spotrun local is serving (pid {pid}, log {directory / LOG})", file=out)
    else:
        print(f"spotrun local is already serving {directory} (pid {pid})", file=out)
    deployment = load_deployment(directory)
    if deployment is not None:
        print(f"  API       {deployment.api_url}\n"
              f"  the CLI   source {directory / ENV_FILE}   (SPOTRUN_API and the only credentials it accepts)\n"
              f"  web page  {deployment.ui_url}\n"
              f"  stop      make stop   (the state in {directory} stays for the next `make serve`)", file=out)
    return 0


def _answers(directory: Path, pid: int) -> bool:
    """Whether the server `pid` wrote its pid (it is up) and its API answers a signed request."""
    try:
        if int((directory / PID).read_text().strip()) != pid:
            return False
    except (OSError, ValueError):
        return False
    deployment = load_deployment(directory)
    if deployment is None:
        return False
    from spotrun_local.demo import Client

    client = Client(deployment.api_url, deployment.access_key_id, deployment.secret_access_key)
    try:
        return client.call("GET", "/jobs?limit=1")[0] == 200
    except Exception:  # noqa: BLE001 - not yet
        return False


def stop_background(directory: Path, out: TextIO | None = None, timeout: float = 60.0) -> int:
    out = out or sys.stdout
    pid = running_pid(directory)
    if pid is None:
        print(f"spotrun local is not serving {directory}", file=out)
        return 0
    if pid < 0:
        raise ServeError(f"spotrun local is starting in {directory}; try again in a moment")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while running_pid(directory) is not None:
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            print(f"spotrun local (pid {pid}) did not stop within {timeout:.0f}s: killed", file=out)
            return 1
        time.sleep(0.2)
    print(f"spotrun local stopped (pid {pid}); its state stays in {directory}", file=out)
    return 0


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
