"""A communicating gang program: a ring all-reduce over TCP, every step, checkpointed with `signal` or `dmtcp`.

Each rank holds a vector of integers; every step the ranks sum their vectors around the ring (each rank
sends to the next and receives from the one before, N-1 hops, over TCP between their addresses from
the hostfile), then each rank derives its next vector from the sum. Rank 0 writes `result.json` at the
end: the last sum's digest, which `reference` computes without any network for comparison.

Checkpoints follow the `signal` protocol (spotrun_worker.checkpointers.cooperative) the way a gang's
program must: the signal only sets a flag; the flags travel with the data, and the ranks save at the
first step at which every rank has been asked (the same step on each rank, since each sees the same
sum of flags), so the gang's parts are one consistent cut. On restore (SPOTRUN_RESTORED=1) each rank
resumes from its part and opens new connections (the new gang has new addresses).

Under `dmtcp` the program does nothing of that (no SPOTRUN_CHECKPOINT_DIR, no signal): DMTCP checkpoints
every rank's processes at once, their connections included, and restores them mid-step on the new gang.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import socket
import struct
import time
from pathlib import Path
from typing import Any

MODULUS = (1 << 61) - 1
CONNECT_SECONDS = 120.0


def initial(rank: int, size: int) -> list[int]:
    return [(rank + 1) * 1_000_003 + i * 7919 for i in range(size)]


def advance(total: list[int], rank: int, step: int) -> list[int]:
    """A rank's next vector from the step's sum: depends on every rank's data, so any lost or doubled step shows."""
    return [(value * (rank + 3) + step * 31 + i) % MODULUS for i, value in enumerate(total)]


def digest(total: list[int]) -> str:
    return hashlib.sha256(json.dumps(total).encode()).hexdigest()


def reference(nodes: int, steps: int, size: int) -> str:
    """The result of an uninterrupted run, computed by the same arithmetic without sockets."""
    vectors = [initial(rank, size) for rank in range(nodes)]
    total: list[int] = []
    for step in range(steps):
        total = [sum(column) % MODULUS for column in zip(*vectors, strict=True)]
        vectors = [advance(total, rank, step) for rank in range(nodes)]
    return digest(total)


def _send(sock: socket.socket, message: dict[str, Any]) -> None:
    body = json.dumps(message).encode()
    sock.sendall(struct.pack("!I", len(body)) + body)


def _receive(sock: socket.socket) -> dict[str, Any]:
    def exactly(count: int) -> bytes:
        data = bytearray()
        while len(data) < count:
            chunk = sock.recv(count - len(data))
            if not chunk:
                raise ConnectionError("the previous rank closed the ring")
            data += chunk
        return bytes(data)

    (length,) = struct.unpack("!I", exactly(4))
    return json.loads(exactly(length))  # type: ignore[no-any-return]


def connect_ring(rank: int, addresses: list[str], port: int) -> tuple[socket.socket, socket.socket]:
    """Listen on this rank's address, connect to the next rank's, accept the previous rank's."""
    nodes = len(addresses)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((addresses[rank], port))
    listener.listen(1)
    deadline = time.monotonic() + CONNECT_SECONDS
    while True:
        try:
            outgoing = socket.create_connection((addresses[(rank + 1) % nodes], port), timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    outgoing.settimeout(None)
    outgoing.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.settimeout(CONNECT_SECONDS)
    incoming, _ = listener.accept()
    incoming.settimeout(None)
    listener.close()
    return outgoing, incoming


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--sleep", type=float, default=0.1, help="seconds of 'compute' per step")
    parser.add_argument("--log-steps", action="store_true", help="log each step's end (wall time): the benchmark "
                        "reads the work a gang did past its last checkpoint from it")
    args = parser.parse_args()
    rank, nodes = int(os.environ["SPOTRUN_NODE_RANK"]), int(os.environ["SPOTRUN_NODES"])
    addresses = Path(os.environ["SPOTRUN_HOSTFILE"]).read_text().split()
    port = int(os.environ["SPOTRUN_MASTER_PORT"])
    # set by the `signal` checkpointer only: under `dmtcp` there is nothing for the program to save
    state_dir = Path(os.environ["SPOTRUN_CHECKPOINT_DIR"]) if "SPOTRUN_CHECKPOINT_DIR" in os.environ else None
    progress = os.environ.get("SPOTRUN_PROGRESS_FILE")
    asked = {"signals": 0}  # the handler only counts; the main loop decides when to save
    signal.signal(signal.SIGUSR1, lambda *_: asked.update(signals=asked["signals"] + 1))
    handled = 0

    step, vector, total = 0, initial(rank, args.size), []
    if os.environ.get("SPOTRUN_RESTORED") == "1" and state_dir is not None:
        saved = json.loads((state_dir / "state.json").read_text())
        step, vector, total = saved["step"], saved["vector"], saved["total"]
        print(f"rank {rank}: resumed at step {step}", flush=True)
    outgoing, incoming = connect_ring(rank, addresses, port)
    print(f"rank {rank} of {nodes}: ring up ({addresses[rank]} -> {addresses[(rank + 1) % nodes]})", flush=True)
    while step < args.steps:
        # the ring all-reduce of this step's vectors, and of the checkpoint flags
        signals = asked["signals"]
        passing, total, flags = vector, list(vector), int(signals > handled)
        passing_flags = flags
        for _ in range(nodes - 1):
            _send(outgoing, {"step": step, "vector": passing, "flag": passing_flags})
            received = _receive(incoming)
            if received["step"] != step:
                raise RuntimeError(f"rank {rank}: step {received['step']} from the ring at step {step}")
            passing, passing_flags = received["vector"], received["flag"]
            total = [(a + b) % MODULUS for a, b in zip(total, passing, strict=True)]
            flags += passing_flags
        vector = advance(total, rank, step)
        step += 1
        time.sleep(args.sleep)
        if flags == nodes and state_dir is not None:  # every rank was asked: all save this same step
            temporary = state_dir / "state.json.tmp"
            with temporary.open("w") as handle:
                json.dump({"step": step, "vector": vector, "total": total}, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, state_dir / "state.json")
            handled = signals
            (state_dir / ".complete").touch()
            print(f"rank {rank}: saved at step {step} at {time.time():.3f}", flush=True)
        if progress:
            Path(progress).write_text(f"{step / args.steps:.4f}")
        if args.log_steps:
            print(f"rank {rank}: step {step} at {time.time():.3f}", flush=True)
    if rank == 0:
        Path("result.json").write_text(json.dumps({"nodes": nodes, "steps": step, "digest": digest(total)}))
    print(f"rank {rank}: done, {step} steps", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
