"""A program whose output says when it was written: `tick <n> <epoch seconds>` every INTERVAL seconds for
SECONDS seconds. The log-latency test and benchmark read it through `spotrun logs --follow` and compare
each line's time with the time it arrived.

Usage: ticker.py SECONDS INTERVAL
"""

from __future__ import annotations

import sys
import time


def main(seconds: float, interval: float) -> int:
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < seconds:
        print(f"tick {n} {time.time():.3f}", flush=True)
        n += 1
        time.sleep(interval)
    print(f"done after {n} ticks", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(float(sys.argv[1]), float(sys.argv[2])))
