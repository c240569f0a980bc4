"""The console's view of a gang task (`nodes` > 1: one task, N instances started together, one
checkpoint for all of them): its ranks and the instance each runs on now, its gang checkpoints, and
its attempts with their N instances each. Pure, like `spotrun.console.views`, which shows a gang's
row as one ("gang of 2") and this panel for the focused task when it is a gang.

What a gang costs is its N instances' (`Attempt.price_per_hour` is one instance's):
`instance_hours` is the one place the console turns an attempt's run into billed hours.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from spotrun.console.words import Viewer, When, mib, when
from spotrun.domain.model import ACTIVE_STATES, Attempt, Task, TimelineEvent


def gang_label(nodes: int) -> str:
    """'gang of 2'; '' for a task of one instance."""
    return f"gang of {nodes}" if nodes > 1 else ""


def instance_hours(attempt: Attempt, until: datetime) -> float | None:
    """The hours its instances ran up to `until` (or its end, if sooner): a gang's N instances each billed."""
    if attempt.launched_at is None:
        return None
    stop = min(attempt.ended_at, until) if attempt.ended_at else until
    return max(0.0, (stop - attempt.launched_at).total_seconds()) / 3600 * max(1, attempt.nodes)


@dataclass(frozen=True)
class RankRow:
    rank: int
    instance: str


@dataclass(frozen=True)
class GangCheckpointRow:
    seq: int
    ranks: int  # parts in its manifest, one per rank
    size: str
    attempt: str
    committed: When


@dataclass(frozen=True)
class GangAttemptRow:
    number: int
    instances: list[RankRow]  # by rank


@dataclass(frozen=True)
class GangView:
    index: int
    nodes: int
    attempt: int  # whose instances `ranks` are
    ranks: list[RankRow]  # the current (or last) attempt's, by rank; empty while it has none
    checkpoints: list[GangCheckpointRow]  # newest first
    attempts: list[GangAttemptRow]  # newest first
    note: str  # what `ranks` are, or why there are none


def gang_view(task: Task, attempts: Sequence[Attempt], commits: Sequence[TimelineEvent], viewer: Viewer) -> GangView:
    """`commits` are the task's CheckpointCommitted events, newest first (`spotrun.overview`)."""
    ranks = [RankRow(rank, instance) for rank, instance in enumerate(task.gang_instances)]
    if ranks and task.state in ACTIVE_STATES:
        note = f"the instances of attempt {task.attempt}, by rank"
    elif ranks:  # they ended with it
        note = f"the instances attempt {task.attempt} ran on, by rank ({task.state.value.lower()})"
    elif task.attempt:
        note = f"no instances now: attempt {task.attempt} holds none ({task.state.value.lower()})"
    else:
        note = "no instances yet: the gang has not been launched"
    checkpoints = []
    for commit in commits:
        d = commit.detail or {}
        moment = when(commit.at, viewer)
        assert moment is not None
        checkpoints.append(GangCheckpointRow(
            int(d.get("seq", 0)), int(d.get("ranks", 1)),
            mib(int(d["bytes"])) if isinstance(d.get("bytes"), int | float) else "-",
            str(commit.attempt) if commit.attempt else "-", moment))
    history = [GangAttemptRow(a.number, [RankRow(r, i) for r, i in enumerate(a.gang_instances)])
               for a in sorted(attempts, key=lambda a: a.number, reverse=True)]
    return GangView(task.index, task.nodes, task.attempt, ranks, checkpoints, history, note)
