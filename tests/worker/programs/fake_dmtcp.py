"""A stand-in for the four DMTCP programs, to test the `dmtcp` checkpointer's orchestration where
DMTCP is not installed. It proves the command lines, the coordinator handshake, completion
detection, image handling and restore staging; it does not capture memory.

Usage: fake_dmtcp.py TOOL ARGS... with TOOL one of coordinator, launch, command, restart.
State per coordinator port lives in $FAKE_DMTCP_STATE/<port>.json. A "checkpoint" records the
program's argv and the number in `progress.txt` of its working directory; "restart" runs the same
argv again with COUNTER_START set to that number. Like DMTCP 4.2.0, `command -c` returns at once and
the image and the coordinator's log line appear later (pitfall 1).
Switches (environment): FAKE_DMTCP_NEVER_COMPLETE=1, FAKE_DMTCP_COMMAND_FAILS=1.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

HEADER = b"DMTCP_CHECKPOINT_IMAGE_v4.0\n"
STATE = Path(os.environ.get("FAKE_DMTCP_STATE", "/tmp/fake-dmtcp"))


def option(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def load(port: str) -> dict:
    return json.loads((STATE / f"{port}.json").read_text())


def save(port: str, state: dict) -> None:
    """Atomically: `command` reads the state while `launch` or `restart` may be writing it."""
    STATE.mkdir(parents=True, exist_ok=True)
    temporary = STATE / f"{port}.json.{os.getpid()}"
    temporary.write_text(json.dumps(state))
    os.replace(temporary, STATE / f"{port}.json")


def log(state: dict, line: str) -> None:
    with open(state["log"], "a") as handle:
        handle.write(f"[{time.time():.3f}, fake, Note] at dmtcp_coordinator.cpp; REASON='{line}\n")


def program_args(args: list[str]) -> list[str]:
    """Drop the options the launcher/restarter understands; what is left is the program (or images)."""
    rest, skip_next = [], False
    for i, arg in enumerate(args):
        if skip_next:
            skip_next = False
            continue
        if arg in ("-p", "--ckptdir", "--port-file", "--coord-logfile"):
            skip_next = True
        elif arg in ("-j", "--no-gzip", "--new-coordinator", "--ckpt-open-files"):
            continue
        else:
            return args[i:]
    return rest


def coordinator(args: list[str]) -> None:
    port = str(random.randint(20000, 60000))
    state = {"log": option(args, "--coord-logfile"), "ckptdir": option(args, "--ckptdir"), "argv": None,
             "history": [args]}
    save(port, state)
    log(state, "dmtcp_coordinator starting")
    Path(option(args, "--port-file")).write_text(port)


def launch(args: list[str]) -> None:
    if args == ["--version"]:
        print("dmtcp_launch (DMTCP) 4.2.0")
        return
    port = option(args, "-p")
    state = load(port)
    program = program_args(args)
    state.update(argv=program, cwd=os.getcwd(), pid=os.getpid(), history=[*state["history"], ["launch", *args]])
    save(port, state)
    os.execvp(program[0], program)


def restart(args: list[str]) -> None:
    port = option(args, "-p")
    state = load(port)
    images = program_args(args)
    saved = json.loads(Path(images[0]).read_bytes()[len(HEADER):])
    state.update(argv=saved["argv"], cwd=os.getcwd(), pid=os.getpid(),
                 history=[*state["history"], ["restart", *args]])
    save(port, state)
    os.environ["COUNTER_START"] = str(saved["progress"])
    os.execvp(saved["argv"][0], saved["argv"])


def command(args: list[str]) -> None:
    port = option(args, "-p")
    state = load(port)
    if os.environ.get("FAKE_DMTCP_COMMAND_FAILS"):
        print("dmtcp_command: coordinator not running at port", port, file=sys.stderr)
        sys.exit(2)
    if "-l" in args:
        print("Client List:\n#, PROG[virtPID:realPID]@HOST, DMTCP-UNIQUEPID, STATE, BARRIER")
        print(f"1, python3[40000:{state['pid']}]@worker, 1a2b-40000-5c6d, RUNNING, ")
        return
    if "-c" not in args or os.environ.get("FAKE_DMTCP_NEVER_COMPLETE"):
        return
    if os.fork() > 0:
        return  # like 4.2.0: the command returns before the checkpoint is written
    os.setsid()
    time.sleep(0.2)
    progress = int((Path(state["cwd"]) / "progress.txt").read_text() or 0)
    ckptdir = Path(state["ckptdir"])
    image = ckptdir / "ckpt_python3_1a2b-40000-5c6d.dmtcp"
    temporary = Path(f"{image}.temp")
    temporary.write_bytes(HEADER + json.dumps({"argv": state["argv"], "progress": progress}).encode())
    temporary.rename(image)
    files = ckptdir / "ckpt_python3_1a2b-40000-5c6d_files"
    files.mkdir(exist_ok=True)
    (files / "gconv-modules.cache").write_bytes(b"cache")
    log(state, "Checkpoint complete; all workers running")
    (ckptdir / "dmtcp_restart_script_1a2b.sh").write_text("#!/bin/bash\n")
    log(state, "Checkpoint complete. Wrote restart script")
    os._exit(0)


if __name__ == "__main__":
    {"coordinator": coordinator, "launch": launch, "restart": restart, "command": command}[sys.argv[1]](sys.argv[2:])
