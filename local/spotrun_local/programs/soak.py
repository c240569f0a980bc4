"""The chaos soak's program: a deterministic chain of steps with a checkable result.

    soak.py work PROBLEM STEPS STEP_SECONDS   # task $SPOTRUN_TASK_INDEX of PROBLEM
    soak.py combine PROBLEM                    # the combine step

`work` runs STEPS steps of `acc = mix(acc, step)` from `acc = start(PROBLEM, index)`, pausing
STEP_SECONDS after each (the work is mostly waiting, so tens of tasks fit on two cores). The chain is
order-dependent: a skipped, repeated or reordered step, or a state from another task, changes the
result. Checkpointed the cooperative way (the `signal` checkpointer): on SIGUSR1 it writes
{step, acc, restores, check} to $SPOTRUN_CHECKPOINT_DIR/state.json (temporary file, fsync, rename),
then creates `.complete`. Started with SPOTRUN_RESTORED=1 it verifies the state before using it:
`check` must be its digest and `acc` must be what the chain gives at `step` (recomputed from the
start); a torn, partial or foreign state prints CORRUPT and exits 3 (a program failure, which the
soak counts as a loss). Without a checkpointer (`none`) every attempt starts from step 0.

Output `result.json`: {problem, index, steps, acc, restored_from}. The combine reads every task's
result under $SPOTRUN_TASK_OUTPUTS, checks that each index 0..n-1 is there once, and writes
`combined.json`: {problem, tasks, combined}, where combined is the SHA-256 of the accs in index order.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path

MASK = (1 << 64) - 1


def start(problem: str, index: int) -> int:
    return int(hashlib.sha256(f"{problem}:{index}".encode()).hexdigest()[:16], 16)


def mix(acc: int, step: int) -> int:
    acc ^= (step * 0x9E3779B97F4A7C15) & MASK
    acc = (acc * 0xBF58476D1CE4E5B9 + 1) & MASK
    return acc ^ (acc >> 31)


def chain(problem: str, index: int, steps: int) -> int:
    acc = start(problem, index)
    for step in range(steps):
        acc = mix(acc, step)
    return acc


def combined(accs: list[int]) -> str:
    return hashlib.sha256("|".join(f"{i}:{acc:016x}" for i, acc in enumerate(accs)).encode()).hexdigest()


def _check(state: dict) -> str:
    body = json.dumps({k: state[k] for k in ("problem", "index", "step", "acc", "restores")}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


def corrupt(why: str) -> int:
    print(f"spotrun-soak: CORRUPT checkpoint: {why}", flush=True)
    return 3


def work(problem: str, steps: int, step_seconds: float) -> int:
    index = int(os.environ["SPOTRUN_TASK_INDEX"])
    directory = Path(os.environ.get("SPOTRUN_CHECKPOINT_DIR", ".spotrun/checkpoint"))
    progress_file = os.environ.get("SPOTRUN_PROGRESS_FILE")
    wanted = {"checkpoint": False}
    signal.signal(signal.SIGUSR1, lambda *_: wanted.update(checkpoint=True))
    step, acc, restores = 0, start(problem, index), []
    state_file = directory / "state.json"
    if os.environ.get("SPOTRUN_RESTORED") == "1":
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError) as error:
            return corrupt(f"unreadable state: {error}")
        if state.get("check") != _check(state):
            return corrupt("digest mismatch")
        if state["problem"] != problem or state["index"] != index:
            return corrupt(f"state of {state['problem']}/{state['index']}, not {problem}/{index}")
        if not 0 <= state["step"] <= steps or int(state["acc"], 16) != chain(problem, index, state["step"]):
            return corrupt(f"acc at step {state['step']} is not the chain's")
        step, acc, restores = state["step"], int(state["acc"], 16), [*state["restores"], state["step"]]
        print(f"restored at step {step}", flush=True)
    while step < steps:
        acc = mix(acc, step)
        step += 1
        if wanted["checkpoint"]:
            wanted["checkpoint"] = False
            directory.mkdir(parents=True, exist_ok=True)
            state = {"problem": problem, "index": index, "step": step, "acc": f"{acc:016x}", "restores": restores}
            state["check"] = _check(state)
            temporary = state_file.with_suffix(".tmp")
            with temporary.open("w") as handle:
                handle.write(json.dumps(state))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, state_file)
            (directory / ".complete").touch()
        if progress_file:
            Path(progress_file).write_text(f"{step / steps:.4f}")
        time.sleep(step_seconds)
    Path("result.json").write_text(json.dumps({"problem": problem, "index": index, "steps": steps,
                                               "acc": f"{acc:016x}", "restored_from": restores}))
    print(f"task {index} of {problem}: {steps} steps, acc {acc:016x}, restored from {restores}", flush=True)
    return 0


def combine(problem: str) -> int:
    root = Path(os.environ["SPOTRUN_TASK_OUTPUTS"])
    results = [json.loads(p.read_text()) for p in sorted(root.glob("*/result.json"))]
    by_index = {r["index"]: r for r in results}
    count = int(os.environ.get("SPOTRUN_TASK_COUNT", len(results)))
    if sorted(by_index) != list(range(count)) or len(results) != count or any(r["problem"] != problem for r in results):
        print(f"spotrun-soak: the task outputs are incomplete or foreign: {sorted(by_index)}", flush=True)
        return 1
    value = combined([int(by_index[i]["acc"], 16) for i in range(count)])
    Path("combined.json").write_text(json.dumps({"problem": problem, "tasks": count, "combined": value}))
    print(f"{problem}: {count} tasks combined into {value}", flush=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["work"] and len(sys.argv) == 5:
        sys.exit(work(sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
    if sys.argv[1:2] == ["combine"] and len(sys.argv) == 3:
        sys.exit(combine(sys.argv[2]))
    print(__doc__, file=sys.stderr)
    sys.exit(2)
