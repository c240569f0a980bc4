"""`python -m spotrun_local.soak` (`make soak`): one or more soak runs, their reports printed and written."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path

import spotrun_local.soak as package
from spotrun_local.soak.report import print_report
from spotrun_local.soak.runner import DEFAULT_SEED, SoakOptions, run


def parse_args(argv: list[str]) -> list[SoakOptions]:
    parser = argparse.ArgumentParser(prog="python -m spotrun_local.soak",
                                     description=(package.__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seed", type=int, action="append",
                        help=f"the one seed of every fault of a run (default {DEFAULT_SEED}); repeat for several runs")
    parser.add_argument("--random-seeds", type=int, default=0, help="add this many runs with drawn seeds (printed)")
    parser.add_argument("--problems", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=6, help="tasks per problem (each problem adds a combine step)")
    parser.add_argument("--steps", type=int, default=70, help="steps of each task's program")
    parser.add_argument("--step-seconds", type=float, default=0.5)
    parser.add_argument("--budget", type=float, default=900.0, help="seconds until an unfinished run counts as failed")
    parser.add_argument("--tick-seconds", type=float, default=2.0, help="wall seconds per trace tick")
    parser.add_argument("--root", type=Path, default=Path(".spotrun/soak"))
    parser.add_argument("--out", type=Path, help="write the figures of every run as JSON")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    seeds = list(args.seed or ([] if args.random_seeds else [DEFAULT_SEED]))
    seeds += [int.from_bytes(os.urandom(4), "big") % 1_000_000 for _ in range(args.random_seeds)]
    return [SoakOptions(seed=seed, problems=args.problems, tasks=args.tasks, steps=args.steps,
                        step_seconds=args.step_seconds, budget_seconds=args.budget, tick_seconds=args.tick_seconds,
                        root=args.root, out=args.out, quiet=args.quiet) for seed in seeds]


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    runs = parse_args(sys.argv[1:] if argv is None else argv)
    root = runs[0].root
    root.mkdir(parents=True, exist_ok=True)
    # Injected crashes log tracebacks by design: they go to a file, the console gets the soak's own lines.
    logging.basicConfig(level=logging.WARNING, filename=str(root / "soak.log"), filemode="w",
                        format="%(asctime)s %(levelname)s %(threadName)s %(name)s %(message)s")
    from spotrun.handlers.common import logger as powertools_logger  # its handler writes to stdout

    handlers_log = open(root / "handlers.log", "w")  # noqa: SIM115 - lives as long as the process
    for handler in list(powertools_logger._logger.handlers):
        handler.setStream(handlers_log)
    # The handlers' EMF metrics (CloudWatch in AWS) are printed to stdout when a batch fills up: to the file too.
    from aws_lambda_powertools.metrics.provider.cloudwatch_emf import cloudwatch as emf

    emf.print = lambda *args, **kwargs: print(*args, **{**kwargs, "file": handlers_log})  # type: ignore[attr-defined]
    reports: list[dict] = []
    for options in runs:
        reports.append(run(options, earlier=reports))
        print_report(reports[-1])
    if runs[0].out is not None:
        print(f"figures written to {runs[0].out}")
    if len(reports) > 1:
        print("\nsoak runs: " + ", ".join(f"seed {r['seed']} {'PASS' if r['ok'] else 'FAIL'} ({r['elapsed_seconds']}s)"
                                         for r in reports))
    return 0 if all(r["ok"] for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
