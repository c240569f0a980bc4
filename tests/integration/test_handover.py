"""The replacement of an interrupted attempt waits for its predecessor's final checkpoint (the handover).

Found by the chaos soak (seed 6): the replacement's agent restored an older checkpoint (or none) while
the interrupted attempt was still writing its final one, and its claim then removed `draining_attempt`,
so that final checkpoint could no longer be committed: the progress since the last periodic checkpoint
was lost. Fixed: the replacement waits until the predecessor's final report arrived (drained)."""

from __future__ import annotations

from spotrun.domain.model import TaskState
from spotrun_worker.agent import Agent, AgentConfig
from spotrun_worker.routes import InProcessRoutes
from tests.integration.test_task_flow import JOB, Loop, ref


def test_a_replacement_waits_for_the_interrupted_attempt_to_hand_over(cp, env, aws, context, clock):
    loop = Loop(cp, env, aws, context)
    first = loop.start(JOB)
    job_id = first.job_id
    loop.send_warning(first.instance_id, clock())
    loop.drain()
    replaced = loop.task(job_id)
    assert replaced.state == TaskState.LAUNCHING and replaced.draining_attempt == first.attempt

    # The replacement's agent boots while the interrupted attempt is still taking its final checkpoint
    waits: list[float] = []
    config = AgentConfig(table=cp.settings.table, bucket=cp.settings.bucket, report_queue_url="", handover_wait_seconds=1.0)
    agent = Agent(config, InProcessRoutes(cp, replaced.instance_id), None, clock=clock, sleep=waits.append)
    agent.ref = ref(replaced)
    agent._await_handover(replaced)
    assert waits, "the replacement did not wait for its predecessor's final checkpoint"
