"""The console's words: the viewer's clock and zone, human times, durations, money and sizes, and
the timeline said as a person would say it. Pure; `spotrun.console.views` builds its view models
with them, and `spotrun.console.html` shows the times.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from spotrun.domain.model import TimelineEvent

_ISO_OFFSET = re.compile(r"^([+-])(\d{2}):?(\d{2})$")

# ------------------------------------------------------------------------------ the viewer and time

@dataclass(frozen=True)
class Viewer:
    now: datetime  # aware
    offset_minutes: int = 0  # east of UTC
    zone: str = "UTC"
    dark: bool = False
    width: int = 1200  # pixels

    @classmethod
    def of(cls, context: Mapping[str, Any], now: datetime) -> Viewer:
        """From a widgetContext (CloudWatch's, or the local page's in the same shape)."""
        zone = context.get("timezone") or {}
        offset = _offset(str(zone.get("offsetISO") or ""))
        if offset is None:  # no ISO offset: minutes east of UTC, as the ISO offset would say
            offset = int(zone.get("offsetInMinutes") or 0)
        label = str(zone.get("label") or "")
        sign = "+" if offset >= 0 else "-"
        named = f"UTC{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}" if offset else "UTC"
        width = context.get("width")
        return cls(now=now, offset_minutes=max(-14 * 60, min(14 * 60, offset)), zone=label if label and label != "Local"
                   else named, dark=context.get("theme") == "dark",
                   width=int(width) if isinstance(width, int | float) and width > 0 else 1200)

    def local(self, moment: datetime) -> datetime:
        aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        return aware.astimezone(UTC) + timedelta(minutes=self.offset_minutes)


def _offset(text: str) -> int | None:
    match = _ISO_OFFSET.match(text.strip())
    if not match:
        return None
    minutes = int(match[2]) * 60 + int(match[3])
    return -minutes if match[1] == "-" else minutes


@dataclass(frozen=True)
class When:
    text: str  # short, in the viewer's zone
    full: str  # on hover: the date and time in the viewer's zone, and in UTC


def when(moment: datetime | None, viewer: Viewer) -> When | None:
    if moment is None:
        return None
    local, today = viewer.local(moment), viewer.local(viewer.now)
    if local.date() == today.date():
        text = local.strftime("%H:%M:%S")
    elif local.year == today.year:
        text = local.strftime("%b %d %H:%M")
    else:
        text = local.strftime("%Y-%m-%d %H:%M")
    utc = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    return When(text, f"{local:%Y-%m-%d %H:%M:%S} {viewer.zone} ({utc:%Y-%m-%d %H:%M:%S} UTC)")


def duration(seconds: float | None) -> str:
    """45 s, 3 min 20 s, 2 h 05 min, 3 d 4 h."""
    if seconds is None:
        return "-"
    total = int(max(0.0, seconds))
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def money(dollars: float | None) -> str:
    if dollars is None:
        return "-"
    return f"${dollars:,.2f}" if dollars >= 10 else f"${dollars:.4f}"


def mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


OUTCOMES = {
    "completed": "ran to its end", "interrupted": "interrupted (spot reclaim)", "suspended": "suspended",
    "cancelled": "cancelled", "lost": "lost (instance gone)", "not_launched": "not launched (no capacity)",
    "environment_error": "failed (environment)", "input_error": "failed (input)",
}


# ------------------------------------------------------------------------------ the timeline in words

def sentence(event: TimelineEvent) -> str:
    """What happened, as a person would say it."""
    d = event.detail or {}
    task = f"task {event.index}" if event.index is not None else "the job"
    attempt = f" (attempt {event.attempt})" if event.attempt else ""
    by = f" by {_who(d['by'])}" if d.get("by") else ""
    reason = f": {d['reason']}" if d.get("reason") else ""
    kind = event.kind
    if kind == "JobSubmitted":
        return f"Submitted{by} with {d.get('tasks', '?')} task{'s' if d.get('tasks') != 1 else ''}"
    if kind.startswith("Job") and kind.endswith("Requested"):
        return f"{kind[3:-9]} requested{by}"
    if kind in ("JobSucceeded", "JobFailed", "JobCancelled", "JobSuspended"):
        cost = f", cost {money(d['spot_cost_usd'])}" if "spot_cost_usd" in d else ""
        wall = f" after {duration(d['wall_seconds'])}" if "wall_seconds" in d else ""
        return f"The job {kind[3:].lower()}{wall}{cost}"
    if kind == "TaskLaunching":
        where = f" on {d.get('market', 'spot')} in {d['pool']}" if d.get("pool") else ""
        reused = " (reusing a finished task's instance)" if d.get("reused_instance") else ""
        return f"{task.capitalize()}{attempt} launching{where}{reused}"
    if kind == "TaskStarted":
        if d.get("ranks"):
            return f"{task.capitalize()}{attempt} started on its gang of {len(d['ranks'])}: {_ranks(d['ranks'])}"
        return f"{task.capitalize()}{attempt} started on {d.get('instance', 'its instance')}"
    if kind == "CheckpointCommitted":
        size = f", {mib(int(d['bytes']))}" if isinstance(d.get("bytes"), int | float) else ""
        if isinstance(d.get("ranks"), int) and d["ranks"] > 1:  # every rank's part, under one manifest
            return f"{task.capitalize()}{attempt} saved gang checkpoint {d.get('seq', '?')} of all {d['ranks']} ranks{size}"
        return f"{task.capitalize()}{attempt} saved checkpoint {d.get('seq', '?')}{size}"
    if kind == "GangLaunched":
        return f"{task.capitalize()}{attempt}: {_gang_launched(d)}"
    if kind == "RankEnded":
        on = f" on {d['instance']}" if d.get("instance") else ""
        return f"Rank {d.get('rank', '?')} of {task}{attempt}{on} ended: {OUTCOMES.get(str(d.get('outcome')), d.get('outcome'))}{reason}"
    if kind == "TaskInterrupted" and d.get("replacement"):
        return f"{task.capitalize()}{attempt} interrupted{reason}; attempt {d['replacement']} replaces it at once"
    if kind == "CheckpointRestored":
        return f"{task.capitalize()}{attempt} restored checkpoint {d.get('seq', '?')} of attempt {d.get('from_attempt', '?')}"
    if kind == "CheckpointRequested":
        asked = task if event.index is not None else f"{d.get('count', '?')} running tasks"
        return f"Checkpoint requested{by} of {asked}"
    if kind == "AttemptEnded":
        lost = f", {duration(d['unsaved_seconds'])} of work lost" if d.get("unsaved_seconds") is not None else ""
        saved = f" after its final checkpoint {d['checkpoint_seq']}" if d.get("checkpoint_seq") else ""
        return f"{task.capitalize()}{attempt} ended ({OUTCOMES.get(str(d.get('outcome')), d.get('outcome'))}){saved}{lost}"
    if kind == "TaskSucceeded":
        ran = f" in {duration(d['exec_seconds'])}" if d.get("exec_seconds") is not None else ""
        return f"{task.capitalize()}{attempt} succeeded{ran}"
    if kind == "TaskCancelRequested":
        return f"Cancel of {task} requested{by}"
    words = {"TaskFailed": "failed", "TaskInterrupted": "interrupted, queued again", "TaskRetrying": "queued for a retry",
             "TaskSuspended": "suspended", "TaskCancelled": "cancelled", "TaskResumed": "resumed, queued",
             "CombineQueued": "queued: every task succeeded", "CombineCancelled": "cancelled",
             "LaunchFailed": "not launched, queued again"}
    if kind in words:
        return f"{task.capitalize()}{attempt} {words[kind]}{reason}"
    rest = ", ".join(f"{k} {v}" for k, v in d.items() if isinstance(v, str | int | float))
    return f"{kind} {task}{attempt}" + (f": {rest}" if rest else "")


RANKS_NAMED = 4  # a gang's launch names this many ranks' instances on the timeline; the task's detail names all


def _gang_launched(d: Mapping[str, Any]) -> str:
    """'its gang of 2 launched in c6i.large@us-east-1a: rank 0 i-0a, rank 1 i-0b'."""
    ranks = list(d.get("ranks") or [])
    where = f" in {d['pool']}" if d.get("pool") else ""
    return f"its gang of {len(ranks)} launched{where}" + (f": {_ranks(ranks)}" if ranks else "")


def _ranks(instances: Any) -> str:
    """'rank 0 i-0a, rank 1 i-0b' (the first RANKS_NAMED, then how many more)."""
    ranks = [str(r) for r in instances]
    named = ", ".join(f"rank {n} {instance}" for n, instance in enumerate(ranks[:RANKS_NAMED]))
    return named + (f" and {len(ranks) - RANKS_NAMED} more" if len(ranks) > RANKS_NAMED else "")


def _who(arn: Any) -> str:
    """An IAM ARN by its last part (user/alice -> alice), anything else as it is."""
    text = str(arn)
    return text.rsplit("/", 1)[-1] if text.startswith("arn:") and "/" in text else text
