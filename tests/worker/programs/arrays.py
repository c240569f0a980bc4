"""numpy arrays of SIZE_MIB in all (two float64 arrays), changed in place for STEPS steps with a pause
between; progress.txt holds the step reached, result.json the arrays' SHA-256 at the end."""

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

size_mib, steps, pause = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
count = size_mib * 1024 * 1024 // 8 // 2
rng = np.random.default_rng(20261205)
a = rng.random(count)
b = rng.random(count)
Path("progress.txt").write_text("0")
for step in range(steps):
    a *= 0.999
    a += b
    np.sqrt(a, out=b)
    b += step
    Path("progress.tmp").write_text(str(step + 1))
    os.replace("progress.tmp", "progress.txt")
    time.sleep(pause)
digest = hashlib.sha256(a.tobytes())
digest.update(b.tobytes())
Path("result.json").write_text(json.dumps({"steps": steps, "sha256": digest.hexdigest()}))
