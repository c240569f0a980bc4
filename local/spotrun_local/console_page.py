"""The console, locally: the same `console` function the stack puts on the CloudWatch dashboard, its
HTML shown on a page of the local gateway, with its buttons working.

The page (`PAGE`) is a shell: a script of its own, outside the widget HTML, plays the dashboard's
part. It asks the gateway for a widget (`POST /console/call?token=...` with the params and the
browser's time zone and size), which invokes the function with the event CloudWatch would send
(`widget_event`), and emulates `<cwdb-action>`: the element before each one calls the function with
its JSON params on click (after its confirmation), showing the answer in the widget or a popup. It
refreshes the widget every few seconds and swaps the content only when it changed, in one step, so
nothing flickers, and open attempt histories stay open.
"""

from __future__ import annotations

import re
import time
from typing import Any

ACCOUNT = "000000000000"
DASHBOARD = "spotrun-local"
MAX_PARAMS_CHARS = 4096
_OFFSET = re.compile(r"^[+-]\d{2}:\d{2}$")


class BadCall(ValueError):
    """A page call the gateway will not pass on."""


def widget_event(params: dict[str, Any], browser: dict[str, Any] | None = None,
                 now_ms: int | None = None) -> dict[str, Any]:
    """The custom widget event CloudWatch sends (its documented shape), for these params, with the
    viewer's time zone, theme and size as the browser reported them."""
    browser = browser or {}
    zone = browser.get("timezone") if isinstance(browser.get("timezone"), dict) else {}
    offset_iso = str(zone.get("offsetISO") or "+00:00")
    if not _OFFSET.match(offset_iso):
        raise BadCall(f"timezone.offsetISO {offset_iso[:20]!r} is not like +02:00")
    sign = -1 if offset_iso.startswith("-") else 1
    offset = sign * (int(offset_iso[1:3]) * 60 + int(offset_iso[4:6]))
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    context = {
        "dashboardName": DASHBOARD, "widgetId": "widget-console", "accountId": ACCOUNT,
        "locale": str(browser.get("locale") or "en")[:35],
        "timezone": {"label": str(zone.get("label") or "Local")[:64], "offsetISO": offset_iso, "offsetInMinutes": offset},
        "period": 300, "isAutoPeriod": True,
        "timeRange": {"mode": "relative", "start": now - 3 * 3600 * 1000, "end": now, "relativeStart": 3 * 3600 * 1000},
        "theme": "dark" if browser.get("theme") == "dark" else "light", "linkCharts": True, "title": "spotrun",
        "forms": {"all": {}}, "params": dict(params),
        "width": _pixels(browser.get("width"), 1200), "height": _pixels(browser.get("height"), 800),
    }
    return {**params, "widgetContext": context}


def _pixels(value: Any, default: int) -> int:
    return int(value) if isinstance(value, int | float) and 0 < value < 100_000 else default


def page_call(body: Any) -> dict[str, Any]:
    """The page's request ({"params": {...}, "browser": {...}}) as the widget event to invoke with."""
    if not isinstance(body, dict) or not isinstance(body.get("params"), dict):
        raise BadCall('the body is {"params": {...}, "browser": {...}}')
    params = body["params"]
    if len(repr(params)) > MAX_PARAMS_CHARS:
        raise BadCall("the params are too long for a widget")
    browser = body.get("browser")
    return widget_event(params, browser if isinstance(browser, dict) else {})


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>spotrun console (local)</title>
<style>
body{margin:0;font:13px system-ui,sans-serif;background:#f2f3f3}
header{padding:8px 16px;background:#232f3e;color:#fff;display:flex;gap:16px;align-items:baseline}
header b{font-size:16px}header span{color:#c6c6cd;font-size:12px}
#widget{margin:12px;padding:12px 14px;background:#fff;border-radius:6px;box-shadow:0 1px 3px #0002;min-height:200px}
#note{margin:0 14px;color:#5f6b7a;font-size:12px}
#popup{position:fixed;inset:0;background:#0006;display:none;align-items:flex-start;justify-content:center;z-index:9}
#popup.open{display:flex}#popup>div{margin-top:5vh;width:min(1100px,92vw);max-height:85vh;overflow:auto;background:#fff;
border-radius:6px;padding:12px 14px;position:relative}
#popup-close{position:absolute;right:10px;top:6px;cursor:pointer;font-size:20px;border:0;background:none}
</style></head>
<body><header><b>spotrun</b><span>console, local deployment: the CloudWatch dashboard's widget, served here</span></header>
<div id="widget" data-state="loading">loading...</div><p id="note"></p>
<div id="popup"><div><button id="popup-close" title="close">&times;</button><div id="popup-body"></div></div></div>
<script>
"use strict";
// The dashboard's part, emulated: this script is not in the widget's HTML (widgets run no script).
const token = new URLSearchParams(location.search).get("token") || "";
const widget = document.getElementById("widget"), note = document.getElementById("note");
const popup = document.getElementById("popup"), popupBody = document.getElementById("popup-body");
let current = readHash(), shown = "", busy = false;

function readHash() {
  try { const p = JSON.parse(decodeURIComponent(location.hash.slice(1))); if (p && typeof p === "object") return p; }
  catch (e) {}
  return {view: "jobs"};
}
function offsetISO() {
  const m = -new Date().getTimezoneOffset(), a = Math.abs(m);
  return (m < 0 ? "-" : "+") + String(Math.floor(a / 60)).padStart(2, "0") + ":" + String(a % 60).padStart(2, "0");
}
function browser() {
  return {timezone: {label: Intl.DateTimeFormat().resolvedOptions().timeZone || "Local", offsetISO: offsetISO()},
          width: widget.clientWidth, height: window.innerHeight, locale: navigator.language,
          theme: window.matchMedia && matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light"};
}
async function call(params) {
  const r = await fetch("/console/call?token=" + encodeURIComponent(token), {
    method: "POST", headers: {"Content-Type": "application/json"}, cache: "no-store",
    body: JSON.stringify({params: params, browser: browser()})});
  const text = await r.text();
  if (!r.ok) { let m = text; try { m = JSON.parse(text).message; } catch (e) {} throw new Error(m || ("HTTP " + r.status)); }
  return text;
}
function openDetails(root) {
  return Array.from(root.querySelectorAll("details")).map((d, i) => d.open ? i : -1).filter(i => i >= 0);
}
function show(html) {
  if (html === shown) return false;
  const next = document.createElement("div");
  next.innerHTML = html;
  const keep = openDetails(widget), details = next.querySelectorAll("details");
  for (const i of keep) if (details[i]) details[i].open = true;
  wire(next);
  widget.replaceChildren(...next.childNodes);  // one swap: no flicker
  widget.dataset.state = "shown";
  shown = html;
  return true;
}
function navigate(params) {
  const next = params.action ? {view: "job", job_id: params.job_id, ...(params.task !== undefined ? {task: params.task} : {})}
                             : params;
  current = next;
  history.replaceState(null, "", "#" + encodeURIComponent(JSON.stringify(next)));
}
function wire(root) {
  for (const action of root.querySelectorAll("cwdb-action")) {
    const target = action.previousElementSibling;
    if (!target) continue;
    target.addEventListener(action.getAttribute("event") || "click", async (event) => {
      event.preventDefault();
      const confirmation = action.getAttribute("confirmation");
      if (confirmation && !window.confirm(confirmation)) return;
      const kind = action.getAttribute("action") || "call", display = action.getAttribute("display") || "popup";
      try {
        const html = kind === "html" ? action.innerHTML : await call(JSON.parse(action.textContent || "{}"));
        if (display === "widget") {
          if (kind === "call") navigate(JSON.parse(action.textContent || "{}"));
          shown = ""; show(html); if (popup.classList.contains("open")) closePopup();
        } else {
          const body = document.createElement("div"); body.innerHTML = html; wire(body);
          popupBody.replaceChildren(...body.childNodes); popup.classList.add("open");
        }
        note.textContent = "";
      } catch (e) { note.textContent = "error: " + e.message; }
    });
  }
}
function closePopup() { popup.classList.remove("open"); popupBody.replaceChildren(); }
document.getElementById("popup-close").addEventListener("click", closePopup);
popup.addEventListener("click", (e) => { if (e.target === popup) closePopup(); });
async function refresh() {
  if (!token) { widget.textContent = "Open the URL the local runtime printed: it carries ?token=..."; return; }
  if (busy) return;
  busy = true;
  try {
    const asked = JSON.stringify(current), html = await call(current);
    if (asked === JSON.stringify(current)) show(html);  // not a view the person has left meanwhile
    note.textContent = "refreshed " + new Date().toLocaleTimeString() + " (every 3 s)";
  } catch (e) { note.textContent = "error: " + e.message; }
  finally { busy = false; }
}
refresh(); setInterval(refresh, 3000);
</script></body></html>
"""
