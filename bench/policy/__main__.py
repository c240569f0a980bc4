"""Run the deadline-policy benchmark: `.venv/bin/python -m bench.policy` from the repository root."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "lambdas") not in sys.path:
    sys.path.insert(0, str(ROOT / "lambdas"))

from bench.policy import runner  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.policy", description=__doc__)
    parser.add_argument("--stride-hours", type=float, default=4.0, help="hours between window starts (default 4)")
    parser.add_argument("--workers", type=int, default=runner.default_workers())
    parser.add_argument("--units-per-tick", type=int, default=2, help="waste resolution of the optimum's table")
    parser.add_argument("--traces", default=str(runner.DEFAULT_DIR), help="directory of the spot traces")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "policy.json"))
    parser.add_argument("--quick", action="store_true", help="a smoke run: one window a day")
    args = parser.parse_args(argv)
    config = runner.Config(
        stride_hours=24.0 if args.quick else args.stride_hours, workers=args.workers,
        units_per_tick=args.units_per_tick, traces=args.traces,
    )
    report = runner.run(config, progress=lambda line: print(line, file=sys.stderr, flush=True))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, sort_keys=False, default=_jsonable) + "\n")
    print(runner.table(report))
    print(f"wrote {out} in {report['seconds']}s")
    return 0


def _jsonable(value: object) -> object:
    if isinstance(value, float) and value == float("inf"):
        return "inf"
    return str(value)


if __name__ == "__main__":
    raise SystemExit(main())
