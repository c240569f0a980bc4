"""Pure rendering: API dicts (job_view, task_view, event_view, error bodies) in, text out.

Nothing here does I/O, reads the clock or the terminal; callers pass `now`, `width` and `color`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

JOB_STATES = ("QUEUED", "RUNNING", "SUSPENDED", "SUCCEEDED", "FAILED", "CANCELLED")
TASK_STATES = ("WAITING", "QUEUED", "LAUNCHING", "RUNNING", "SUSPENDED", "SUCCEEDED", "FAILED", "CANCELLED")
FINISHED_JOB_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})

_EIGHTHS = " ▏▎▍▌▋▊▉"
_FULL = "█"
_COLORS = {"SUCCEEDED": "32", "FAILED": "31", "CANCELLED": "35", "RUNNING": "36", "LAUNCHING": "34",
           "SUSPENDED": "33", "QUEUED": "2", "WAITING": "2"}


# ------------------------------------------------------------------ small pieces

def paint(text: str, state: str | None, color: bool) -> str:
    """`text` in the ANSI color of `state` (when `color`)."""
    code = _COLORS.get(state or "")
    return f"\x1b[{code}m{text}\x1b[0m" if color and code else text


def progress_bar(fraction: float | None, width: int = 20) -> str:
    """A bar of exactly `width` cells, in eighths of a cell (unicode block elements)."""
    value = 0.0 if fraction is None else min(1.0, max(0.0, float(fraction)))
    eighths = round(value * width * 8)
    full, part = divmod(eighths, 8)
    bar = _FULL * full + (_EIGHTHS[part] if part else "")
    return bar + " " * (width - len(bar))


def task_fraction(task: Mapping[str, Any]) -> float | None:
    """The task's progress 0..1; a succeeded task is done whether or not its program reported progress."""
    if task.get("state") == "SUCCEEDED":
        return 1.0
    progress = task.get("progress")
    return None if progress is None else min(1.0, max(0.0, float(progress)))


def percent(fraction: float | None) -> str:
    return "   -" if fraction is None else f"{fraction * 100:3.0f}%"


def short_time(value: str | None, with_date: bool = True) -> str:
    """An ISO timestamp from the API as UTC 'YYYY-MM-DD HH:MM:SS' (or 'HH:MM:SS')."""
    if not value:
        return "-"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S")


def event_cursor(at: str) -> str:
    """The timeline's `after` cursor for an event time: the store's sort keys start '<UTC time>Z#'."""
    moment = datetime.fromisoformat(at)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_key(event: Mapping[str, Any]) -> str:
    """Identifies an event among those the API returns again (same time as the cursor)."""
    return json.dumps([event.get("at"), event.get("kind"), event.get("task"), event.get("attempt"),
                       event.get("detail")], sort_keys=True, default=str)


def format_counts(counts: Mapping[str, int] | None, color: bool = False) -> str:
    """'RUNNING 2  QUEUED 1' in lifecycle order; 'none' when every count is zero."""
    if not counts:
        return "none"
    order = list(TASK_STATES) + sorted(k for k in counts if k not in TASK_STATES)
    parts = [paint(f"{state} {counts[state]}", state, color) for state in order if counts.get(state)]
    return "  ".join(parts) or "none"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], right: Iterable[int] = ()) -> str:
    """A plain text table; the last column is not padded."""
    text_rows = [[("" if cell is None else str(cell)) for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text_rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    aligned_right = set(right)

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, cell in enumerate(cells):
            if i == len(cells) - 1 and i not in aligned_right:
                out.append(cell)
            else:
                out.append(cell.rjust(widths[i]) if i in aligned_right else cell.ljust(widths[i]))
        return "  ".join(out).rstrip()

    return "\n".join([line(list(headers)), *(line(r) for r in text_rows)])


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def _clip(text: Any, limit: int) -> str:
    """`text` on one line in at most `limit` characters; a cut falls between words (inside a word only
    when not even the first one fits) and ends with "…". Reasons themselves are never clipped where
    there is room for them (status, events): only live views that must fit the terminal clip."""
    text = _one_line(text)
    if len(text) <= limit:
        return text
    if limit <= 1:
        return "…"[:limit]
    room = text[: limit - 1]
    if not text[len(room)].isspace():
        boundary = room.rfind(" ")
        if boundary > 0:
            room = room[:boundary]
    return room.rstrip(" ,;:") + "…"


def _index_label(task: Mapping[str, Any]) -> str:
    return f"{task.get('index')}" + (" (combine)" if task.get("kind") == "combine" else "")


def _exit_and_reason(task: Mapping[str, Any], limit: int | None = None) -> str:
    """'exit 3: <reason>'; the reason whole unless `limit` (a live view) asks for it to be clipped."""
    parts = []
    if task.get("exit_code") is not None:
        parts.append(f"exit {task['exit_code']}")
    if task.get("reason"):
        parts.append(_one_line(task["reason"]))
    text = ": ".join(parts)
    return text if limit is None else _clip(text, limit)


# ------------------------------------------------------------------ commands

def render_submitted(accepted: Mapping[str, Any], name: str | None = None) -> str:
    job_id = accepted.get("job_id")
    label = f" ({name})" if name else ""
    tasks = accepted.get("tasks")
    if accepted.get("created", True):
        return f"submitted job {job_id}{label}: {tasks} task{'s' if tasks != 1 else ''}, state {accepted.get('state')}"
    return (f"job {job_id}{label} already exists for this idempotency key (state {accepted.get('state')}); "
            "nothing new was submitted")


def render_valid(path: str, job: Any, uploads: Sequence[str]) -> str:
    """`spotrun validate`: what the job file asks for, once the API's model accepted it."""
    count = job.task_count
    checkpoint = job.checkpoint
    every = "the adaptive interval" if checkpoint.interval == "auto" else f"every {checkpoint.interval}s"
    lines = [f"{path}: a valid job spec",
             f"  {job.name}: {count} task{'s' if count != 1 else ''}" + (" + a combine step" if job.combine else ""),
             f"  each on {job.resources.vcpus} vCPU, {job.resources.memory_gib:g} GiB"
             + (f", {job.resources.gpus} GPU" if job.resources.gpus else ""),
             f"  checkpoint {checkpoint.method}" + ("" if checkpoint.method == "none" else f", {every}")]
    if uploads:
        lines.append(f"  local inputs uploaded at submit: {', '.join(uploads)}")
    return "\n".join(lines)


def render_jobs(jobs: Sequence[Mapping[str, Any]], more: bool = False) -> str:
    if not jobs:
        return "no jobs"
    rows = [[j.get("job_id"), j.get("name"), j.get("state"), j.get("tasks"), short_time(j.get("created_at")),
             format_counts(j.get("counts"))] for j in jobs]
    text = table(["JOB", "NAME", "STATE", "TASKS", "CREATED (UTC)", "COUNTS"], rows, right=[3])
    return text + ("\n(more jobs: raise --limit)" if more else "")


def render_job(job: Mapping[str, Any], color: bool = False) -> str:
    tasks = f"{job.get('tasks')}" + (" + combine" if job.get("combine") else "")
    desired = job.get("desired")
    state = paint(str(job.get("state")), job.get("state"), color)
    lines = [
        f"job      {job.get('job_id')}  {job.get('name')}",
        f"state    {state}" + (f" (desired {desired})" if desired and desired != "RUN" else ""),
        f"tasks    {tasks}, {job.get('active', 0)} holding a worker",
        f"counts   {format_counts(job.get('counts'), color)}",
        f"created  {short_time(job.get('created_at'))} UTC   updated {short_time(job.get('updated_at'))} UTC",
    ]
    if job.get("reason"):
        lines.append(f"note     {job['reason']}")
    lines.extend(render_waiting(job.get("waiting")))
    return "\n".join(lines)


def render_waiting(waiting: Mapping[str, Any] | None, pools_shown: int = 6) -> list[str]:
    """Why the job's queued tasks wait (the API's `waiting`), as the status's lines."""
    if not waiting:
        return []
    lines = [f"waiting  {waiting.get('summary')}"]
    pools = list(waiting.get("pools") or [])
    for pool in pools[:pools_shown]:
        since = f" at {short_time(pool.get('since'), False)}" if pool.get("since") else ""
        until = f", cooling down until {short_time(pool.get('until'), False)}" if pool.get("until") else ""
        lines.append(f"         {pool.get('pool')}: {pool.get('why')}{since}{until}")
    if len(pools) > pools_shown:
        lines.append(f"         ... and {len(pools) - pools_shown} more pools")
    if waiting.get("next_try_at"):
        lines.append(f"         next try by {short_time(waiting['next_try_at'])} UTC")
    if waiting.get("deadline_policy"):
        lines.append(f"         deadline policy: {waiting['deadline_policy']}")
    lines.append(f"         on-demand fallback: {waiting.get('on_demand')}")
    return lines


def render_tasks(tasks: Sequence[Mapping[str, Any]], more: bool = False) -> str:
    if not tasks:
        return "no tasks"
    rows = []
    for t in tasks:
        checkpoint = t.get("checkpoint") or {}
        rows.append([
            _index_label(t), t.get("state"), t.get("attempt"), t.get("pool") or "-",
            percent(task_fraction(t)).strip() if task_fraction(t) is not None else "-",
            _checkpoint_label(checkpoint), _exit_and_reason(t) or "-",
        ])
    text = table(["INDEX", "STATE", "ATTEMPT", "POOL", "PROGRESS", "CKPT", "EXIT / REASON"], rows, right=[2, 4, 5])
    # A final checkpoint predicted not to fit the spot warning is what a user must know: said under the table.
    for t in tasks:
        checkpoint = t.get("checkpoint") or {}
        if checkpoint.get("final_fits_warning") is False and checkpoint.get("final_checkpoint"):
            text += f"\ntask {_index_label(t)}: {checkpoint['final_checkpoint']} (checkpointing more often)"
    gangs = [_gang_line(t) for t in tasks if (t.get("nodes") or 1) > 1]
    if gangs:
        text += "\n\n" + "\n".join(gangs)
    return text + ("\n(more tasks not shown: raise --tasks)" if more else "")


def _checkpoint_label(checkpoint: Mapping[str, Any]) -> str:
    if "seq" not in checkpoint:
        return "-"
    ranks = checkpoint.get("ranks") or 1
    return f"{checkpoint['seq']}" + (f" ({ranks} ranks)" if ranks > 1 else "")


def _gang_line(task: Mapping[str, Any]) -> str:
    """'task 0: gang of 2: rank 0 i-0abc, rank 1 i-0def' (its current attempt's instances)."""
    ranks = ", ".join(f"rank {r.get('rank')} {r.get('instance_id')}" for r in task.get("ranks") or [])
    return f"task {_index_label(task)}: gang of {task.get('nodes')}: {ranks or 'no instances now'}"


def render_status(job: Mapping[str, Any], tasks: Sequence[Mapping[str, Any]], more: bool = False,
                  color: bool = False) -> str:
    return render_job(job, color) + "\n\n" + render_tasks(tasks, more)


# Details a reader came for, shown whole: why something happened, whether a final checkpoint fits the warning.
WHOLE_DETAILS = ("reason", "final_checkpoint")


def _detail(detail: Any) -> str:
    if not detail:
        return ""
    if isinstance(detail, Mapping):
        # A reason is what a reader came for: whole. Other values are context, clipped.
        return " ".join(f"{k}={_one_line(v) if k in WHOLE_DETAILS else _clip(json.dumps(v) if isinstance(v, (dict, list)) else v, 60)}"
                        for k, v in detail.items())
    return _clip(str(detail), 120)


def render_event(event: Mapping[str, Any], with_date: bool = True) -> str:
    where = ""
    if event.get("task") is not None:
        where = f"task {event['task']}" + (f" #{event['attempt']}" if event.get("attempt") is not None else "")
    text = f"{short_time(event.get('at'), with_date)}  {str(event.get('kind')):<22} {where:<12} {_detail(event.get('detail'))}"
    return text.rstrip()


def render_events(events: Sequence[Mapping[str, Any]]) -> str:
    return "\n".join(render_event(e) for e in events) if events else "no events"


def render_control(action: str, job: Mapping[str, Any]) -> str:
    verb = {"cancel": "cancel", "suspend": "suspend", "resume": "resume"}.get(action, action)
    return (f"job {job.get('job_id')}: {verb} requested (state {job.get('state')}, desired {job.get('desired')}); "
            f"`spotrun watch {job.get('job_id')}` follows it")


def render_task_cancelled(job_id: str, task: Mapping[str, Any]) -> str:
    return (f"job {job_id} task {task.get('index')}: cancel requested "
            f"(state {task.get('state')}, desired {task.get('desired')})")


def render_watch(job: Mapping[str, Any], tasks: Sequence[Mapping[str, Any]], events: Sequence[Mapping[str, Any]],
                 *, more_tasks: int = 0, width: int = 100, color: bool = False, bar_width: int = 24,
                 note: str = "") -> str:
    """One frame of `spotrun watch`: header, counts, a bar per task, the newest events."""
    lines = render_job(job, color).splitlines()
    lines.append("")
    label_width = max([6, *(len(_index_label(t)) for t in tasks)])
    clipped = False
    for t in tasks:
        fraction = task_fraction(t)
        state = str(t.get("state"))
        label = f"{_index_label(t):>{label_width}}"
        head = (f"{label} {paint(progress_bar(fraction, bar_width), state, color)} {percent(fraction)}  "
                f"{paint(f'{state:<9}', state, color)} a{t.get('attempt')}  ")
        if state in ("FAILED", "CANCELLED"):
            # The reason gets the rest of the line, cut between words when it does not fit.
            whole = _exit_and_reason(t)
            tail = _clip(whole, max(12, width - _visible_length(head))) if width > 0 else whole
            clipped = clipped or tail != whole
        else:
            tail = t.get("pool") or ""
        lines.append(f"{head}{tail}".rstrip())
    if more_tasks:
        lines.append(f"       … and {more_tasks} more tasks (see the counts above)")
    if events:
        lines.append("")
        lines.append("newest events:")
        lines.extend("  " + render_event(e, with_date=False) for e in events)
    if clipped:
        lines.append(f"(reasons cut to fit: `spotrun status {job.get('job_id')}` shows them whole)")
    if note:
        lines.append("")
        lines.append(note)
    return "\n".join(_fit(line, width) for line in lines)


def _visible_length(text: str) -> int:
    length, i = 0, 0
    while i < len(text):
        if text.startswith("\x1b[", i) and (end := text.find("m", i)) != -1:
            i = end + 1
            continue
        length += 1
        i += 1
    return length


def _fit(line: str, width: int) -> str:
    """Cut a line to the terminal width (counting visible characters only), so redraws never wrap."""
    if width <= 0:
        return line
    visible, out, i = 0, [], 0
    while i < len(line):
        if line.startswith("\x1b[", i):
            end = line.find("m", i)
            if end == -1:
                break
            out.append(line[i:end + 1])
            i = end + 1
            continue
        if visible >= width:
            # A cut is always visible: the last cell becomes "…".
            for back in range(len(out) - 1, -1, -1):
                if not out[back].startswith("\x1b["):
                    out[back] = "…"
                    break
            return "".join(out) + ("\x1b[0m" if "\x1b[" in line else "")
        out.append(line[i])
        visible += 1
        i += 1
    return "".join(out)


def render_watch_line(job: Mapping[str, Any], now: datetime | None = None) -> str:
    """The one-line summary `watch` prints (when stdout is no terminal) whenever it changes."""
    clock = f"{now:%H:%M:%S}  " if now is not None else ""
    counts = job.get("counts") or {}
    total = sum(counts.values())
    done = counts.get("SUCCEEDED", 0)
    return f"{clock}job {job.get('job_id')} {job.get('state')}: {done}/{total} succeeded  [{format_counts(counts)}]"


def render_outcome(job: Mapping[str, Any]) -> str:
    state = job.get("state")
    if state == "SUCCEEDED":
        return f"job {job.get('job_id')} succeeded; `spotrun outputs {job.get('job_id')}` downloads its outputs"
    return f"job {job.get('job_id')} finished {state}"


def render_api_error(status: int, body: Any, text: str = "") -> str:
    """An API error as the lines to print on stderr (400 problems, 404/409 messages, 403 refusals)."""
    message = ""
    problems: list[Any] = []
    if isinstance(body, Mapping):
        message = str(body.get("error") or body.get("message") or body.get("Message") or "")
        problems = list(body.get("problems") or [])
    if not message:
        message = _clip(text, 300) if text else "no details"
    lines = [f"error: {message}" + ("" if status in (400, 404, 409) else f" (HTTP {status})")]
    for problem in problems:
        if isinstance(problem, Mapping):
            lines.append(f"  - {problem.get('field', '?')}: {problem.get('problem', problem)}")
        else:
            lines.append(f"  - {problem}")
    if status == 403:
        lines.append("  the API refused the request's signature: check your AWS credentials and region "
                     "(for the local API, export the credentials `make run` printed)")
    return "\n".join(lines)


def render_stats(stats: dict[str, Any]) -> str:
    """A job's statistics: totals, then one row per pool."""
    total = stats["total"]
    saving = ""
    if total.get("on_demand_cost_usd"):
        saving = f" ({1 - total['spot_cost_usd'] / total['on_demand_cost_usd']:.0%} saved)"
    lines = [
        f"job {stats['job_id']}  {stats['state']}{'' if stats.get('final') else ' (so far)'}",
        f"  tasks {stats['tasks']['total']}  executions {total['executions']}  failures {total['failures']}  "
        f"interruptions {total['interruptions']}",
        f"  wall {total['wall_seconds']:.0f} s  execution {total['exec_seconds']:.0f} s  "
        f"speedup over one instance {total['speedup'] if total['speedup'] is not None else '-'}x",
        f"  spot cost ${total['spot_cost_usd']:.4f}  on-demand would be ${total['on_demand_cost_usd']:.4f}{saving}",
    ]
    if stats.get("pools"):
        lines.append(f"  {'pool':<28} {'runs':>5} {'fail':>5} {'intr':>5} {'exec s':>9} {'spot $':>9}")
        for pool, row in stats["pools"].items():
            lines.append(f"  {pool:<28} {row['executions']:>5} {row['failures']:>5} {row['interruptions']:>5} "
                         f"{row['exec_seconds']:>9.0f} {row['spot_cost_usd']:>9.4f}")
    return "\n".join(lines)
