"""Worker image faults: an image that cannot run a checkpoint method is noted once, and tasks that
need that method are not sent to boot it again while the note stands.

An agent whose boot check found that its image cannot run the job's checkpoint method (DMTCP
missing, or not the pinned version) reports the first task that needs it as an image fault and ends
its instance (spotrun_worker.bootcheck). That task fails at once (spotrun.domain.lifecycle.image_fault:
every instance boots the same image, so no retry elsewhere can help). The first such report of an
image and method is noted in the store for NOTE_HOLDS, on the timeline of the job that met it, as a
notification and as the `WorkerImageFaults` metric (its alarm notifies the operators); later reports
while the note stands change nothing but their own task. While it stands, admission fails queued
tasks needing that method without launching an instance, with the same reason (it says what to
do). A new image (a new AMI id after a fixed build or a user's AMI) starts with no note; a note that
lapsed lets the next task try the image again, so a wrong note costs at most an hour.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta

from spotrun.bookkeeping import notify
from spotrun.control import ControlPlane
from spotrun.domain.lifecycle import TaskChange, image_fault_reason, timeline_events
from spotrun.domain.messages import CompletionReport
from spotrun.domain.model import ImageFault, Task, TaskState, TimelineEvent

log = logging.getLogger(__name__)

NOTE_HOLDS = timedelta(hours=1)
UNKNOWN_IMAGE = "unknown"
FAIL_CHUNK = 25  # tasks per guarded transaction (each is 2-3 items)


def note_image_fault(cp: ControlPlane, report: CompletionReport, method: str) -> bool:
    """Note the report's image fault unless a note stands: True (and on the timeline) the first time."""
    now = cp.clock()
    image = report.image_id or UNKNOWN_IMAGE
    fault = ImageFault(image_id=image, method=method, reason=image_fault_reason(report.image_id, report.reason),
                       job_id=report.job_id, index=report.index, noted_at=now, until=now + NOTE_HOLDS)
    if not cp.store.record_image_fault(fault):
        return False
    log.error("worker image %s cannot run checkpoint method %s: %s", image, method, report.reason)
    event = TimelineEvent(report.job_id, now, "WorkerImageFault", f"image-{image}-{method}-{now:%Y%m%dT%H%M%S}",
                          report.index, report.attempt,
                          {"image_id": image, "method": method, "reason": fault.reason,
                           "until": fault.until.isoformat()})
    cp.store.add_event(event)
    notify(cp, [event])  # the metric's alarm tells the operators as well
    return True


def standing_fault(cp: ControlPlane, method: str) -> ImageFault | None:
    """The standing note that the image workers boot from cannot run `method` (None when the image is
    not known to this function, e.g. a control plane without SPOTRUN_WORKER_IMAGE_ID)."""
    image = cp.settings.worker_image_id
    return cp.store.image_fault(image, method, cp.clock()) if image else None


def fail_for_image(cp: ControlPlane, tasks: Sequence[Task], fault: ImageFault) -> int:
    """Fail queued tasks that need what the image cannot run, without booting it; how many moved."""
    now = cp.clock()
    failed = 0
    queued = [t for t in tasks if t.state == TaskState.QUEUED]
    for start in range(0, len(queued), FAIL_CHUNK):
        changes = [TaskChange(task, TaskState.FAILED, "TaskFailed", reason=fault.reason)
                   for task in queued[start:start + FAIL_CHUNK]]
        detail = {"image_id": fault.image_id, "method": fault.method, "noted_at": fault.noted_at.isoformat()}
        if cp.store.apply_many(changes, now, detail):
            failed += len(changes)
            notify(cp, [event for change in changes for event in timeline_events(change, now, detail)])
    return failed
