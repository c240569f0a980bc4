"""What is wrong with a job spec or a request, in words a person can act on: the field, the limit,
and the value given, never the validator's internals.

pydantic names the branches of a union in an error's location (`command.str`,
`checkpoint.interval.function-after[functools.partial(<function ...>, le=86400)(), ...]`) and
reports one error per branch; here each branch tag is dropped from the field's name, the branches'
errors become one problem (the branch that got furthest, or "a text or a list" when none did), and
each message says the limit and what was given. A value is shown only when it is short and not a
task's parameter or a tag (which may hold secrets), and always as JSON text with <, > and & escaped
too, so neither a control character nor a bidirectional override reaches a terminal, nor markup a page.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

MAX_PROBLEMS_REPORTED = 50
SHOWN_VALUE_CHARS = 40
# Fields that are unions: the part of an error's location after them may name a branch ('str', 'int').
UNION_FIELDS = frozenset({"command", "interval"})
BRANCH_NAMES = frozenset({"str", "int", "float", "bool", "list", "dict", "none", "constrained-str", "constrained-int"})
# Values never repeated back: a task's environment and the tags may hold secrets.
PRIVATE_FIELDS = frozenset({"parameters", "tags"})
# Errors saying the value is of another kind than a branch wants: what that branch is.
KIND_ERRORS = {"string_type": "text", "list_type": "a list", "int_type": "a whole number", "int_parsing": "a whole number",
               "float_type": "a number", "float_parsing": "a number", "bool_type": "true or false",
               "bool_parsing": "true or false", "dict_type": "a mapping", "model_type": "a mapping",
               "model_attributes_type": "a mapping", "int_from_float": "a whole number", "none_required": "null"}
# What the spec's patterns allow, said in words.
PATTERNS = {
    r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$": "letters, digits, '.', '_' and '-', starting with a letter or digit, "
                                           "at most 128 characters",
    r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/[^\x00-\x1f]{1,1024}$": "an S3 URI like s3://bucket/key "
                                                                     "(a local path is uploaded by the CLI)",
    r"^[^/\x00-\x1f][^\x00-\x1f]*$": "a path relative to the task's work directory, without control characters",
    r"^[a-z0-9-]+(\.[a-z0-9*-]+)?$": "an instance type like c6i.large or a family like c6i",
    r"^[A-Za-z0-9_.:/=+@ -]{1,128}$": "letters, digits, spaces and _.:/=+@-, at most 128 characters",
    r"^[^\x00-\x1f]*$": "text without control characters",
}


_TAG = re.compile(r"^[a-z][a-z-]*\[.*\]$", re.DOTALL)  # function-after[...], literal['auto'], list[...]


def _clean(location: Sequence[Any]) -> tuple[list[str], int | None]:
    """The field's path without pydantic's branch tags; and where a union's branch tag was (if one was)."""
    parts: list[str] = []
    union_at = None
    for part in location:
        text = str(part)
        if text == "[key]":  # the error is in a mapping's key: the field is the mapping's entry
            continue
        if _TAG.match(text) or (parts and parts[-1] in UNION_FIELDS and text in BRANCH_NAMES):
            union_at = len(parts)
            continue
        parts.append(text)
    return parts, union_at


def _shown(value: Any, field: list[str]) -> str:
    if any(part in PRIVATE_FIELDS for part in field) or isinstance(value, dict | list):
        return ""
    if isinstance(value, str) and len(value) > SHOWN_VALUE_CHARS:
        return f"a text of {len(value)} characters"
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError):
        return ""
    # Nor can it become markup where an error is shown (a page, a console widget).
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _words(item: Mapping[str, Any]) -> str:
    """The rule the value broke, with its limit."""
    kind, ctx, message = item.get("type", ""), item.get("ctx") or {}, str(item.get("msg", "invalid"))
    if kind in KIND_ERRORS:
        return f"must be {KIND_ERRORS[kind]}"
    limits = {"greater_than_equal": ("at least", "ge"), "greater_than": ("more than", "gt"),
              "less_than_equal": ("at most", "le"), "less_than": ("less than", "lt")}
    if kind in limits and limits[kind][1] in ctx:
        words, key = limits[kind]
        return f"must be {words} {ctx[key]}"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "string_too_short":
        return "must not be empty" if ctx.get("min_length") == 1 else f"must be at least {ctx.get('min_length')} characters"
    if kind == "too_long" and isinstance(item.get("input"), str):
        return f"must be at most {ctx.get('max_length')} characters (it has {len(item['input'])})"
    if kind == "too_long":
        return f"must have at most {ctx.get('max_length')} entries, it has {ctx.get('actual_length')}"
    if kind == "too_short":
        return f"must have at least {ctx.get('min_length')} entr{'y' if ctx.get('min_length') == 1 else 'ies'}"
    if kind == "string_pattern_mismatch":
        return f"must be {PATTERNS.get(str(ctx.get('pattern')), 'in the form this field allows')}"
    if kind == "literal_error":
        return f"must be {ctx.get('expected')}"
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a field here (a typo?)"
    if kind == "value_error":
        return message.removeprefix("Value error, ")
    if message.startswith("Input should "):  # pydantic's wording of everything else
        return "must " + message.removeprefix("Input should ")
    return message


def _problem(item: Mapping[str, Any], field: list[str], words: str | None = None) -> str:
    words = words or _words(item)
    if item.get("type") in ("missing", "extra_forbidden") or "input" not in item:
        return words
    shown = _shown(item["input"], field)
    length = ""
    if item.get("type") == "string_too_long" and isinstance(item["input"], str):
        length = f" (it has {len(item['input'])})"
    if item.get("type") == "too_long" and isinstance(item["input"], str):
        return words  # its length is said already
    return f"{words}{length}, got {shown}" if shown and not length else words + length


def problems_of(errors: Sequence[Mapping[str, Any]], whole: str = "(body)") -> list[dict[str, str]]:
    """pydantic's errors as `{field, problem}` pairs; an error of the whole value is named `whole`.

    The first MAX_PROBLEMS_REPORTED, then one line counting the rest: 100,000 wrong parameter sets
    must not make a megabyte-long error.
    """
    cleaned = [(item, *_clean(item.get("loc", ()))) for item in errors]
    # A union whose branch matched the value's kind and failed deeper: the other branches' kind errors go.
    deeper = {tuple(field[:at]) for _, field, at in cleaned if at is not None and len(field) > at}
    grouped: dict[tuple[str, ...], list[tuple[Mapping[str, Any], list[str], int | None]]] = {}
    for item, field, at in cleaned:
        if at is not None and len(field) == at and tuple(field) in deeper and item.get("type") in KIND_ERRORS:
            continue
        key = tuple(field) if at is not None else (*field, str(len(grouped)))  # only branches merge
        grouped.setdefault(key, []).append((item, field, at))
    problems = []
    for group in grouped.values():
        item, field, _ = group[0]
        if len(group) == 1:
            problem = _problem(item, field)
        else:
            constraints = [g for g in group if g[0].get("type") not in (*KIND_ERRORS, "literal_error")]
            literals = [str((g[0].get("ctx") or {}).get("expected")) for g in group if g[0].get("type") == "literal_error"]
            if constraints:  # the branch of the value's kind: its rule, and the literal the others take
                item = constraints[0][0]
                words = _words(item)
                if literals:
                    words = (words.replace("must be ", f"must be {literals[0]} or ", 1) if words.startswith("must be ")
                             else f"{words} (or {literals[0]})")
                problem = _problem(item, field, words)
            else:
                kinds = [KIND_ERRORS.get(str(g[0].get("type")), literals[0] if literals else "valid") for g in group]
                shown = _shown(item.get("input"), field) if "input" in item else ""
                problem = f"must be {' or '.join(dict.fromkeys(kinds))}" + (f", got {shown}" if shown else "")
        problems.append({"field": ".".join(field) or whole, "problem": problem})
    reported = problems[:MAX_PROBLEMS_REPORTED]
    if len(problems) > MAX_PROBLEMS_REPORTED:
        reported.append({"field": "(more)", "problem": f"{len(problems) - MAX_PROBLEMS_REPORTED} more problems like these"})
    return reported
