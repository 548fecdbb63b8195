from __future__ import annotations

from urllib.parse import quote

import pytest

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
