"""`python -m spotrun_local`: the demo (`make run`), or spotrun served durably (`make serve`, `make stop`)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

DEMO_DEFAULTS = {"limit": 40_000_000, "tasks": 4, "deadline": 280.0}


def _positive(kind: type) -> object:
    def parse(text: str) -> object:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a {'whole ' if kind is int else ''}number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
        return value
    return parse


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is between 0 and 65535, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m spotrun_local",
        description="spotrun on one machine: moto's server as AWS, the real handlers and agents, the spot market "
                    "replayed from real traces. Without --serve or --stop: the demo (`make run`), a problem solved "
                    "through real interruptions, checked against an independent count.",
        epilog="make run ARGS='...' passes options to the demo, make serve ARGS='...' to --serve --background.")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--serve", action="store_true",
                      help="serve without a demo until stopped; the state lives in --state and survives restarts")
    mode.add_argument("--stop", action="store_true", help="stop the server a --serve --background started (`make stop`)")
    served = parser.add_argument_group("serving (--serve, --stop)")
    served.add_argument("--background", action="store_true",
                        help="with --serve: start it in the background and return once its API answers (`make serve`)")
    served.add_argument("--state", type=Path, default=Path(".spotrun"), metavar="DIR",
                        help="the deployment's directory: credentials, state, logs (default: .spotrun)")
    demo = parser.add_argument_group("the demo")
    demo.add_argument("--limit", type=_positive(int), metavar="N",
                      help="count the primes below N (default: 40000000)")
    demo.add_argument("--tasks", type=_positive(int), metavar="N", help="in N tasks (default: 4)")
    demo.add_argument("--deadline", type=_positive(float), metavar="SECONDS",
                      help="give up after this long (default: 280)")
    demo.add_argument("--ephemeral", action="store_true",
                      help="keep the demo's state in memory only (no journal: what persistence costs)")
    both = parser.add_argument_group("both")
    both.add_argument("--port", type=_port, metavar="N",
                      help="the API's port (demo: a free one; --serve: the deployment's, a free one at its first start)")
    both.add_argument("--start-tick", type=int, metavar="N",
                      help="the market replay's first trace tick (default: a window where zones lose capacity; "
                           "--serve: chosen at the first start, kept after)")
    both.add_argument("--tick-seconds", type=_positive(float), metavar="S",
                      help="wall seconds per trace tick of ~195 s (default: 2; --serve: the deployment's)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(raw)
    demo_options = [name for name in (*DEMO_DEFAULTS, "ephemeral") if getattr(args, name) not in (None, False)]
    if (args.serve or args.stop) and demo_options:
        parser.error(f"--{demo_options[0]} is an option of the demo, not of --serve or --stop")
    if args.background and not args.serve:
        parser.error("--background applies to --serve only")
    for name, default in DEMO_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    # The handlers' structured logs and metrics go to CloudWatch in AWS; locally they would drown the
    # timeline, so only warnings are shown. Set before the handlers are imported (Powertools reads it then),
    # and only when running: importing this module (tests do) changes nothing.
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    from spotrun_local.serve import ServeError, ServeOptions, serve, start_background, stop_background

    try:
        if args.stop:
            return stop_background(args.state)
        if args.serve:
            options = ServeOptions(directory=args.state, port=args.port, start_tick=args.start_tick,
                                   tick_seconds=args.tick_seconds)
            if args.background:
                return start_background(options, [a for a in raw if a != "--background" and a != "--serve"])
            return serve(options)
    except ServeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

    from spotrun_local.demo import run

    return run(limit=args.limit, tasks=args.tasks, deadline_seconds=args.deadline, start_tick=args.start_tick,
               tick_seconds=args.tick_seconds or 2.0, port=args.port or 0, persist=not args.ephemeral)


if __name__ == "__main__":
    sys.exit(main())
