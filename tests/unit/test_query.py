from __future__ import annotations

import sys
from urllib.parse import quote

import pytest

from grokemu.domain import query
from grokemu.domain.errors import BadRequest
from grokemu.domain.query import apply_query, decode_text

ITEMS = [{"name": "bio", "friendlyName": "Bio", "status": "started", "createdOn": "2026-01-02"},
         {"name": "chem-chemprop", "friendlyName": "Chemprop", "status": "error", "createdOn": "2026-01-01"},
         {"name": "moltrack", "friendlyName": "MolTrack", "status": "started", "createdOn": "2026-01-03"}]


def names(items):
    return [i["name"] for i in items]


def test_double_encoded_text_as_the_dart_client_sends_it():
    # filter('name = "moltrack"') goes out as text=name%2520%253D%2520%2522moltrack%2522; Flask decodes once
    once = quote(quote('name = "moltrack"', safe=""), safe="")
    from urllib.parse import unquote
    assert names(apply_query(ITEMS, text=decode_text(unquote(once)))) == ["moltrack"]


def test_bare_words_case_insensitive_on_name_and_friendly_name():
    assert names(apply_query(ITEMS, text="CHEM")) == ["chem-chemprop"]
    assert names(apply_query(ITEMS, text="track")) == ["moltrack"]


def test_exact_and_not_equal_and_and():
    assert names(apply_query(ITEMS, text='name = "bio"')) == ["bio"]
    assert names(apply_query(ITEMS, text='name = "bi"')) == []
    assert names(apply_query(ITEMS, text='status = "started" and name != "bio"')) == ["moltrack"]


def test_unknown_field_is_a_clear_error():
    with pytest.raises(BadRequest, match="Unknown field"):
        apply_query(ITEMS, text='colour = "red"')


def test_limit_one_based_pages_and_order():
    assert names(apply_query(ITEMS, limit="2", page="1")) == ["bio", "chem-chemprop"]
    assert names(apply_query(ITEMS, limit="2", page="2")) == ["moltrack"]
    assert names(apply_query(ITEMS, limit="2", page="0")) == ["bio", "chem-chemprop"]  # page 0 → 1
    assert names(apply_query(ITEMS, order="!createdOn")) == ["moltrack", "bio", "chem-chemprop"]
    assert names(apply_query(ITEMS, order="status,!name")) == ["chem-chemprop", "moltrack", "bio"]
    with pytest.raises(BadRequest):
        apply_query(ITEMS, limit="x")


def test_order_by_a_map_or_mixed_values_is_total():
    items = [{"name": "b", "package": {"name": "z"}, "port": None}, {"name": "a", "package": {"name": "y"}, "port": 3},
             {"name": "c", "package": "x", "port": "80"}]
    assert names(apply_query(items, order="package")) == ["c", "a", "b"]  # strings, then maps by their JSON
    assert names(apply_query(items, order="!package")) == ["b", "a", "c"]
    assert names(apply_query(items, order="port")) == ["a", "c", "b"]  # numbers, strings, None last


def _steps(call) -> int:
    """Python bytecodes that `call()` runs inside grokemu/domain/query.py: a count of work that does not depend on
    the machine's speed (a BadRequest counts as done)."""
    count = 0

    def local(frame, event, arg):
        nonlocal count
        count += event == "opcode"
        return local

    def enter(frame, event, arg):
        if frame.f_code.co_filename != query.__file__:
            return None
        frame.f_trace_opcodes = True
        return local

    sys.settrace(enter)
    try:
        call()
    except BadRequest:
        pass
    finally:
        sys.settrace(None)
    return count


# texts of size ~n built to make a backtracking or rescanning parser quadratic (long whitespace runs, many terms)
HOSTILE = [
    lambda n: "name" + " " * n + "=", lambda n: "name =" + " " * n + "x", lambda n: "a" + " \t" * (n // 2) + "b",
    lambda n: 'name = "' + " " * n, lambda n: ("x" + " " * 40 + "AND" + " " * 40) * (n // 84),
]


@pytest.mark.parametrize("text", HOSTILE)
def test_parsing_is_linear(text):
    """Four times the text costs about four times the steps, not sixteen. (The module's regexes are anchored and
    cannot backtrack, domain/query.py says why; work inside the C regex engine is not counted here.)"""
    items = [{"name": f"n{i}", "friendlyName": ""} for i in range(10)]
    small = _steps(lambda: apply_query(items, text=text(1000)))
    large = _steps(lambda: apply_query(items, text=text(4000)[:4096]))
    assert large <= 5 * small + 1000, (small, large)


def test_text_length_is_capped():
    with pytest.raises(BadRequest, match="longer than 4096"):
        apply_query(ITEMS, text="x" * 4097)
    with pytest.raises(BadRequest, match="longer than 4096"):
        decode_text("%2541" * 2000)


def test_terms_split_on_and_keep_quoted_spacing():
    from grokemu.domain.query import split_terms

    assert split_terms('name = "a  b"  AND  foo and\tbar') == ['name = "a  b"', "foo", "bar"]
    assert split_terms("band and android") == ["band", "android"]
    assert names(apply_query(ITEMS, text='status  =  "started"  and  name != "bio"')) == ["moltrack"]
    assert names(apply_query(ITEMS, text="name contains chem")) == ["chem-chemprop"]
    assert names(apply_query(ITEMS, text="name starts with mol")) == ["moltrack"]
