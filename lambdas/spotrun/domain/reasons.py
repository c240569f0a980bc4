"""Reasons people read: why a task failed, retried or was interrupted.

A reason is stored and served in full (the API, the timeline, `spotrun status` and `spotrun events`
show all of it). Where one must be bounded (a wire message's field, a line of a live terminal view),
`clip` cuts it at a word boundary and ends it with an ellipsis, so what is shown never ends in the
middle of a word and a cut is always visible. Reasons put the useful part first ("dmtcp:
dmtcp_launch not found ...; install ... or choose ..."), so a cut keeps what a reader needs.
"""

from __future__ import annotations

ELLIPSIS = "…"


def clip(text: str, limit: int) -> str:
    """`text` in at most `limit` characters: whole if it fits, else cut after the last whole word
    that fits (inside a word only when not even the first word fits), ending with "…"."""
    if limit < 1:
        raise ValueError("a clipped reason needs room for at least the ellipsis")
    if len(text) <= limit:
        return text
    room = text[: limit - len(ELLIPSIS)]
    if not text[len(room)].isspace():  # the cut falls inside a word: step back to its start
        boundary = max(room.rfind(" "), room.rfind("\n"), room.rfind("\t"))
        if boundary > 0:
            room = room[:boundary]
    return room.rstrip(" \t\n,;:") + ELLIPSIS
