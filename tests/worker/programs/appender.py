"""Keeps one output file open from start to end and appends a line per step (a running SHA-256 chain
held in memory), flushing each line; prints each step on stdout. Knows nothing of checkpoints."""

import hashlib
import os
import sys
import time
from pathlib import Path

steps, pause = int(sys.argv[1]), float(sys.argv[2])
chain = hashlib.sha256(b"appender")
with open("out.txt", "a") as out:
    for step in range(steps):
        chain.update(step.to_bytes(8, "little"))
        out.write(f"{step} {chain.hexdigest()}\n")
        out.flush()
        print(f"step {step}", flush=True)
        Path("progress.tmp").write_text(str(step + 1))
        os.replace("progress.tmp", "progress.txt")
        time.sleep(pause)
