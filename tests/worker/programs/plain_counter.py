"""A test program that knows nothing of checkpoints (for the `dmtcp` checkpointer).

It folds 0..steps-1 into an accumulator held only in memory, one step every --sleep seconds,
writing the step reached to progress.txt, and writes {step, acc} to result.json at the end.
COUNTER_START (set only by the fake DMTCP's restart, which restores no memory) replays the first
steps at once, standing in for the memory a real DMTCP restart brings back.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

MODULUS = 2**61 - 1


def main(steps: int, pause: float) -> None:
    start = int(os.environ.get("COUNTER_START", "0"))
    step, acc = 0, 0
    while step < steps:
        acc = (acc * 31 + step * step + 7) % MODULUS
        step += 1
        if step > start:
            Path("progress.tmp").write_text(str(step))
            os.replace("progress.tmp", "progress.txt")  # readers never see it half written
            time.sleep(pause)
    Path("result.json").write_text(json.dumps({"step": step, "acc": acc}))


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]))
