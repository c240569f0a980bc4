"""A cooperative test program for the `signal` checkpointer.

It folds the numbers 0..steps-1 into an order-dependent accumulator, one step every --sleep
seconds, writing the step reached to --progress. On SIGUSR1 it saves {step, acc} to
$SPOTRUN_CHECKPOINT_DIR/state.json (plus a nested file, to exercise subdirectories), fsyncs and
creates the `.complete` marker. With SPOTRUN_RESTORED=1 it resumes from state.json. At the end it
writes {step, acc, resumed_from} to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from pathlib import Path

MODULUS = 2**61 - 1


def write_durably(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--sleep", type=float, default=0.02)
    parser.add_argument("--out", default="result.json")
    parser.add_argument("--progress", default="progress.txt")
    parser.add_argument("--ignore-signal", action="store_true")
    args = parser.parse_args()

    directory = Path(os.environ["SPOTRUN_CHECKPOINT_DIR"])
    step, acc, resumed_from = 0, 0, 0
    if os.environ.get("SPOTRUN_RESTORED") == "1":
        state = json.loads((directory / "state.json").read_text())
        step, acc, resumed_from = state["step"], state["acc"], state["step"]

    requested = []
    if args.ignore_signal:
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGUSR1, lambda signum, frame: requested.append(signum))

    while step < args.steps:
        acc = (acc * 31 + step * step + 7) % MODULUS
        step += 1
        Path(args.progress).write_text(str(step))
        if requested:
            requested.clear()
            write_durably(directory / "state.json", json.dumps({"step": step, "acc": acc}))
            write_durably(directory / "extra" / "note.txt", f"saved at step {step}\n")
            (directory / ".complete").touch()
        time.sleep(args.sleep)

    print(f"done at step {step}", flush=True)
    Path(args.out).write_text(json.dumps({"step": step, "acc": acc, "resumed_from": resumed_from}))


if __name__ == "__main__":
    main()
