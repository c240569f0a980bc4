"""The console function as CloudWatch calls it: the custom widget event (widgetContext, params at the
top), against moto. Its buttons steer jobs through the API's use cases, recorded on the timeline."""

from __future__ import annotations

import copy
import html as std_html
import json
import re
from typing import Any

import pytest

from spotrun.domain.model import Desired
from spotrun.handlers import console
from tests.integration.test_logs_and_actions import put_lines, running

# The event CloudWatch sends a custom widget, as documented ("Details about custom widgets in
# CloudWatch"; the same sample Powertools tests its data class with): the widget's params at the top
# of the event and again in widgetContext.params.
DOCUMENTED_SAMPLE = {
    "original": "param-to-widget",
    "widgetContext": {
        "dashboardName": "Name-of-current-dashboard",
        "widgetId": "widget-16",
        "accountId": "123456789123",
        "locale": "en",
        "timezone": {"label": "UTC", "offsetISO": "+00:00", "offsetInMinutes": 0},
        "period": 300,
        "isAutoPeriod": True,
        "timeRange": {"mode": "relative", "start": 1627236199729, "end": 1627322599729, "relativeStart": 86400012,
                      "zoom": {"start": 1627276030434, "end": 1627282956521}},
        "theme": "light",
        "linkCharts": True,
        "title": "Tweets for Amazon website problem",
        "forms": {"all": {}},
        "params": {"original": "param-to-widget"},
        "width": 588,
        "height": 369,
    },
}


def widget_event(**params: Any) -> dict[str, Any]:
    """The documented event with these params, where CloudWatch puts them (and a button's)."""
    event = copy.deepcopy(DOCUMENTED_SAMPLE)
    del event["original"]
    event["widgetContext"]["params"] = dict(params)
    event.update(params)
    return event


def show(cp: Any, context: Any, **params: Any) -> str:
    answer = console.handler(widget_event(**params), context, control=cp)
    assert isinstance(answer, str)
    return answer


def text_of(rendered: str) -> str:
    return std_html.unescape(re.sub(r"<[^>]+>", " ", re.sub(r"<cwdb-action.*?</cwdb-action>|<style>.*?</style>", "",
                                                           rendered, flags=re.S)))


def test_the_jobs_widget_lists_jobs_with_their_state_progress_and_counts(cp, env, aws, context):
    _, job_id = running(cp, env, aws, context, tasks=2)
    rendered = show(cp, context)
    words = " ".join(text_of(rendered).split())
    assert job_id in words and "RUNNING" in words and "0/2 succeeded" in words
    assert "running 1" in words and "times in UTC" in words
    buttons = [json.loads(std_html.unescape(body)) for body in re.findall(r"<cwdb-action[^>]*>(.*?)</cwdb-action>",
                                                                          rendered)]
    assert {"view": "job", "job_id": job_id} in buttons
    assert {"view": "jobs", "state": "RUNNING"} in buttons
    assert "RUNNING" not in text_of(show(cp, context, view="jobs", state="SUCCEEDED")).split("tasks by state")[-1]


def test_the_jobs_widget_pages_with_the_apis_sealed_tokens_and_refuses_a_forged_one(cp, context):
    from spotrun import jobs, overview

    submitted = {jobs.submit_job(cp, {"name": f"job{n}", "command": "true", "checkpoint": {"method": "none"}})[0].job_id
                 for n in range(overview.JOBS_PER_PAGE + 1)}

    def listed(rendered: str) -> set[str]:
        return set(re.findall(r"j-[0-9a-f]{20}", text_of(rendered)))

    def next_page(rendered: str) -> str:
        [page] = [b["page"] for b in (json.loads(std_html.unescape(body)) for body in re.findall(
            r"<cwdb-action[^>]*>(.*?)</cwdb-action>", rendered)) if b.get("page")]
        return page

    first = show(cp, context)
    token = next_page(first)
    assert token.count(".") == 2  # the API's sealed token (version.cursor.tag), not the store's cursor
    rest = show(cp, context, view="jobs", page=token)
    assert len(listed(first)) == overview.JOBS_PER_PAGE and listed(first) | listed(rest) == submitted
    version, payload, tag = token.split(".")
    forged = f"{version}.{payload}.{'A' * len(tag)}"
    for bad in (forged, token[:-2], show_state_token(cp, context)):
        refused = text_of(show(cp, context, view="jobs", page=bad))
        assert "that page of jobs cannot be shown" in refused, bad


def show_state_token(cp: Any, context: Any) -> str:
    """A genuine token of another listing (the QUEUED jobs): not good for the list of all jobs."""
    from spotrun import jobs

    _, token = jobs.list_jobs(cp, "QUEUED", 1, None)
    assert token
    return token


def test_a_job_in_detail_shows_tasks_attempts_timeline_costs_and_the_newest_log_lines(cp, env, aws, context):
    _, job_id = running(cp, env, aws, context, tasks=2)
    put_lines(aws, env, job_id, 0, cp.store.get_task(job_id, 0).attempt, ["computing <primes>", "step 2 of 5"])
    words = " ".join(text_of(show(cp, context, view="job", job_id=job_id, task=0)).split())
    for expected in ("tasks", "timeline", "Submitted by alice with 2 tasks", "started on", "costs and statistics",
                     "spot cost", "on demand would cost", "log of task 0", "computing <primes>", "step 2 of 5",
                     "tasks succeeded", "instance cost"):
        assert expected in words, expected
    newest = " ".join(text_of(show(cp, context, view="job")).split())  # no job_id: the newest open job
    assert job_id in newest


def test_its_buttons_steer_the_job_through_the_apis_use_cases_and_the_timeline_says_so(cp, env, aws, context):
    _, job_id = running(cp, env, aws, context, tasks=2)
    answer = text_of(show(cp, context, action="suspend", job_id=job_id))
    assert "suspend requested" in answer
    assert cp.store.get_job(job_id).desired == Desired.SUSPEND
    requested = [e for e in cp.store.timeline(job_id, 100) if e.kind == "JobSuspendRequested"]
    assert requested[0].detail["by"] == "console Name-of-current-dashboard (request test)"

    refused = text_of(show(cp, context, action="suspend", job_id=job_id, view="job"))
    assert "suspend requested" in refused  # asking twice is fine, as in the API
    refused = text_of(show(cp, context, action="checkpoint", job_id=job_id, task=1))
    assert "task 1 is RUNNING" not in refused  # task 1 runs: the request goes through
    assert cp.store.get_task(job_id, 1).checkpoint_requested_at is not None

    resumed = text_of(show(cp, context, action="resume", job_id=job_id))
    assert "resume requested" in resumed and cp.store.get_job(job_id).desired == Desired.RUN
    cancelled = text_of(show(cp, context, action="cancel-task", job_id=job_id, task=0))
    assert "cancel of task 0 requested" in cancelled
    assert cp.store.get_task(job_id, 0).desired == Desired.CANCEL


def test_an_action_the_state_does_not_allow_is_said_and_changes_nothing(cp, env, aws, context):
    _, job_id = running(cp, env, aws, context, tasks=1)
    answer = show(cp, context, action="resume", job_id=job_id)
    assert 'class="flash bad"' in answer and "is not suspended; it cannot be resumed" in text_of(answer)
    assert cp.store.get_job(job_id).desired == Desired.RUN


@pytest.mark.parametrize("params", [
    {"view": "job", "job_id": "j-nope"}, {"view": "fancy"}, {"view": "log", "job_id": "j-0194f3a2b1c0a1b2c3d4"},
    {"action": "suspend"}, {"view": "jobs", "state": "SLEEPING"},
])
def test_params_the_console_does_not_know_get_a_note_not_an_error(cp, context, params):
    rendered = show(cp, context, **params)
    assert "all jobs" in text_of(rendered)


def test_an_unknown_job_is_said_to_be_unknown(cp, context):
    assert "no job j-0194f3a2b1c0a1b2c3d4" in text_of(show(cp, context, view="job", job_id="j-0194f3a2b1c0a1b2c3d4"))


def test_the_log_popup_shows_an_attempts_lines_and_the_whole_log_on_asking(cp, env, aws, context):
    _, job_id = running(cp, env, aws, context, tasks=1)
    attempt = cp.store.get_task(job_id, 0).attempt
    put_lines(aws, env, job_id, 0, attempt, [f"line {n}" for n in range(150)])
    tail = text_of(show(cp, context, view="log", job_id=job_id, task=0))
    assert "line 149" in tail and "line 0\n" not in tail and "the newest 100 lines" in tail
    whole = text_of(show(cp, context, view="log", job_id=job_id, task=0, attempt=attempt, whole=True))
    assert "line 0 " in whole.replace("\n", " ") and "the whole log, 150 lines" in whole


def test_the_widget_describes_itself_when_asked(cp, context):
    assert console.handler({"describe": True}, context, control=cp).startswith("## spotrun console")


def test_a_gang_task_shows_its_ranks_instances_and_its_gang_checkpoints_read_from_its_timeline(cp, env, aws, context,
                                                                                              clock):
    from spotrun.assignments import commit
    from spotrun.attempts import claim
    from spotrun.domain.model import TimelineEvent
    from tests.integration.test_gang import GANG, rank_ref
    from tests.integration.test_task_flow import Loop

    loop = Loop(cp, env, aws, context)
    _, accepted = loop.api("POST", "/jobs", {**GANG, "tasks": 17, "max_concurrency": 2})
    job_id = accepted["job_id"]
    loop.drain()
    gang = loop.task(job_id, 0)
    claim(cp, rank_ref(gang, 0))
    for seq, size in ((1, 3 * 2**20), (2, 4 * 2**20)):
        assert commit(cp, gang.gang_instances[0], gang.attempt, seq, size, "signal", clock(), ranks=2)
    # task 16 shares task 0's shard of the timeline: its commit is not task 0's
    cp.store.add_event(TimelineEvent(job_id, clock(), "CheckpointCommitted", "16-ckpt-9", 16, 1,
                                     {"seq": 9, "bytes": 1, "ranks": 2}))
    found = cp.store.task_events(job_id, 0, "CheckpointCommitted", 10)
    assert [e.detail["seq"] for e in found] == [2, 1]  # newest first, task 0's only
    assert [e.detail["seq"] for e in cp.store.task_events(job_id, 0, "CheckpointCommitted", 1)] == [2]

    words = " ".join(text_of(show(cp, context, view="job", job_id=job_id, task=0)).split())
    for expected in ("0 gang of 2", "#2 of 2 ranks, 4.0 MiB", "gang of task 0: 2 ranks",
                     "the instances of attempt 1, by rank", f"0 {gang.gang_instances[0]} 1 {gang.gang_instances[1]}",
                     "2 2 4.0 MiB 1", "1 2 3.0 MiB 1", f"1 0: {gang.gang_instances[0]}, 1: {gang.gang_instances[1]}",
                     f"its gang of 2 launched in {gang.pool}: rank 0 {gang.gang_instances[0]}",
                     "saved gang checkpoint 2 of all 2 ranks, 4.0 MiB"):
        assert expected in words, expected
    assert "9 2" not in words.split("gang checkpoints")[1].split("attempts and their instances")[0]
