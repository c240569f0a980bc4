"""Stands in for the agent inside a local instance: it starts a program in a session of its own (as the
agent starts programs) and a daemon that detaches (as DMTCP's coordinator does), writes `ready` into the
instance's work path, then waits. With an argument it first writes that text to `<work>/mine.txt`."""

import os
import subprocess
import sys
import time
from pathlib import Path

work = Path("/var/lib/spotrun/work")
if len(sys.argv) > 1:
    (work / "mine.txt").write_text(sys.argv[1])
subprocess.Popen(["sleep", "600"], start_new_session=True, cwd=work)
if os.fork() == 0:  # a daemon: fork, new session, fork again, the middle one exits
    os.setsid()
    if os.fork() == 0:
        time.sleep(600)
    os._exit(0)
os.wait()
(work / "ready").write_text(str(os.getpid()))
time.sleep(600)
