"""What several use cases do after they change something: re-derive the job's state (and put its
statistics on the timeline when it finishes or suspends), and tell the job's subscribers.

The lowest of the use-case modules: it imports no other one, and every other one may import it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from spotrun.control import ControlPlane
from spotrun.domain.accounting import job_statistics
from spotrun.domain.lifecycle import TaskChange, derive_job_state, timeline_events
from spotrun.domain.model import FINISHED_JOB_STATES, Job, JobState, TimelineEvent

log = logging.getLogger(__name__)


def refresh_state(cp: ControlPlane, job_id: str) -> Job | None:
    """Re-derive the job's state; when it just finished or suspended, put its statistics on the timeline."""
    before = cp.store.get_job(job_id)
    after = cp.store.refresh_job_state(job_id, derive_job_state, cp.clock())
    if before is None or after is None or before.state == after.state:
        return after
    if after.state in FINISHED_JOB_STATES or after.state == JobState.SUSPENDED:
        totals = job_statistics(after, cp.clock())["total"]
        event = TimelineEvent(job_id, cp.clock(), f"Job{after.state.title()}",
                              f"job-{after.state.lower()}-{after.updated_at.timestamp()}", None, None, totals)
        cp.store.add_event(event)
        notify(cp, [event])
    return after


def notify(cp: ControlPlane, events: Sequence[TimelineEvent]) -> None:
    """Publish to the job's subscribers. The timeline is the record: a lost notification fails nothing."""
    try:
        cp.bus.notify(events)
    except Exception:  # noqa: BLE001 - see the docstring
        log.warning("notification failed", exc_info=True)


def notify_change(cp: ControlPlane, change: TaskChange, now: datetime) -> None:
    """Tell subscribers of a task's move: the events its timeline got (kind, task, attempt, reason)."""
    notify(cp, [replace(event, detail={"reason": change.reason} if change.reason else {})
                for event in timeline_events(change, now)])
