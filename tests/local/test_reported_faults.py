"""On the local runtime, through its real API and the CLI: what goes wrong at the end of a program or
at an instance's boot is reported on the task, in full, and never ends as a plain SUCCEEDED.

- a program that exits 0 without its declared output fails (program scope), saying which output;
- local instances whose image has no DMTCP: the job with the default checkpoint method fails at once
  with the image's reason (which checkpointer, why, what to do), and the fault is on the timeline once.
"""

from __future__ import annotations

import pytest

from spotrun.domain.model import JobState
from spotrun.provision import WORKER_IMAGE_ID
from spotrun_cli.main import main as cli
from spotrun_local.gateway import new_local_credentials, start_gateway
from tests.local.test_end_to_end import explain, steady_runtime, wait_for

pytestmark = pytest.mark.slow


def test_missing_outputs_and_an_image_without_dmtcp_are_reported_whole(tmp_path, monkeypatch, capsys):
    no_dmtcp = tmp_path / "image-without-dmtcp"
    no_dmtcp.mkdir()
    with steady_runtime(tmp_path, monkeypatch) as (runtime, _):
        # Every local instance boots "an image" whose DMTCP directory is empty
        runtime.agent_env_hooks.append(lambda instance, env: env.__setitem__("SPOTRUN_DMTCP_BIN", str(no_dmtcp)))
        gateway = start_gateway(runtime.api_handler, new_local_credentials())
        try:
            monkeypatch.setenv("SPOTRUN_API", gateway.url)
            for name, value in gateway.credentials.env().items():
                monkeypatch.setenv(name, value)
            monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)

            def spotrun(*argv: str) -> str:
                code = cli(list(argv))
                out, err = capsys.readouterr()
                assert code == 0, err
                return out

            (tmp_path / "outputs.yaml").write_text(
                "name: forgetful\ncommand: echo done > other.txt\noutputs: [result.json]\n"
                "checkpoint: {method: none}\n")
            (tmp_path / "default.yaml").write_text("name: needs-dmtcp\ncommand: echo 3.14 > pi.txt\noutputs: [pi.txt]\n")
            forgetful = spotrun("submit", "-q", str(tmp_path / "outputs.yaml")).strip()
            needs_dmtcp = spotrun("submit", "-q", str(tmp_path / "default.yaml")).strip()

            store = runtime.cp.store
            for job_id in (forgetful, needs_dmtcp):
                wait_for(lambda job_id=job_id: store.get_job(job_id).state in (JobState.SUCCEEDED, JobState.FAILED),
                         120, f"job {job_id} to end", lambda job_id=job_id: explain(runtime, job_id))
                assert store.get_job(job_id).state == JobState.FAILED

            missing = "program exited with code 0 but declared output result.json matched no file"
            status = spotrun("status", forgetful)
            assert f"exit 0: {missing}" in status
            assert f"reason={missing}" in spotrun("events", forgetful)

            image_reason = (f"environment: worker image {WORKER_IMAGE_ID}: dmtcp: dmtcp_coordinator, dmtcp_launch, "
                            f"dmtcp_command and dmtcp_restart not found in {no_dmtcp} (SPOTRUN_DMTCP_BIN); install "
                            "DMTCP 4.2.0 or choose checkpoint.method: signal|none")
            assert image_reason in spotrun("status", needs_dmtcp)
            events = spotrun("events", needs_dmtcp)
            assert events.count("WorkerImageFault") == 1 and f"reason={image_reason}" in events
            # The agent that met the fault ran nothing and took no further task
            [task] = store.list_tasks(needs_dmtcp, None, 10, None)[0]
            assert task.attempt == 1 and task.started_at is None
        finally:
            gateway.stop()
