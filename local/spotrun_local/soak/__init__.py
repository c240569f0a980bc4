"""`make soak`: the chaos soak. Several problems at once on the local runtime while one seed injects faults.

    python -m spotrun_local.soak [--seed N] [--problems P] [--tasks T] [--steps S] [--step-seconds X]
                                 [--budget SECONDS] [--out FILE] [--root DIR]

Problems (P of them, T tasks each plus a combine step whose result is checked; checkpointer
`signal` and `none` alternate) run on the local runtime while `spotrun_local.chaos` injects, all
from `random.Random(seed)`:

- spot reclaims with warnings from the real traces (a window where zones keep losing capacity),
  agents killed with SIGKILL without warning, agents killing themselves right after a checkpoint
  file reached S3 (before its manifest and commit), rebalance recommendations;
- every queue's messages delivered twice (the copy delayed), late (held back) and out of order;
- some of the agents' heartbeat writes failing (the beat lost);
- control plane invocations crashing just before a write or just after one succeeded;
- throttling and 5xx answers from DynamoDB and S3 to the control plane and to agents (retried by
  the SDK, or surfaced to the caller), and DynamoDB writes whose answer is lost after they applied;
- control plane crashes: the whole generation (ControlPlane with its clients and caches, the SQS
  pumps, the reaper) is dropped at once, its in-flight invocations die at their next AWS call, and
  after a pause a fresh one is built from the environment. moto (AWS), the instances and their
  agents stay up: moto runs in this process and *is* AWS here, so "the runtime crashed" means the
  control plane's compute (Lambda containers, the event source pollers, the schedule) died, which
  is what a crash of spotrun's own code can do; AWS's durable state (queues, table, bucket) survives.

When every problem has finished (or the budget is spent: a failure), chaos stops and the soak checks
that each task completed exactly once (one accepted completion on its timeline), every task output
and combined result is correct, no task is stuck, no instance is left running (after a grace for
the reaper), every restored checkpoint had been committed and no program found a corrupt state,
and the dead-letter queues are empty or each message is explained by the faults that used up its
receives. It prints the faults injected by kind and exits non-zero on any loss.

The package, along its concerns: `problems` (the jobs and their submission), `injection` (chaos
attached to a runtime over a window of the traces), `runner` (one run: watch, calm, gather, judge),
`evidence` (what the run left in the table, the bucket, the logs and the dead-letter queues),
`checks` (one named, pure check per property), `report` (printed and written), `__main__` (the
command line).
"""

from spotrun_local.soak.checks import explain_dead_letter
from spotrun_local.soak.runner import DEFAULT_SEED, Soak, SoakOptions, run

__all__ = ["DEFAULT_SEED", "Soak", "SoakOptions", "explain_dead_letter", "run"]
