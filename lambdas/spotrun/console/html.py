"""The console's one renderer: view models (`spotrun.console.views`) in, HTML out, for CloudWatch's
custom widgets and for the local page alike. Pure.

What a widget may hold (CloudWatch's contract): HTML and CSS, inline SVG, no JavaScript. Buttons are
links followed by a `<cwdb-action>` element, which the dashboard turns into a call of the console
function (`endpoint`) with the JSON params in its body; the answer replaces the widget
(display="widget") or opens in a popup (display="popup"); `confirmation` asks first. The local page
emulates that element with a script of its own, outside this HTML.

Every value is escaped (`_e`) where it is put in: nothing a job, a task, a log or a reason says can
become markup. Nothing secret is shown: no credentials, no presigned URL; the only link out is a
CloudWatch console deep link to a log stream (AWS only), which asks for the viewer's own sign-in.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from typing import Any

from spotrun.console.gangs import GangView
from spotrun.console.views import (
    Bar,
    Chart,
    Count,
    Flash,
    JobsView,
    JobView,
    Line,
    LogTail,
    LogView,
    TaskRow,
    Viewer,
    When,
)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


STYLE = """
.sr{font:13px/1.45 "Amazon Ember",system-ui,sans-serif;color:var(--fg);--fg:#16191f;--muted:#5f6b7a;
--line:#e9ebed;--accent:#0972d3;--ok:#037f0c;--bad:#d91515;--warn:#8d6605;--chip:#f2f3f3;--bar:#e9ebed;
--btn:#fff;--cost:#0972d3;--done:#037f0c}
.sr.dark{--fg:#d1d5db;--muted:#9ba7b6;--line:#414d5c;--accent:#539fe5;--ok:#29ad32;--bad:#eb6f6f;
--warn:#e0ca57;--chip:#232f3e;--bar:#414d5c;--btn:#0f1b2a;--cost:#539fe5;--done:#29ad32}
.sr h2{font-size:15px;margin:2px 0 6px}.sr h3{font-size:13px;margin:12px 0 4px;color:var(--muted)}
.sr table{border-collapse:collapse;width:100%}.sr td,.sr th{padding:3px 8px;text-align:left;vertical-align:top;
border-bottom:1px solid var(--line)}.sr th{color:var(--muted);font-weight:600;white-space:nowrap}
.sr .num{text-align:right;white-space:nowrap}.sr .muted{color:var(--muted)}.sr .mono{font-family:monospace}
.sr .nowrap{white-space:nowrap}
.sr .btn{display:inline-block;padding:1px 9px;margin:0 4px 4px 0;border:1px solid var(--accent);border-radius:12px;
color:var(--accent);background:var(--btn);cursor:pointer;text-decoration:none;white-space:nowrap}
.sr .btn:hover{background:var(--accent);color:#fff}.sr .btn.danger{border-color:var(--bad);color:var(--bad)}
.sr .btn.danger:hover{background:var(--bad);color:#fff}.sr .btn.on{background:var(--accent);color:#fff}
.sr .link{color:var(--accent);cursor:pointer;text-decoration:underline}
.sr .state{font-weight:600;white-space:nowrap}.sr .SUCCEEDED{color:var(--ok)}.sr .FAILED{color:var(--bad)}
.sr .CANCELLED{color:#a13ad6}.sr .RUNNING,.sr .LAUNCHING{color:var(--accent)}.sr .SUSPENDED{color:var(--warn)}
.sr .QUEUED,.sr .WAITING{color:var(--muted)}
.sr .bar{display:inline-block;width:90px;height:8px;background:var(--bar);border-radius:4px;vertical-align:middle;
overflow:hidden}.sr .bar>span{display:block;height:100%;background:var(--done)}
.sr .chips span{display:inline-block;margin-right:8px;white-space:nowrap}
.sr .flash{padding:4px 8px;margin-bottom:6px;border-left:3px solid var(--ok);background:var(--chip)}
.sr .flash.bad{border-color:var(--bad)}
.sr .facts span{margin-right:14px;white-space:nowrap}.sr .facts b{color:var(--muted);font-weight:400}
.sr details>summary{cursor:pointer;color:var(--accent)}.sr .attempts td,.sr .attempts th{font-size:12px;padding:1px 6px}
.sr pre{margin:4px 0;padding:6px;background:var(--chip);max-height:340px;overflow:auto;font-size:12px;
white-space:pre-wrap;word-break:break-all}
.sr .focus{background:var(--chip)}.sr svg text{fill:var(--muted);font-size:11px}
.sr .cols{display:flex;flex-wrap:wrap;gap:18px}.sr .cols>div{flex:1 1 380px;min-width:0}
.sr .events td:first-child{white-space:nowrap}
cwdb-action{display:none}
"""


def _root(viewer: Viewer, body: Iterable[str]) -> str:
    return f'<div class="sr{" dark" if viewer.dark else ""}"><style>{STYLE}</style>{"".join(body)}</div>'


def _button(label: str, params: dict[str, Any], endpoint: str, *, display: str = "widget",
            confirmation: str = "", kind: str = "btn", danger: bool = False, on: bool = False) -> str:
    """A link the dashboard turns into a call of the console function with `params`."""
    classes = kind + (" danger" if danger else "") + (" on" if on else "")
    confirm = f' confirmation="{_e(confirmation)}"' if confirmation else ""
    body = html.escape(json.dumps(params, sort_keys=True, separators=(",", ":")), quote=False)
    return (f'<a class="{classes}">{_e(label)}</a><cwdb-action action="call" endpoint="{_e(endpoint)}" '
            f'display="{_e(display)}"{confirm}>{body}</cwdb-action>')


def _when(moment: When | None) -> str:
    if moment is None:
        return '<span class="muted">-</span>'
    return f'<span class="nowrap" title="{_e(moment.full)}">{_e(moment.text)}</span>'


def _state(state: str, desired: str = "RUN") -> str:
    wish = "" if desired in ("RUN", "CHECKPOINT") else f' <span class="muted">(asked to {_e(desired.lower())})</span>'
    return f'<span class="state {_e(state)}">{_e(state)}</span>{wish}'


def _bar(bar: Bar) -> str:
    width = f"{max(0.0, min(1.0, bar.fraction)) * 100:.1f}"
    return f'<span class="nowrap"><span class="bar"><span style="width:{width}%"></span></span> {_e(bar.label)}</span>'


def _counts(counts: Sequence[Count]) -> str:
    if not counts:
        return '<span class="muted">none</span>'
    return '<span class="chips">' + "".join(
        f'<span><span class="state {_e(c.state)}">{_e(c.state)}</span> {_e(c.count)}</span>' for c in counts) + "</span>"


def _flash(flash: Flash | None) -> str:
    if flash is None:
        return ""
    return f'<div class="flash{"" if flash.ok else " bad"}">{_e(flash.text)}</div>'


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[int] = (), cls: str = "",
           row_classes: Sequence[str] = ()) -> str:
    right = set(numeric)

    def cell(tag: str, i: int, content: str) -> str:
        return f'<{tag} class="num">{content}</{tag}>' if i in right else f"<{tag}>{content}</{tag}>"

    head = "".join(cell("th", i, _e(h)) for i, h in enumerate(headers))
    body = []
    for n, row in enumerate(rows):
        marked = row_classes[n] if n < len(row_classes) and row_classes[n] else ""
        opening = f'<tr class="{_e(marked)}">' if marked else "<tr>"
        body.append(opening + "".join(cell("td", i, content) for i, content in enumerate(row)) + "</tr>")
    table_class = f' class="{_e(cls)}"' if cls else ""
    return f"<table{table_class}><tr>{head}</tr>{''.join(body)}</table>"


# ------------------------------------------------------------------------------ jobs

def jobs_widget(view: JobsView, endpoint: str) -> str:
    filters = "".join(_button(f.label + (f" {f.count}" if f.count else ""), {"view": "jobs", "state": f.state},
                              endpoint, on=f.active) for f in view.filters)
    rows = [[
        _button(row.name, {"view": "job", "job_id": row.job_id}, endpoint, kind="link")
        + f'<br><span class="muted mono">{_e(row.job_id)}</span>',
        _state(row.state, row.desired), _bar(row.progress), _counts(row.counts), _when(row.created),
        f'<span class="nowrap">{_e(row.age)}</span>', _e(row.cost),
    ] for row in view.rows]
    table = (_table(["job", "state", "progress", "tasks by state", "submitted", "age", "cost so far"], rows, [6])
             if rows else '<p class="muted">no jobs' + (f" in state {_e(view.state)}" if view.state else "") + "</p>")
    more = (_button("next page", {"view": "jobs", "state": view.state, "page": view.next_page}, endpoint)
            if view.next_page else "")
    totals = f'<p class="muted">tasks of the jobs shown: {_counts(view.totals)}</p>' if view.rows else ""
    refresh = _button("refresh", {"view": "jobs", "state": view.state}, endpoint)
    return _root(view.viewer, [
        f'<div>{filters}</div>', table, f"<div>{more} {refresh}</div>", totals,
        f'<p class="muted">times in {_e(view.viewer.zone)}</p>',
    ])


# ------------------------------------------------------------------------------ a job

def job_widget(view: JobView, endpoint: str) -> str:
    key = {"job_id": view.job_id}
    header = (f'<h2>{_e(view.name)} <span class="muted mono">{_e(view.job_id)}</span> '
              f'{_state(view.state, view.desired)}</h2>')
    facts = '<div class="facts">' + " ".join(  # a space between: where a long line of facts may wrap
        f'<span title="{_e(hover)}"><b>{_e(label)}</b> {_e(value)}</span>' for label, value, hover in view.facts) + "</div>"
    actions = "".join(_button(a.label, {"action": a.name, **key}, endpoint, confirmation=a.confirmation, danger=a.danger)
                      for a in view.actions)
    nav = (_button("all jobs", {"view": "jobs"}, endpoint)
           + _button("refresh", {"view": "job", **key, **({"task": view.tail.index} if view.tail else {})}, endpoint))
    parts = [_flash(view.flash), header, facts,
             f'<p>{_bar(view.progress)} &nbsp; {_counts(view.counts)}</p>', f"<div>{actions}{nav}</div>",
             "<h3>tasks</h3>", _tasks(view.tasks, view.job_id, endpoint)]
    if view.more_tasks:
        parts.append(f'<p class="muted">the first {len(view.tasks)} tasks are shown; the counts above are of all</p>')
    if view.gang is not None:
        parts.append(_gang(view.gang))
    left = ["<h3>timeline</h3>", _events(view)]
    right = ["<h3>costs and statistics</h3>", _stats(view), _chart(view.chart)]
    parts.append(f'<div class="cols"><div>{"".join(left)}</div><div>{"".join(right)}</div></div>')
    if view.tail is not None:
        parts += [f"<h3>log of task {_e(view.tail.index)}</h3>", _tail(view.tail, view.job_id, endpoint)]
    parts.append(f'<p class="muted">times in {_e(view.viewer.zone)}</p>')
    return _root(view.viewer, parts)


def _tasks(tasks: Sequence[TaskRow], job_id: str, endpoint: str) -> str:
    if not tasks:
        return '<p class="muted">no tasks</p>'
    rows = []
    for t in tasks:
        log = {"view": "log", "job_id": job_id, "task": t.index}
        buttons = (_button("log", log, endpoint, display="popup", kind="link") + " "
                   + _button("tail here", {"view": "job", "job_id": job_id, "task": t.index}, endpoint, kind="link")
                   if t.attempt else "")
        buttons += "".join(" " + _button(a.label, {"action": a.name, "job_id": job_id, "task": t.index}, endpoint,
                                         confirmation=a.confirmation, kind="link") for a in t.actions)
        history = ""
        if t.attempts:
            instances = ["instances"] if t.gang else []  # each billed: the cost is theirs
            attempts = _table(["#", "pool", "market", *instances, "start", "end", "ran", "outcome", "scope", "restored",
                               "cost"], [
                [_e(a.number), _e(a.pool), _e(a.market), *([_e(a.instances)] if t.gang else []), _when(a.start),
                 _when(a.end), _e(a.ran), _e(a.outcome), _e(a.scope), _e(a.restored), _e(a.cost)] for a in t.attempts],
                [0, 3, 10] if t.gang else [0, 9], cls="attempts")
            history = f"<details><summary>{len(t.attempts)} attempt{'s' if len(t.attempts) != 1 else ''}</summary>{attempts}</details>"
        gang_of = f' <span class="muted nowrap">{_e(t.gang)}</span>' if t.gang else ""
        rows.append([_e(t.label) + gang_of, _state(t.state), _e(t.attempt), _e(t.pool), _bar(t.progress), _e(t.checkpoint),
                     _e(t.note) + history, buttons])
    return _table(["task", "state", "attempt", "pool", "progress", "checkpoint", "exit / reason / attempts", ""],
                  rows, [2], row_classes=["focus" if t.focused else "" for t in tasks])  # its tail is below


def _gang(gang: GangView) -> str:
    """The focused gang task: its ranks' instances now, its gang checkpoints, each attempt's instances."""
    ranks = (_table(["rank", "instance"], [[_e(r.rank), f'<span class="mono">{_e(r.instance)}</span>'] for r in gang.ranks],
                    [0], cls="attempts") if gang.ranks else "")
    checkpoints = (_table(["checkpoint", "ranks", "size", "attempt", "committed"], [
        [_e(c.seq), _e(c.ranks), _e(c.size), _e(c.attempt), _when(c.committed)] for c in gang.checkpoints],
        [0, 1, 2, 3], cls="attempts") if gang.checkpoints else '<p class="muted">no gang checkpoint committed yet</p>')
    attempts = _table(["attempt", "instances, by rank"], [
        [_e(a.number), '<span class="mono">' + ", ".join(f"{_e(r.rank)}: {_e(r.instance)}" for r in a.instances)
         + "</span>"] for a in gang.attempts], [0], cls="attempts") if gang.attempts else ""
    return (f'<h3>gang of task {_e(gang.index)}: {_e(gang.nodes)} ranks</h3><div class="cols gang">'
            f'<div><p class="muted">{_e(gang.note)}</p>{ranks}</div>'
            f'<div><p class="muted">gang checkpoints (each names every rank\'s part)</p>{checkpoints}</div>'
            f'<div><p class="muted">attempts and their instances</p>{attempts}</div></div>')


def _events(view: JobView) -> str:
    if not view.events:
        return '<p class="muted">no events</p>'
    return _table(["when", "what"], [[_when(e.when), _e(e.text)] for e in view.events], cls="events")


def _stats(view: JobView) -> str:
    totals = '<div class="facts">' + " ".join(f"<span><b>{_e(k)}</b> {_e(v)}</span>" for k, v in view.totals) + "</div>"
    if not view.pools:
        return totals + '<p class="muted">no attempt has ended yet</p>'
    pools = _table(["pool", "runs", "failed", "interrupted", "ran", "spot", "on demand"], [
        [_e(p.pool), _e(p.runs), _e(p.failures), _e(p.interruptions), _e(p.ran), _e(p.spot), _e(p.on_demand)]
        for p in view.pools], [1, 2, 3, 4, 5, 6])
    return totals + pools


CHART_W, CHART_H, PAD_X, PAD_Y = 560, 150, 64, 16  # room for the axis labels on both sides


def _chart(chart: Chart | None) -> str:
    if chart is None:
        return ""
    inner_w, inner_h = CHART_W - 2 * PAD_X, CHART_H - 2 * PAD_Y

    def path(points: Sequence[tuple[float, float]]) -> str:
        return " ".join(f"{PAD_X + x * inner_w:.1f},{PAD_Y + (1 - y) * inner_h:.1f}" for x, y in points)

    bottom, right = CHART_H - PAD_Y, CHART_W - PAD_X
    return (
        f'<svg viewBox="0 0 {CHART_W} {CHART_H}" width="100%" style="max-width:{CHART_W}px" role="img" '
        f'aria-label="progress and cost over time">'
        f'<rect x="{PAD_X}" y="{PAD_Y}" width="{inner_w}" height="{inner_h}" fill="none" stroke="var(--line)"/>'
        f'<polyline fill="none" stroke="var(--done)" stroke-width="2" points="{path(chart.progress)}"/>'
        f'<polyline fill="none" stroke="var(--cost)" stroke-width="2" stroke-dasharray="5 3" points="{path(chart.cost)}"/>'
        f'<text x="{PAD_X - 4}" y="{PAD_Y + 4}" text-anchor="end">100%</text>'
        f'<text x="{PAD_X - 4}" y="{bottom}" text-anchor="end">0</text>'
        f'<text x="{right + 4}" y="{PAD_Y + 4}">{_e(chart.top_cost)}</text>'
        f'<text x="{PAD_X}" y="{CHART_H - 2}">{_e(chart.start)}</text>'
        f'<text x="{right}" y="{CHART_H - 2}" text-anchor="end">{_e(chart.end)}</text>'
        f"</svg>"
        f'<p class="muted"><span style="color:var(--done)">━</span> tasks succeeded &nbsp; '
        f'<span style="color:var(--cost)">╍</span> instance cost ({_e(chart.note)})</p>'
    )


def _lines(lines: Sequence[Line]) -> str:
    return "\n".join(f'<span class="muted" title="{_e(line.when.full)}">{_e(line.when.text)}</span> {_e(line.text)}'
                     for line in lines)


def _tail(tail: LogTail, job_id: str, endpoint: str) -> str:
    params = {"view": "log", "job_id": job_id, "task": tail.index, "attempt": tail.attempt, "whole": True}
    link = (f' <a class="link" href="{_e(tail.link)}" target="_blank" rel="noopener noreferrer">'
            f"in the CloudWatch console</a>" if tail.link else "")
    body = f"<pre>{_lines(tail.lines)}</pre>" if tail.lines else ""
    return (f'<p class="muted">{_e(tail.note)} &nbsp; '
            f'{_button("full log", params, endpoint, display="popup", kind="link")}{link}</p>{body}')


# ------------------------------------------------------------------------------ a log (popup)

def log_widget(view: LogView, endpoint: str) -> str:
    others = "".join(
        _button(f"attempt {n}", {"view": "log", "job_id": view.job_id, "task": view.index, "attempt": n,
                                 "whole": view.whole}, endpoint, display="popup", on=n == view.attempt)
        for n in view.attempts)
    whole = "" if view.whole else _button("whole log", {"view": "log", "job_id": view.job_id, "task": view.index,
                                                        "attempt": view.attempt, "whole": True}, endpoint,
                                          display="popup")
    link = (f' <a class="link" href="{_e(view.link)}" target="_blank" rel="noopener noreferrer">'
            f"open in the CloudWatch console</a>" if view.link else "")
    return _root(view.viewer, [
        f'<h2>{_e(view.name)} task {_e(view.index)}, attempt {_e(view.attempt)}</h2>',
        f"<div>{others} {whole}</div>", f'<p class="muted">{_e(view.note)}{link}</p>',
        f"<pre>{_lines(view.lines)}</pre>" if view.lines else "",
        f'<p class="muted">times in {_e(view.viewer.zone)}</p>',
    ])


# ------------------------------------------------------------------------------ notes

def note_widget(viewer: Viewer, text: str, endpoint: str, back: dict[str, Any] | None = None) -> str:
    """A short message (no such job, nothing submitted yet) with a way back."""
    return _root(viewer, [f"<p>{_e(text)}</p>", _button("all jobs", back or {"view": "jobs"}, endpoint)])

