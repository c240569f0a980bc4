"""The local demo's problem: count the primes in [0, N), split into SPOTRUN_TASK_COUNT slices.

Real work (trial division by the primes below sqrt(N)), checkable (the combine sums the slices and
the runtime compares with an independent sieve), and checkpointable the cooperative way: on
SIGUSR1 it writes its position and count to $SPOTRUN_CHECKPOINT_DIR/state.json, then creates
`.complete`; started with SPOTRUN_RESTORED=1 it continues from that state.

Usage: primes.py count N   |   primes.py combine
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
from pathlib import Path

CHUNK = 2_000


def small_primes(limit: int) -> list[int]:
    sieve = bytearray([1]) * (limit + 1)
    sieve[0:2] = b"\x00\x00"
    for p in range(2, math.isqrt(limit) + 1):
        if sieve[p]:
            sieve[p * p::p] = bytearray(len(range(p * p, limit + 1, p)))
    return [p for p in range(limit + 1) if sieve[p]]


def is_prime(n: int, divisors: list[int]) -> bool:
    if n < 2:
        return False
    for p in divisors:
        if p * p > n:
            return True
        if n % p == 0:
            return n == p
    return True


def count(total: int) -> int:
    index, tasks = int(os.environ["SPOTRUN_TASK_INDEX"]), int(os.environ["SPOTRUN_TASK_COUNT"])
    low, high = total * index // tasks, total * (index + 1) // tasks
    checkpoint_dir = Path(os.environ.get("SPOTRUN_CHECKPOINT_DIR", ".spotrun/checkpoint"))
    progress_file = os.environ.get("SPOTRUN_PROGRESS_FILE")
    position, found = low, 0
    state_file = checkpoint_dir / "state.json"
    if os.environ.get("SPOTRUN_RESTORED") == "1" and state_file.exists():
        state = json.loads(state_file.read_text())
        position, found = state["position"], state["found"]
        print(f"restored at {position} with {found} primes", flush=True)
    wanted = {"checkpoint": False}
    signal.signal(signal.SIGUSR1, lambda *_: wanted.update(checkpoint=True))
    divisors = small_primes(math.isqrt(total) + 1)
    print(f"counting the primes in [{position}, {high})", flush=True)
    reported = (position - low) * 10 // max(1, high - low)  # tenths reported so far: a line each, for the log
    while position < high:
        stop = min(position + CHUNK, high)
        found += sum(1 for n in range(position, stop) if is_prime(n, divisors))
        position = stop
        if wanted["checkpoint"]:
            wanted["checkpoint"] = False
            checkpoint_dir.mkdir(parents=True, exist_ok=True)
            temporary = state_file.with_suffix(".tmp")
            temporary.write_text(json.dumps({"position": position, "found": found}))
            os.replace(temporary, state_file)
            (checkpoint_dir / ".complete").touch()
            print(f"checkpoint saved at {position}", flush=True)
        tenths = (position - low) * 10 // max(1, high - low)
        if tenths > reported:
            reported = tenths
            print(f"{tenths * 10}% done: {found} primes below {position}", flush=True)
        if progress_file:
            Path(progress_file).write_text(f"{(position - low) / max(1, high - low):.4f}")
    Path("count.json").write_text(json.dumps({"low": low, "high": high, "primes": found}))
    print(f"{found} primes in [{low}, {high})", flush=True)
    return 0


def combine() -> int:
    root = Path(os.environ["SPOTRUN_TASK_OUTPUTS"])
    slices = [json.loads(p.read_text()) for p in sorted(root.glob("*/count.json"))]
    total = sum(s["primes"] for s in slices)
    covered = sorted((s["low"], s["high"]) for s in slices)
    contiguous = all(a[1] == b[0] for a, b in zip(covered, covered[1:], strict=False))
    Path("result.json").write_text(json.dumps({"primes": total, "slices": len(slices), "contiguous": contiguous,
                                               "range": [covered[0][0], covered[-1][1]] if covered else None}))
    print(f"{total} primes from {len(slices)} slices", flush=True)
    return 0 if contiguous else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["count"]:
        sys.exit(count(int(sys.argv[2])))
    if sys.argv[1:2] == ["combine"]:
        sys.exit(combine())
    print(__doc__, file=sys.stderr)
    sys.exit(2)
