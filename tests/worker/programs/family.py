"""A test program with children: one plain `sleep`, one that ignores SIGTERM. Writes all PIDs to
pids.json, then sleeps. With --stubborn the leader ignores SIGTERM too."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

STUBBORN_CHILD = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"

if __name__ == "__main__":
    if "--stubborn" in sys.argv:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    children = [subprocess.Popen(["sleep", "60"]), subprocess.Popen([sys.executable, "-c", STUBBORN_CHILD])]
    Path("pids.json.tmp").write_text(json.dumps([p.pid for p in children]))
    Path("pids.json.tmp").rename("pids.json")
    time.sleep(60)
