"""Chaos for the local runtime: the fault injector of the soak (`python -m spotrun_local.soak`).

Everything that injects faults lives here, never in `lambdas/` or `worker/`:

- `faults`: botocore event hooks that make AWS calls fail (throttling, 5xx, a write whose response
  is lost, an agent's heartbeat write that fails) and make control plane invocations crash before or
  after a write;
- `queues`: an SQS pump wrapper that delivers messages twice, late and out of order;
- `agent_site/sitecustomize.py`: loads `faults` into agent processes when SPOTRUN_CHAOS_* is set;
- `injector`: one seed drives it all; timed faults (agent SIGKILLs, control plane crashes, rebalance
  recommendations) follow a schedule drawn from that seed.
"""
