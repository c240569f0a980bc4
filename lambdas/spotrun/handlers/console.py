"""The console function: CloudWatch dashboard custom widgets (jobs, a job in detail, an attempt's
log) and their buttons, and the local page, which calls it with the same events.

CloudWatch invokes it with the console user's own credentials: `lambda:InvokeFunction` on it is who
may see and steer jobs. Each call carries `widgetContext` (the viewer's time zone, theme, size) and
the widget's params, or a button's (`<cwdb-action>`): what to show (`view`) or do (`action`). An
action goes through the same use cases as the API (`spotrun.overview.act` -> `spotrun.jobs`), and
the widget shows the job again with what the action did.

Who pressed a button: Lambda hands a function nothing of its caller's identity, and the event's
params are the caller's to write, so the timeline records the dashboard and this invocation's
request id, which CloudTrail's Lambda data events pair with the caller's IAM identity.
"""

from __future__ import annotations

import os
from typing import Any, Literal
from urllib.parse import quote

from aws_lambda_powertools.metrics import MetricUnit
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from spotrun import jobs, overview
from spotrun.access import log_stream
from spotrun.aws import default_control_plane
from spotrun.console import html, views
from spotrun.control import ControlPlane
from spotrun.domain.messages import JOB_ID_PATTERN, MAX_ATTEMPT, MAX_INDEX
from spotrun.domain.model import JobState
from spotrun.domain.pages import BadPageToken
from spotrun.domain.spec import problems_of
from spotrun.handlers.common import instrumented, logger, metrics
from spotrun.resources import EnvVar

DOCS = """## spotrun console

Jobs, their tasks, attempts, timeline, logs and costs, and buttons to steer them.

Param | What
---|---
**view** | `jobs` (default), `job` (one job: `job_id`, or the newest), `log` (`job_id`, `task`, `attempt`, `whole`)
**state** | with `jobs`: only jobs in this state
**job_id** | with `job` and `log`

Buttons call this function back with `action` (`cancel`, `suspend`, `resume`, `checkpoint`, `cancel-task`).
"""


class WidgetRequest(BaseModel):
    """What a widget or one of its buttons asks for."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    view: Literal["jobs", "job", "log"] = "jobs"
    action: Literal["cancel", "suspend", "resume", "checkpoint", "cancel-task"] | None = None
    job_id: str | None = Field(None, pattern=JOB_ID_PATTERN)
    task: int | None = Field(None, ge=0, le=MAX_INDEX)
    attempt: int | None = Field(None, ge=1, le=MAX_ATTEMPT)
    state: JobState | None = None
    page: str | None = Field(None, max_length=2048)
    whole: bool = False


def params_of(event: dict[str, Any]) -> dict[str, Any]:
    """A widget's params arrive at the top of the event and in widgetContext.params (a button's, too)."""
    context = event.get("widgetContext") or {}
    found = dict(context.get("params") or {}) if isinstance(context.get("params"), dict) else {}
    found.update({k: v for k, v in event.items() if k not in ("widgetContext", "describe")})
    return found


@instrumented
def handler(event: dict[str, Any], context: Any, control: ControlPlane | None = None) -> str:
    if event.get("describe"):
        return DOCS
    cp = control or default_control_plane()
    endpoint = str(getattr(context, "invoked_function_arn", ""))
    widget = event.get("widgetContext") or {}
    viewer = views.Viewer.of(widget if isinstance(widget, dict) else {}, cp.clock())
    try:
        request = WidgetRequest.model_validate(params_of(event))
    except ValidationError as error:
        problems = "; ".join(f"{p['field']}: {p['problem']}" for p in problems_of(error.errors(include_url=False)))
        return html.note_widget(viewer, f"this widget's params are not ones the console knows ({problems})", endpoint)
    try:
        return _answer(cp, request, viewer, endpoint, widget, context)
    except jobs.NotFound as missing:
        return html.note_widget(viewer, str(missing), endpoint)
    except BadPageToken:  # a page link of another listing, altered, or sealed under an earlier key
        return html.note_widget(viewer, "that page of jobs cannot be shown (a page link is good only for the "
                                        "listing it came from): start again from the first page", endpoint)


def _answer(cp: ControlPlane, request: WidgetRequest, viewer: views.Viewer, endpoint: str, widget: dict[str, Any],
            context: Any) -> str:
    flash = None
    if request.action is not None:
        if request.job_id is None:
            return html.note_widget(viewer, "an action needs the job it is for (job_id)", endpoint)
        by = f"console {widget.get('dashboardName') or 'dashboard'} (request {getattr(context, 'aws_request_id', '?')})"
        outcome = overview.act(cp, request.action, request.job_id, request.task, by)
        metrics.add_metric(name="ConsoleActions", unit=MetricUnit.Count, value=1)
        logger.info("console action", extra={"action": request.action, "job_id": request.job_id,
                                             "task": request.task, "ok": outcome.ok})
        flash = views.Flash(outcome.ok, outcome.message)
        return _job(cp, request.job_id, request.task, viewer, endpoint, flash)
    if request.view == "log":
        if request.job_id is None or request.task is None:
            return html.note_widget(viewer, "a log is of one task of one job (job_id, task)", endpoint)
        found = overview.attempt_log(cp, request.job_id, request.task, request.attempt, request.whole)
        log = found.page
        return html.log_widget(views.log_view(
            found.job, found.task, log.attempt, log.lines, found.whole, log.kept,
            overview.LOG_LINES if found.whole else overview.TAIL_LINES * 4, viewer,
            _log_link(cp, log.job_id, log.index, log.attempt)), endpoint)
    if request.view == "job":
        job_id = request.job_id
        if job_id is None:
            newest = overview.newest_job(cp)
            if newest is None:
                return html.note_widget(viewer, "no job has been submitted yet", endpoint)
            job_id = newest.job_id
        return _job(cp, job_id, request.task, viewer, endpoint, flash)
    page = overview.jobs_page(cp, request.state.value if request.state else None, request.page)
    return html.jobs_widget(views.jobs_view(page.jobs, page.state, page.token, page.open_counts, viewer,
                                            overview.COUNTED_UP_TO), endpoint)


def _job(cp: ControlPlane, job_id: str, task: int | None, viewer: views.Viewer, endpoint: str,
         flash: views.Flash | None) -> str:
    detail = overview.job_detail(cp, job_id, task)
    tail = None
    link = None
    if detail.focus is not None and detail.tail is not None:
        tail = (detail.focus.task, detail.tail.attempt, detail.tail.lines, detail.logs_kept)
        link = _log_link(cp, job_id, detail.focus.task.index, detail.tail.attempt)
    gang = None
    if detail.focus is not None and detail.focus.task.nodes > 1:
        gang = (detail.focus.task, detail.focus.attempts, detail.gang_checkpoints)
    view = views.job_view(detail.job, [(h.task, h.attempts) for h in detail.tasks], detail.more_tasks, detail.events,
                          detail.stats, viewer, tail, link, flash, gang)
    return html.job_widget(view, endpoint)


def _log_link(cp: ControlPlane, job_id: str, index: int, attempt: int) -> str | None:
    """The stream in the CloudWatch console (it asks for the viewer's own sign-in): on AWS only."""
    group = cp.settings.task_log_group
    if not group or os.environ.get(EnvVar.AWS_ENDPOINT_URL):
        return None

    def encoded(text: str) -> str:  # the console's fragment encoding: percent-encoded twice, '%' written '$'
        return quote(quote(text, safe=""), safe="").replace("%", "$")

    region = cp.settings.region
    return (f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}#logsV2:log-groups/log-group/"
            f"{encoded(group)}/log-events/{encoded(log_stream(job_id, index, attempt))}")
