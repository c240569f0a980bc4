"""Boot benchmark: what a worker does at boot now, against what moved into the worker image.

    make bench-boot     (= python -m bench.boot [--boots 5] [--out FILE] with the Makefile's PYTHONPATH)

1. `image_build_seconds`: worker/image/build-worker-image.sh into a fresh prefix with the vendored
   DMTCP source, DMTCP compiled from scratch: the work every boot did before (compile DMTCP, make the
   agent's venv; the old boot also ran dnf and downloaded the source), now done once per deployment.
2. `boot_seconds`: what the user data still does on the instance, per boot, on that image: unpack the
   two code bundles (zipped as the stack's assets are) with the image's Python, run the boot check
   (`spotrun-agent check-image --out`: the DMTCP programs and `dmtcp_launch --version`), and import the
   agent. Not included: the OS boot, the two S3 downloads of the bundles (a few hundred KB) and systemd.

Run it alone (flock /tmp/spotrun-heavy.lock): a figure taken next to another heavy job is not honest.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from spotrun_local.metadata import MetadataService

REPO = Path(__file__).resolve().parents[2]
IMAGE = REPO / "worker" / "image"
VENDORED = REPO.parent / "shared" / "vendor" / "dmtcp-4.2.0.tar.gz"
EXCLUDED_DIRS = {"__pycache__", "tests"}
EXCLUDED_SUFFIXES = {".pyc", ".sh"}  # as stacks/constructs/fleet.py BUNDLE_EXCLUDES


def bundle(source: Path, target: Path) -> Path:
    """A zip of `source` as the stack's code asset holds it."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(source.rglob("*")):
            relative = path.relative_to(source)
            if path.is_file() and not EXCLUDED_DIRS & set(relative.parts) and path.suffix not in EXCLUDED_SUFFIXES:
                archive.write(path, relative)
    return target


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.boot", description=__doc__.split("\n\n")[0])
    parser.add_argument("--boots", type=int, default=5)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "boot.json"))
    args = parser.parse_args()
    if not VENDORED.is_file():
        raise SystemExit(f"the vendored DMTCP source {VENDORED} is absent")

    with tempfile.TemporaryDirectory(prefix="spotrun-boot-") as scratch:
        root = Path(scratch)
        prefix, dmtcp = root / "opt-spotrun", root / "opt-dmtcp"
        print("building the worker image (DMTCP from source, the agent's venv) ...", flush=True)
        image_build = timed(["bash", str(IMAGE / "build-worker-image.sh"), "--prefix", str(prefix),
                             "--dmtcp-prefix", str(dmtcp), "--tarball", str(VENDORED), "--python", sys.executable])
        python = str(prefix / "venv" / "bin" / "python")
        bundles = {name: bundle(REPO / name, root / f"{name}.zip") for name in ("lambdas", "worker")}
        # The boot check asks the metadata service for the AMI id: the local runtime's IMDSv2 stand-in answers.
        metadata = MetadataService().start()
        metadata.register("i-0b00700000000000b", "c6i.large", "us-east-1a")
        runs: list[dict[str, float]] = []
        for boot in range(args.boots):
            lib = root / f"boot-{boot}" / "lib"
            env = {"PATH": "/usr/bin:/bin", "HOME": str(root), "SPOTRUN_DMTCP_BIN": str(dmtcp / "bin"),
                   "PYTHONPATH": f"{lib / 'lambdas'}:{lib / 'worker'}",
                   "SPOTRUN_IMDS_ENDPOINT": metadata.endpoint("i-0b00700000000000b")}
            unpack = sum(timed([python, "-m", "zipfile", "-e", str(path), str(lib / name)])
                         for name, path in bundles.items())
            check = timed([python, "-m", "spotrun_worker", "check-image", "--out", str(root / "check.json")], env)
            agent = timed([python, "-c", "import spotrun_worker.agent"], env)
            runs.append({"unpack": unpack, "check_image": check, "agent_import": agent,
                         "total": unpack + check + agent})
            shutil.rmtree(lib.parent)
        metadata.stop()
        verdict = json.loads((root / "check.json").read_text())

    totals = [run["total"] for run in runs]
    result = {
        "command": "make bench-boot",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release()},
        "image_build_seconds": round(image_build, 1),
        "boot_seconds": {"median": round(statistics.median(totals), 2), "max": round(max(totals), 2),
                         "runs": [round(total, 2) for total in totals]},
        "boot_steps_seconds_median": {step: round(statistics.median(run[step] for run in runs), 3)
                                      for step in ("unpack", "check_image", "agent_import")},
        "boot_check": verdict,
        "not_included": "OS boot, the two S3 downloads of the code bundles, systemd starting the agent",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
