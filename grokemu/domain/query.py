"""Datagrok's entity-list query conventions (research/datagrok-docker-api.md §3.1-3.2), applied to wire maps.

- `text` is smart search: bare words match `name`/`friendlyName` case-insensitively (substring); `field = "x"` and
  `field != "x"` compare exactly; conditions join with `and`. The Dart client double-encodes it.
- `limit` and 1-based `page`; `order` is a comma list of wire keys, `!key` for descending.
"""
from __future__ import annotations

import re
import shlex
from typing import Any, Iterable
from urllib.parse import unquote

from grokemu.domain.errors import BadRequest

_CONDITION = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(=|!=|contains|starts with)\s*(.+?)\s*$', re.IGNORECASE)


def decode_text(raw: str | None) -> str:
    """Flask decoded the query string once; the Dart client encoded `text` twice (`filter('name = "x"')` arrives as
    `name%2520%253D...`), so decode once more."""
    return unquote(raw) if raw else ""


def _unquote_value(value: str) -> str:
    try:
        parts = shlex.split(value)
    except ValueError:
        raise BadRequest(f"Unbalanced quotes in search value: {value}") from None
    return " ".join(parts)


def _matcher(term: str):
    m = _CONDITION.match(term)
    if m:
        field, op, value = m.group(1), m.group(2).lower(), _unquote_value(m.group(3))

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
    return (value is None, str(value).lower() if isinstance(value, str) else value)


def apply_query(items: Iterable[dict[str, Any]], *, text: str = "", limit: str | None = None,
                page: str | None = None, order: str | None = None) -> list[dict[str, Any]]:
    result = list(items)
    terms = [t for t in re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE) if t] if text.strip() else []
    for term in terms:
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
