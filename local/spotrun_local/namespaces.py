"""Local instances, each in a private PID and mount namespace: one work path, nothing shared, nothing left.

On AWS every instance works in `/var/lib/spotrun/work`, and DMTCP reopens a restored program's files
at the absolute paths it recorded, so the local runtime gives every instance that same path without
sharing files between instances: each instance is

    runtime thread --PDEATHSIG--> setpriv/unshare (launcher) --PDEATHSIG--> init (PID 1) --> agent --> programs

- the launcher is `unshare --mount --propagation private --pid --fork --kill-child=SIGKILL`, started
  through `setpriv --pdeathsig KILL`, so it dies with the runtime thread that started it (the
  supervisor's, which lives as long as the runtime) and takes the init along;
- the init (this module's `main`, PID 1 of the new PID namespace) mounts a fresh /proc, bind-mounts
  the instance's own `<home>/work` onto `/var/lib/spotrun/work` in its private mount namespace,
  starts the agent as its child and reaps every orphan (DMTCP's daemonized coordinator, programs
  whose agent died). It stays alive when the agent dies, so killing the agent alone leaves the
  instance and its programs up, as on a real instance;
- when the init dies the kernel kills everything in its PID namespace: terminating an instance
  (SIGKILL to the init) ends all it started, and so does the runtime's death, even by SIGKILL.

There is no fallback: where namespaces or mounts are not permitted (not root, no CAP_SYS_ADMIN,
no util-linux), `require_isolation` raises IsolationUnavailable naming why, and the runtime does not start,
rather than let instances share one directory (docs/decisions.md, "One work path per local instance").

The init reports through files in the instance's home: `init.pid` (its PID on the host, which the
runtime signals), `agent.exit` (the agent's exit status, negative for a signal, like Popen's
returncode) and `instance.error` (why it could not set the instance up).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

WORK_PATH = Path("/var/lib/spotrun/work")  # the agent's default work root, as on AWS
INIT_PID_FILE = "init.pid"
AGENT_EXIT_FILE = "agent.exit"
ERROR_FILE = "instance.error"
# SIGUSR1 to the init: SIGKILL the agent's process group (chaos: the agent dies, the instance stays up).
KILL_AGENT_SIGNAL = signal.SIGUSR1
SETUP_FAILED = 70  # the init's exit code when it could not set the instance up (EX_SOFTWARE)

_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_BIND = 0x2, 0x4, 0x8, 0x1000


class IsolationUnavailable(RuntimeError):
    """Local instances cannot get private namespaces here (and will not share a work directory)."""


def launcher_argv(home: Path, agent_argv: list[str], check: bool = False) -> list[str]:
    """The command line that starts one local instance whose first process runs `agent_argv`."""
    return ["setpriv", "--pdeathsig", "KILL", "--",
            "unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child=SIGKILL", "--",
            sys.executable, "-m", "spotrun_local.namespaces", "--home", str(home),
            *(["--check"] if check else []), "--", *agent_argv]


def _module_env(env: dict[str, str]) -> dict[str, str]:
    """`env` with this package importable by the init (it runs `python -m spotrun_local.namespaces`)."""
    here = str(Path(__file__).resolve().parents[1])
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**env, "PYTHONPATH": os.pathsep.join(paths if here in paths else [*paths, here])}


def require_isolation(root: Path, wrapper: tuple[str, ...] = (), timeout: float = 30.0) -> None:
    """Start a throwaway instance that sets itself up and exits; IsolationUnavailable with the reason
    when it cannot (run once when the runtime starts, before any agent). `wrapper` prefixes the
    command (the tests drop CAP_SYS_ADMIN with it)."""
    for tool in ("setpriv", "unshare"):
        if shutil.which(tool) is None:
            raise IsolationUnavailable(f"local instances need `{tool}` (util-linux) to get their own PID and "
                                       f"mount namespaces, and it is not on PATH")
    home = root / ".namespace-check"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    marker = f"{os.getpid()}-{time.monotonic_ns()}"
    try:
        done = subprocess.run([*wrapper, *launcher_argv(home, [marker], check=True)], env=_module_env(dict(os.environ)),
                              capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise IsolationUnavailable(f"setting up a local instance took more than {timeout:g} s") from None
    written = home / "work" / "marker"
    private = not (WORK_PATH / "marker").exists()  # written through the bind mount, never to the host's path
    if done.returncode == 0 and private and written.is_file() and written.read_text() == marker:
        shutil.rmtree(home, ignore_errors=True)
        return
    error = (home / ERROR_FILE).read_text().strip() if (home / ERROR_FILE).is_file() else ""
    detail = error or (done.stderr.strip() or done.stdout.strip() or f"exit code {done.returncode}")[-600:]
    raise IsolationUnavailable(
        f"local instances need a private PID and mount namespace each (root, or CAP_SYS_ADMIN, and "
        f"unshare(2) allowed), so that every instance has its own {WORK_PATH}; setting one up failed: "
        f"{detail}. The local runtime does not fall back to work directories shared between instances.")


class LocalInstance:
    """The processes of one local instance, seen from the runtime: `poll()` is the agent's status."""

    def __init__(self, home: Path, launcher: subprocess.Popen[bytes]):
        self.home = home
        self.launcher = launcher
        self._init_pid: int | None = None

    @classmethod
    def launch(cls, home: Path, agent_argv: list[str], env: dict[str, str], log_path: Path) -> LocalInstance:
        """Start the instance (and its agent) from the calling thread, which it will not outlive."""
        home.mkdir(parents=True, exist_ok=True)
        for stale in (INIT_PID_FILE, AGENT_EXIT_FILE, ERROR_FILE):
            (home / stale).unlink(missing_ok=True)
        with log_path.open("ab") as output:
            launcher = subprocess.Popen(  # noqa: S603 - our own launcher
                launcher_argv(home, agent_argv), env=_module_env(env), cwd=home, stdin=subprocess.DEVNULL,
                stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        return cls(home, launcher)

    def init_pid(self, wait_seconds: float = 0.0) -> int | None:
        """The init's PID on the host, once it wrote it (None if the instance is already gone)."""
        deadline = time.monotonic() + wait_seconds
        while self._init_pid is None:
            with contextlib.suppress(OSError, ValueError):
                self._init_pid = int((self.home / INIT_PID_FILE).read_text())
                break
            if self.launcher.poll() is not None or time.monotonic() >= deadline:
                return None
            time.sleep(0.02)
        return self._init_pid

    def poll(self) -> int | None:
        """The agent's exit status (negative: killed by that signal), or None while it runs.

        An agent that died with its whole instance never got to report: it was SIGKILLed."""
        with contextlib.suppress(OSError, ValueError):
            return int((self.home / AGENT_EXIT_FILE).read_text())
        if self.launcher.poll() is None:
            return None
        with contextlib.suppress(OSError, ValueError):  # the init may have written it just before it ended
            return int((self.home / AGENT_EXIT_FILE).read_text())
        return SETUP_FAILED if (self.home / ERROR_FILE).exists() else -signal.SIGKILL

    def setup_error(self) -> str | None:
        with contextlib.suppress(OSError):
            return (self.home / ERROR_FILE).read_text().strip()
        return None

    def kill_agent(self, wait_seconds: float = 10.0) -> bool:
        """SIGKILL the agent's process group (not its programs, which run in sessions of their own);
        the instance stays up. True once the agent is gone."""
        pid = self.init_pid(wait_seconds)
        if pid is None or self.poll() is not None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, KILL_AGENT_SIGNAL)
        deadline = time.monotonic() + wait_seconds
        while self.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.poll() is not None

    def terminate(self, wait_seconds: float = 10.0) -> None:
        """The instance is gone, and everything on it, at once: the init's death makes the kernel kill
        every process of its PID namespace before the init is reaped (and the launcher ends)."""
        pid = self.init_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self.launcher.send_signal(signal.SIGKILL)  # --kill-child: the init too, had it not written its pid yet
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.launcher.wait(wait_seconds)
        if pid is not None:
            deadline = time.monotonic() + wait_seconds
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)


def _alive(pid: int) -> bool:
    """Alive and not a zombie (an init is a zombie only once its namespace is empty)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


# ------------------------------------------------------------------ the init (PID 1 of an instance)


def _mount(source: str, target: str, fstype: str | None, flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags, None) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {source} on {target}: {os.strerror(errno)}")


def _write(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def set_up(home: Path) -> int:
    """In the new namespaces: a /proc of this PID namespace, and `<home>/work` at WORK_PATH. The init's
    PID on the host (read before /proc is replaced)."""
    if os.getpid() != 1:
        raise OSError(f"the init is PID {os.getpid()}, not 1: it is not the first process of a new PID namespace")
    host_pid = int(os.readlink("/proc/self"))  # still the host's /proc
    # Without our own /proc, PIDs read there (the agent's process-group checks, DMTCP) would be the host's.
    _mount("proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    work = home / "work"
    work.mkdir(parents=True, exist_ok=True)
    WORK_PATH.mkdir(parents=True, exist_ok=True)  # an empty mount point on the host
    _mount(str(work), str(WORK_PATH), None, _MS_BIND)
    if os.stat(WORK_PATH).st_ino != os.stat(work).st_ino:
        raise OSError(f"{WORK_PATH} is not {work} after the bind mount")
    return host_pid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="PID 1 of a local spotrun instance")
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--check", action="store_true", help="set up, write the marker given as the command, exit")
    parser.add_argument("command", nargs="+")
    args = parser.parse_args(argv)
    home: Path = args.home
    try:
        host_pid = set_up(home)
    except OSError as error:
        reason = f"cannot set up the instance's namespaces: {error}"
        _write(home / ERROR_FILE, reason + "\n")
        print(f"spotrun instance: {reason}", file=sys.stderr, flush=True)
        return SETUP_FAILED
    if args.check:
        (WORK_PATH / "marker").write_text(args.command[0])
        return 0
    agent: list[subprocess.Popen[bytes]] = []

    def kill_agent(*_: object) -> None:
        if agent:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(agent[0].pid, signal.SIGKILL)

    signal.signal(KILL_AGENT_SIGNAL, kill_agent)
    # Started in a session of its own like on an instance, so killing its group spares this init.
    agent.append(subprocess.Popen(args.command, start_new_session=True, stdin=subprocess.DEVNULL))  # noqa: S603
    _write(home / INIT_PID_FILE, str(host_pid))
    while True:  # reap the agent and every orphan reparented to us; the instance lives until it is killed
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            signal.pause()  # nothing left to reap: wait for a signal (or SIGKILL)
            continue
        if pid == agent[0].pid:
            agent[0].returncode = os.waitstatus_to_exitcode(status)
            _write(home / AGENT_EXIT_FILE, str(agent[0].returncode))


if __name__ == "__main__":
    raise SystemExit(main())
