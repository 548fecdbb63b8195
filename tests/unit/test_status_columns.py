"""`grokemu status`'s cells (grokemu/cli.py): the age in the SINCE column and the aligned table."""
from __future__ import annotations

import pytest

from grokemu.cli import ago, table


@pytest.mark.parametrize("seconds, shown", [
    (0, "0s ago"), (59.9, "59s ago"), (60, "1m ago"), (3599, "59m ago"), (3600, "1h ago"),
    (86399, "23h ago"), (86400, "1d ago"), (40 * 86400 + 5, "40d ago"),
    (-3, "0s ago"),  # the server's clock a little behind the record: now, not a negative age
])
def test_an_age_is_its_largest_whole_unit(seconds, shown):
    assert ago(seconds) == shown


def test_columns_are_as_wide_as_their_widest_cell():
    assert table(["NAME", "SINCE"], [["a-long-name", "2m ago"], ["b", ""]]).splitlines() == [
        "NAME         SINCE",
        "a-long-name  2m ago",
        "b",  # nothing trails a row
    ]
