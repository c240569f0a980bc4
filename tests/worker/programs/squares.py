"""Writes the squares of 1..N to stdout, one every PAUSE seconds (the head of a shell pipeline), and the
count written so far to progress.txt."""

import os
import sys
import time
from pathlib import Path

count, pause = int(sys.argv[1]), float(sys.argv[2])
for number in range(1, count + 1):
    print(number * number, flush=True)
    Path("progress.tmp").write_text(str(number))
    os.replace("progress.tmp", "progress.txt")
    time.sleep(pause)
