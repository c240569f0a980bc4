"""How soon a running program's output shows in `spotrun logs JOB TASK --follow`, locally.

A real job on a local deployment (moto's server, a real agent shipping to moto's CloudWatch Logs) runs
`ticker.py`, which prints `tick <n> <epoch seconds>` every INTERVAL seconds; `spotrun logs --follow`,
a real process polling the API every POLL seconds, prints them; each line's latency is the time it
reached the follower's stdout minus the time the program wrote it. Writes bench/results/log_latency.json.

    .venv/bin/python -m bench.logs [--seconds 60] [--interval 0.5] [--poll 1.0] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")

from spotrun_local.deployment import start_steady  # noqa: E402
from spotrun_local.runtime import REPO  # noqa: E402
from tests.local.support import LogFollower, submit, ticker_job  # noqa: E402


def run(seconds: float, interval: float, poll: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="spotrun-bench-logs-") as root:
        deployment = start_steady(Path(root) / "run")
        try:
            job_id = submit(deployment, ticker_job(seconds, interval))
            started = time.monotonic()
            with LogFollower(deployment, job_id, 0, poll_seconds=poll) as follower:
                code = follower.wait(timeout=seconds + 300)
                if code != 0:
                    print(follower.errors(), file=sys.stderr)
                arrivals = follower.arrivals
            elapsed = time.monotonic() - started
        finally:
            deployment.stop()
    latencies = sorted(arrived - float(line.split()[2]) for arrived, line in arrivals if line.startswith("tick "))
    ticks = [int(line.split()[1]) for _, line in arrivals if line.startswith("tick ")]

    def quantile(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 3)

    return {
        "what": "seconds from a running program's print to its line on `spotrun logs JOB TASK --follow`, locally",
        "command": ".venv/bin/python -m bench.logs",
        "settings": {"program_seconds": seconds, "print_interval_seconds": interval, "follow_poll_seconds": poll,
                     "agent_ship_interval_seconds": 1.0},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "follower_exit_code": code,
        "lines": len(latencies),
        "every_line_once_in_order": ticks == list(range(len(ticks))),
        "log_latency_seconds": {"p50": quantile(0.5), "p90": quantile(0.9), "max": round(latencies[-1], 3),
                                "mean": round(statistics.fmean(latencies), 3)} if latencies else None,
        "wall_seconds": round(elapsed, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.logs", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the program prints")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between its lines")
    parser.add_argument("--poll", type=float, default=1.0, help="the follower's --interval")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "log_latency.json")
    args = parser.parse_args()
    result = run(args.seconds, args.interval, args.poll)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result["lines"] and result["every_line_once_in_order"] and result["follower_exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
