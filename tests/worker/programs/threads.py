"""Four threads, each folding its own SHA-256 chain one step every PAUSE seconds, all in memory; the
main thread writes the slowest thread's step to progress.txt and, at the end, every chain to
result.json."""

import hashlib
import json
import os
import sys
import threading
import time
from pathlib import Path

steps, pause = int(sys.argv[1]), float(sys.argv[2])
chains = {n: hashlib.sha256(f"thread {n}".encode()) for n in range(4)}
reached = dict.fromkeys(chains, 0)


def work(n: int) -> None:
    for step in range(steps):
        chains[n].update(f"{n}:{step}".encode())
        reached[n] = step + 1
        time.sleep(pause)


threads = [threading.Thread(target=work, args=(n,)) for n in chains]
for thread in threads:
    thread.start()
while any(thread.is_alive() for thread in threads):
    Path("progress.tmp").write_text(str(min(reached.values())))
    os.replace("progress.tmp", "progress.txt")
    time.sleep(0.05)
for thread in threads:
    thread.join()
Path("result.json").write_text(json.dumps({n: chain.hexdigest() for n, chain in chains.items()}))
