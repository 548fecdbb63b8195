"""Datagrok's entity-list query conventions (docs/datagrok-api.md §3.1-3.2), applied to wire maps.

- `text` is smart search: bare words match `name`/`friendlyName` case-insensitively (substring); `field = "x"` and
  `field != "x"` compare exactly; conditions join with `and`. The Dart client double-encodes it.
- `limit` and 1-based `page`; `order` is a comma list of wire keys, `!key` for descending.
"""
from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

from grokemu.domain.errors import BadRequest

# Every pattern here is matched at one position and cannot backtrack over its own input: parsing is linear in the
# length of `text` (a `\s*(.+?)\s*$` condition was quadratic on long whitespace runs).
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_OPERATORS = ("!=", "=", "contains", "starts with")
_SPACE = re.compile(r"\s+")
MAX_TEXT = 4096  # characters of `text`; a longer search is a mistake or an attack
MAX_ORDER = 1024  # characters of `order`


def decode_text(raw: str | None) -> str:
    """Flask decoded the query string once; the Dart client encoded `text` twice (`filter('name = "x"')` arrives as
    `name%2520%253D...`), so decode once more."""
    if not raw:
        return ""
    if len(raw) > 3 * MAX_TEXT:
        raise BadRequest(f"text is longer than {MAX_TEXT} characters")
    text = unquote(raw)
    if len(text) > MAX_TEXT:
        raise BadRequest(f"text is longer than {MAX_TEXT} characters")
    return text


def _unquote_value(value: str) -> str:
    try:
        parts = shlex.split(value)
    except ValueError:
        raise BadRequest(f"Unbalanced quotes in search value: {value}") from None
    return " ".join(parts)


def _condition(term: str) -> tuple[str, str, str] | None:
    """`field op value` → (field, op, raw value), or None for a bare-words term. Linear: one anchored match for the
    field, a fixed operator list, then str.strip."""
    term = term.strip()
    m = _FIELD.match(term)
    if not m:
        return None
    rest = term[m.end():].lstrip()
    for op in _OPERATORS:
        if rest[:len(op)].lower() == op:
            value = rest[len(op):].strip()
            return (m.group(0), op, value) if value else None
    return None


def split_terms(text: str) -> list[str]:
    """Conditions joined by ` and ` (any case, any whitespace around it), split in one linear pass."""
    terms: list[str] = []
    current: list[str] = []  # words and the whitespace between them, as given (a quoted value keeps its spaces)
    parts = _SPACE.split(text.strip())  # no capture group: words only; separators are found by position below
    pos = 0
    stripped = text.strip()
    for word in parts:
        start = stripped.find(word, pos) if word else pos
        gap = stripped[pos:start]
        pos = start + len(word)
        if word.lower() == "and" and current:
            terms.append("".join(current).strip())
            current = []
            continue
        current.append(gap + word)
    if current and "".join(current).strip():
        terms.append("".join(current).strip())
    return [t for t in terms if t]


def _matcher(term: str):
    parsed = _condition(term)
    if parsed:
        field, op, value = parsed[0], parsed[1], _unquote_value(parsed[2])

        def by_field(item: dict[str, Any]) -> bool:
            if field not in item:
                raise BadRequest(f"Unknown field in search: {field}")
            actual = "" if item[field] is None else str(item[field])
            if op == "=":
                return actual == value
            if op == "!=":
                return actual != value
            if op == "contains":
                return value.lower() in actual.lower()
            return actual.lower().startswith(value.lower())

        return by_field
    words = [w.lower() for w in _unquote_value(term).split()]

    def by_name(item: dict[str, Any]) -> bool:
        hay = f"{item.get('name') or ''} {item.get('friendlyName') or ''}".lower()
        return all(w in hay for w in words)

    return by_name


def _sort_key(value: Any):
    """Totally ordered whatever the value: None last; numbers, then strings (case-insensitive), then anything else
    (booleans, maps such as `package`, lists) by its JSON text."""
    if value is None:
        return (1, 0, 0)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, 0, value if value == value else 0)
    if isinstance(value, str):
        return (0, 1, value.lower())
    try:
        text = json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return (0, 2, text)


def apply_query(items: Iterable[dict[str, Any]], *, text: str = "", limit: str | None = None,
                page: str | None = None, order: str | None = None) -> list[dict[str, Any]]:
    result = list(items)
    if len(text) > MAX_TEXT:
        raise BadRequest(f"text is longer than {MAX_TEXT} characters")
    if order and len(order) > MAX_ORDER:
        raise BadRequest(f"order is longer than {MAX_ORDER} characters")
    for term in split_terms(text):
        match = _matcher(term)
        result = [item for item in result if match(item)]
    if order:
        for key in reversed([k.strip() for k in order.split(",") if k.strip()]):
            desc = key.startswith("!") or key.startswith("-")
            field = key.lstrip("!-")
            result.sort(key=lambda item: _sort_key(item.get(field)), reverse=desc)
    else:
        result.sort(key=lambda item: (item.get("name") or "", item.get("createdOn") or ""))
    try:
        lim = int(limit) if limit not in (None, "") else None
        pg = int(page) if page not in (None, "") else 1
    except ValueError:
        raise BadRequest(f"limit and page must be integers (got limit={limit!r}, page={page!r})") from None
    if lim is not None and lim < 0:
        raise BadRequest("limit must not be negative")
    if lim is not None:
        pg = max(pg, 1)  # the Dart client rewrites page 0 to 1: pages are 1-based
        result = result[(pg - 1) * lim: pg * lim]
    return result
