"""The save-and-restore benchmark (`make bench-overlap`), small: real DMTCP, a 16 MiB process, one repeat.

Not a figure (the committed figures come from the 1 GiB run under the machine's lock): this keeps the
benchmark runnable against the checkpoint cycle and the restore as they are, and its keys the issue's."""

from __future__ import annotations

from pathlib import Path

from bench.agent import overlap


def test_the_overlap_benchmark_runs_small_with_real_dmtcp(dmtcp_bin: Path, monkeypatch) -> None:
    monkeypatch.setenv("SPOTRUN_DMTCP_BIN", str(dmtcp_bin))
    result = overlap.run(16, 1, 1)
    run = result["save_and_restore_1gib"]
    assert result["overlap_ratio"] > 0 and result["restore_ratio"] > 0
    assert run["image_bytes"] > 16 * 2**20  # the process's 16 MiB of random floats are in the image
    assert run["image_parts"] >= 1
    assert len(run["capture_seconds"]) == len(run["plain_upload_seconds"]) == len(run["spotrun_request_to_commit_seconds"]) == 1
    assert set(run["downloads"]) == {"moto_server", "loopback_range_server"}
    for compressed in result["compression"].values():
        assert compressed["zstd_1"]["bytes"] <= compressed["bytes"]
    final = result["final_checkpoint_measured"]  # what the last commit said of the final checkpoint
    assert final["predicted_final_seconds"] > 0 and final["final_fits_warning"] is True  # 16 MiB fits 105 s
