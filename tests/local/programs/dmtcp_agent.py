"""Stands in for the agent inside a local instance, with the real DMTCP checkpointer.

    dmtcp_agent.py BIN_DIR launch          run appender.py under DMTCP in <work>/task, checkpoint it after
                                           5 steps into <work>/outgoing, write <work>/checkpointed, wait
    dmtcp_agent.py BIN_DIR restore FROM    copy the checkpoint in FROM to <work>/incoming (as a download
                                           would), restore it in <work>/task, write its exit status to
                                           <work>/restored.exit
"""

import os
import shutil
import sys
import time
from pathlib import Path

from spotrun_worker.checkpointers.dmtcp import DmtcpCheckpointer

WORK = Path("/var/lib/spotrun/work")
APPENDER = Path(__file__).resolve().parents[2] / "worker" / "programs" / "appender.py"
COMMAND = [sys.executable, str(APPENDER), "40", "0.05"]

bin_dir, mode = sys.argv[1], sys.argv[2]
task = WORK / "task"
task.mkdir(exist_ok=True)
env = {k: v for k, v in os.environ.items() if not k.startswith("SPOTRUN_")}
checkpointer = DmtcpCheckpointer(bin_dir=bin_dir)
if mode == "launch":
    checkpointer.start(COMMAND, env, task, WORK / "attempt-1.log")
    while not (task / "progress.txt").exists() or int((task / "progress.txt").read_text() or 0) < 5:
        time.sleep(0.05)
    checkpointer.checkpoint(WORK / "outgoing", timeout=60)
    (WORK / "checkpointed").write_text((task / "progress.txt").read_text())
    time.sleep(600)
else:
    shutil.copytree(sys.argv[3], WORK / "incoming")
    checkpointer.start(COMMAND, env, task, WORK / "attempt-2.log", restore_from=WORK / "incoming")
    (WORK / "restored.exit").write_text(str(checkpointer.wait(120)))
    time.sleep(600)
