"""The local persistence benchmark's request measurement, small: both variants run the same operations,
and the journal records what the journaled variant changed."""

from __future__ import annotations

from bench.local_state.__main__ import requests_cost


def test_the_request_measurement_runs_with_and_without_the_journal(monkeypatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL"):
        monkeypatch.setenv(name, "restored after the test")  # the benchmark sets these for its own process
    result = requests_cost(count=5)
    operations = {"heartbeat_update_item", "task_move_transaction", "put_object_1mib", "sqs_send_receive_delete"}
    assert set(result["without journal"]) == operations
    assert set(result["with journal"]) == operations | {"journal"}
    assert set(result["added_median_ms"]) == operations
    # 50 items + 5 heartbeats + 5 moves (2 items each) + 20 objects + 5 sends and 5 deletes, at least
    assert result["with journal"]["journal"]["records"] >= 50 + 5 + 10 + 20 + 10
