"""Save while capturing, restore at full speed, and whether to compress: real DMTCP, a 1 GiB process.

    flock /tmp/spotrun-heavy.lock make bench-overlap      (= python -m bench.agent.overlap)

One program holding 1 GiB of random float64s (numpy) runs under DMTCP 4.2.0 (`DmtcpCheckpointer`,
the agent's own). Measured side by side in one run, REPEATS times each, medians reported:
- `capture_seconds`: `dmtcp_command -c` to the images moved out (the checkpointer's `checkpoint`);
- `plain_upload_seconds`: boto3's `upload_file` (s3transfer, default settings) of that image;
- `spotrun_request_to_commit_seconds`: the agent's `CheckpointCycle.take()`: request, capture with
  every part of the image uploaded as DMTCP writes it, the rest of the files, the manifest, the
  commit (a stand-in that records it: on AWS one conditional DynamoDB write);
- `overlap_ratio` = (capture + plain upload) / request-to-commit (goal >= 1.3);
- downloads of the committed image: boto3's `download_file` vs spotrun's `ranges.download_parts` (parallel
  ranged GETs, each part verified against the manifest), against moto's server AND against a
  range-capable server on the loopback serving the same bytes (`bench/agent/rangeserver.py`):
  `restore_ratio` = download_file seconds / spotrun seconds (goal >= 1.0), one per server;
- compression (zstd, `zstandard`, 2 threads, levels 1 and 3) of the 1 GiB image and of a small
  Python + numpy process's image (code pages): bytes, wall seconds, CPU seconds.
moto's server runs in its own process (`moto_server`), as does the range server. Updates only its
own keys of bench/results/agent.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
from botocore.config import Config

from spotrun.domain.messages import AttemptRef
from spotrun_worker import parts, ranges
from spotrun_worker.checkpointers.dmtcp import DmtcpCheckpointer
from spotrun_worker.checkpoints import CheckpointCycle
from spotrun_worker.workspace import Workspace

RESULTS = Path(__file__).resolve().parents[1] / "results" / "agent.json"
BUCKET = "spotrun-bench"
MIB = 1 << 20
PROGRAM = '''
import sys, time
import numpy as np
state = np.random.default_rng(20261205).random(int(sys.argv[1]) * 1024 * 1024 // 8)
open("ready", "w").write("1")
step = 0
while True:
    state[step % 1024::1024] *= 1.0000001  # touches every page now and then
    step += 1
    time.sleep(0.05)
'''
SMALL_PROGRAM = "import time, numpy\nopen('ready', 'w').write('1')\nwhile True: time.sleep(0.05)\n"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, timeout: float = 30.0) -> None:
    import urllib.error
    import urllib.request
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)  # noqa: S310 - the loopback
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def _client(url: str) -> Any:
    return boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing", config=Config(s3={"addressing_style": "path"}))


class _Routes:
    """The worker routes as far as `CheckpointCycle.take` uses them; the commit is recorded, not sent."""

    def __init__(self, s3: Any):
        self.s3, self.store, self.seq, self.commits = s3, self, 0, []

    def get_task(self, job_id: str, index: int, consistent: bool = True) -> Any:
        return SimpleNamespace(checkpoint=SimpleNamespace(seq=self.seq) if self.seq else None)

    def commit(self, ref: Any, seq: int, size: int, method: str, at: datetime, measured: Any = None,
               seconds: float | None = None, ranks: int = 1) -> bool:
        self.seq = seq
        self.commits.append((seq, size, time.monotonic(), measured))  # when the pointer would move
        return True


def _launch(program: str, args: list[str], workdir: Path) -> DmtcpCheckpointer:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "program.py").write_text(program)
    checkpointer = DmtcpCheckpointer()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOTRUN_")}
    checkpointer.start([sys.executable, "program.py", *args], env, workdir, workdir / "program.log")
    deadline = time.monotonic() + 120
    while not (workdir / "ready").exists():
        if checkpointer.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError((workdir / "program.log").read_text()[-2000:])
        time.sleep(0.1)
    time.sleep(1.0)
    return checkpointer


def _image(files: list[Path]) -> Path:
    return max((p for p in files if p.suffix == ".dmtcp"), key=lambda p: p.stat().st_size)


def _compression(image: Path, levels: tuple[int, ...] = (1, 3)) -> dict[str, Any]:
    import zstandard

    size = image.stat().st_size
    result: dict[str, Any] = {"bytes": size}
    for level in levels:
        compressor = zstandard.ZstdCompressor(level=level, threads=2)
        out, wall, cpu = 0, time.perf_counter(), time.process_time()
        with image.open("rb") as source:
            while block := source.read(parts.FOLLOW_PART):
                out += len(compressor.compress(block))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        result[f"zstd_{level}"] = {"bytes": out, "ratio": round(out / size, 4), "seconds": round(wall, 2),
                                   "cpu_seconds": round(cpu, 2), "mib_per_second": round(size / MIB / wall, 1)}
    return result


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def run(size_mib: int = 1024, repeats: int = 3, moto_download_repeats: int = 1) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="spotrun-overlap-"))
    port = _free_port()
    moto = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],  # noqa: S603
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    served = root / "served"
    (served / BUCKET).mkdir(parents=True)
    range_server = subprocess.Popen([sys.executable, "-m", "bench.agent.rangeserver", str(served)],  # noqa: S603
                                    stdout=subprocess.PIPE, text=True, start_new_session=True)
    checkpointers: list[DmtcpCheckpointer] = []
    try:
        moto_url = f"http://127.0.0.1:{port}"
        _wait_http(moto_url)
        assert range_server.stdout is not None
        range_url = range_server.stdout.readline().strip()
        s3, s3_ranges = _client(moto_url), _client(range_url)
        s3.create_bucket(Bucket=BUCKET)

        big = _launch(PROGRAM, [str(size_mib)], root / "work")
        checkpointers.append(big)
        ref = AttemptRef(job_id="bench", index=0, attempt=1, instance_id="i-bench")
        routes = _Routes(s3)
        cycle = CheckpointCycle(routes, BUCKET, ref, None, Workspace(root / "work", 1).create(), big,  # type: ignore[arg-type]
                                lambda: datetime.now(UTC), 600.0, 30.0)
        capture, plain_upload, spotrun = [], [], []
        image_bytes = 0
        for repeat in range(repeats):
            into = root / "capture" / str(repeat)
            os.sync()  # each timed step starts without the previous step's write-back pending
            started = time.perf_counter()
            files = big.checkpoint(into, 600.0)
            capture.append(time.perf_counter() - started)
            image = _image(files)
            image_bytes = image.stat().st_size
            started = time.perf_counter()
            s3.upload_file(str(image), BUCKET, f"plain/{repeat}")
            plain_upload.append(time.perf_counter() - started)
            shutil.rmtree(into)
            s3.delete_object(Bucket=BUCKET, Key=f"plain/{repeat}")
            os.sync()
            started = time.monotonic()
            seq = cycle.take()
            assert seq is not None
            spotrun.append(routes.commits[-1][2] - started)  # the request to the commit (not the clean-up after)
        prefix = f"checkpoints/bench/0/{routes.seq:08d}"
        manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=f"{prefix}/manifest.json")["Body"].read())
        entry = max(manifest["files"], key=lambda e: e["size"])
        key = f"{prefix}/files/{entry['name']}"
        streamed_parts = len(entry["parts"])

        # moto first; spotrun's verified download from it is what the range server then serves
        target = served / BUCKET / key
        target.parent.mkdir(parents=True)
        downloads: dict[str, dict[str, list[float]]] = {}
        for server, client, times in (("moto_server", s3, moto_download_repeats), ("loopback_range_server", s3_ranges, repeats)):
            plain_seconds, spotrun_seconds = [], []
            for repeat in range(times):
                dest = root / "download"
                shutil.rmtree(dest, ignore_errors=True)
                dest.mkdir()

                def plain(client: Any = client, dest: Path = dest) -> None:
                    client.download_file(BUCKET, key, str(dest / "plain"))

                def ours(client: Any = client, dest: Path = dest) -> None:
                    ranges.download_parts(client, BUCKET, key, dest / "spotrun", entry["size"], entry["parts"])

                # Fair to both: each starts with no dirty pages of the other's write-back (os.sync), and the
                # order alternates by repeat (the second of two 1 GiB writes is throttled by the first's).
                order = [(plain, plain_seconds), (ours, spotrun_seconds)]
                for download, seconds in order if repeat % 2 == 0 else order[::-1]:
                    os.sync()
                    started = time.perf_counter()
                    download()
                    seconds.append(time.perf_counter() - started)
                assert (dest / "plain").stat().st_size == (dest / "spotrun").stat().st_size == entry["size"]
                if not target.exists():
                    os.replace(dest / "spotrun", target)  # the same bytes, verified part by part
            downloads[server] = {"plain": plain_seconds, "spotrun": spotrun_seconds}
        shutil.rmtree(root / "download", ignore_errors=True)

        compression = {"image_random_floats_process": _compression(target)}
        small = _launch(SMALL_PROGRAM, [], root / "small")
        checkpointers.append(small)
        small_files = small.checkpoint(root / "small-capture", 120.0)
        compression["image_python_numpy_idle"] = _compression(_image(small_files))
    finally:
        for checkpointer in checkpointers:
            if checkpointer.program is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(checkpointer.program.pgid, signal.SIGKILL)
            checkpointer.stop(grace_seconds=0)
        for process in (moto, range_server):
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(10)
        shutil.rmtree(root, ignore_errors=True)

    overlap = (_median(capture) + _median(plain_upload)) / _median(spotrun)
    restore = {server: {
        "plain_download_file_seconds": [round(v, 2) for v in d["plain"]],
        "spotrun_download_seconds": [round(v, 2) for v in d["spotrun"]],
        "restore_ratio": round(_median(d["plain"]) / _median(d["spotrun"]), 3),
    } for server, d in downloads.items()}
    return {
        "overlap_ratio": round(overlap, 3),
        "goal_overlap_ratio_at_least_1_3": overlap >= 1.3,
        "restore_ratio": restore["moto_server"]["restore_ratio"],
        "restore_ratio_loopback_range_server": restore["loopback_range_server"]["restore_ratio"],
        "goal_restore_ratio_at_least_1_0": restore["moto_server"]["restore_ratio"] >= 1.0,
        "save_and_restore_1gib": {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "process_mib": size_mib, "image_bytes": image_bytes, "image_parts": streamed_parts, "repeats": repeats,
            "store": "moto_server in its own process on the loopback",
            "capture_seconds": [round(v, 2) for v in capture],
            "plain_upload_seconds": [round(v, 2) for v in plain_upload],
            "spotrun_request_to_commit_seconds": [round(v, 2) for v in spotrun],
            "downloads": restore,
            "note": "capture = dmtcp_command -c to images moved out; plain = boto3 upload_file / download_file with "
                    "default settings; spotrun = CheckpointCycle.take() (parts uploaded while DMTCP writes) and "
                    "ranges.download_parts (parallel ranged GETs verified per part); the commit is recorded by a "
                    "stand-in for the worker routes",
        },
        "compression": compression,
        "final_checkpoint_measured": routes.commits[-1][3],
    }


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--moto-download-repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = run(args.size_mib, args.repeats, args.moto_download_repeats)
    existing = json.loads(args.out.read_text()) if args.out.exists() else {}
    existing.update(result)
    args.out.write_text(json.dumps(existing, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
