"""Run the scale benchmark and write bench/results/scale.json (a few minutes on 2 cores).

    PYTHONPATH=lambdas:worker:local:cli:. .venv/bin/python -m bench.scale [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
warnings.filterwarnings("ignore", message="No application metrics to publish")

from bench.scale import cost, lifecycle, schedule, submit  # noqa: E402
from spotrun import resources  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results" / "scale.json"
API_TIMEOUT = resources.function("api").timeout_seconds  # API Gateway's integration timeout is 29 s too


def headline(parts: dict[str, Any]) -> dict[str, Any]:
    """The numbers the README's table shows, and the issue's goals checked."""
    sub, sched, costs = parts["submit"], parts["scheduling"], parts["cost"]
    params = sub["fakes"]["parameters_spec"]
    latency = next(k for k in params if k not in ("0ms", "0ms_without_botocore_parameter_validation"))
    steady = parts["lifecycle"]["large_job_steady_state"]["phases"]
    sweep = sub["sweep_1m_tasks"]
    hour = {f"{case}, {mode}": by_mode["heartbeat_60s"]["1 hour"]["percent_of_compute"]
            for case, modes in costs["by_case"].items() for mode, by_mode in modes.items()}
    return {
        "submit_100k_parameters": {
            "wall_seconds_0ms": params["0ms"]["wall_seconds"], f"wall_seconds_{latency}": params[latency]["wall_seconds"],
            "cpu_seconds": params["0ms"]["cpu_seconds"],
            "modeled_api_lambda_seconds": params[latency]["modeled_api_lambda_seconds"],
            "api_lambda_memory_mb": params[latency]["api_lambda_memory_mb"],
            "api_function_timeout_seconds": API_TIMEOUT,
            "fits_api_timeout": params[latency]["modeled_api_lambda_seconds"] < API_TIMEOUT,
            "requests": params[latency]["requests"],
            "goal_seconds_not_minutes_and_batch_writes": (
                params[latency]["wall_seconds"] < 60 and sub["batch_write_calls"] == sub["expected_batch_write_calls"]
                and not sub["per_task_writes"]),
        },
        "submit_1m_tasks": {
            "tasks": sweep[latency]["tasks"], "wall_seconds_0ms": sweep["0ms"]["wall_seconds"],
            f"wall_seconds_{latency}": sweep[latency]["wall_seconds"], "cpu_seconds": sweep["0ms"]["cpu_seconds"],
            "modeled_api_lambda_seconds": sweep[latency]["modeled_api_lambda_seconds"],
            "through_the_api_handler_wall_seconds_0ms": sweep["api_handler_0ms"]["wall_seconds"],
            "task_items_written": sweep[latency]["dynamodb_items_written"],
            "requests": sweep[latency]["requests"],
            "goal_under_3_seconds": sweep[latency]["modeled_api_lambda_seconds"] < 3,
        },
        "scheduler_invocation": {
            "admitted": sched["admitted"], "RunInstances": sched["ec2"]["RunInstances"],
            "CreateTags": sched["ec2"]["CreateTags"],
            "dynamodb_requests_per_task": sched["dynamodb_requests_per_admitted_task"],
            "moto_tasks_per_second": sched["moto_tasks_admitted_per_second"],
            "modeled_aws_seconds": sched["modeled_on_aws"]["first_burst"]["seconds"],
            "modeled_instances_within_timeout": sched["modeled_on_aws"]["first_burst"]["instances_launched_within_budget"],
        },
        "per_heartbeat": {actor: {"requests": used["requests"], "dynamodb_units": used["dynamodb_units"]}
                          for actor, used in steady["heartbeat"]["by_actor"].items()},
        "percent_of_compute_1h_tasks_heartbeat_60s": hour,
        "goal_under_half_a_percent_1h_tasks": {case: {k: v < 0.5 for k, v in row.items()} for case, row in hour.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (10,000 tasks, 500 admitted), ~1 min")
    parser.add_argument("--latency-ms", type=float, default=10.0, help="modeled DynamoDB/SNS round trip for the fakes")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    tasks, moto_tasks, queued, cap = (10_000, 1_000, 700, 500) if args.quick else (100_000, 5_000, 2_500, 2_000)

    started, parts, seconds = time.perf_counter(), {}, {}
    for name, step in (("submit", lambda: submit.run(tasks, moto_tasks, args.latency_ms)),
                       ("scheduling", lambda: schedule.run(queued, cap)),
                       ("lifecycle", lifecycle.run)):
        began = time.perf_counter()
        print(f"bench.scale: {name} ...", flush=True)
        parts[name] = step()
        seconds[name] = round(time.perf_counter() - began, 1)
    parts["cost"] = cost.estimate(parts["lifecycle"])
    result = {
        "command": "PYTHONPATH=lambdas:worker:local:cli:. .venv/bin/python -m bench.scale" + (" --quick" if args.quick else ""),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                    "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "seconds": {**seconds, "total": round(time.perf_counter() - started, 1)},
        "headline": headline(parts),
        **parts,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps(result["headline"], indent=2, default=str))
    print(f"bench.scale: wrote {args.out} in {result['seconds']['total']} s")


if __name__ == "__main__":
    main()
