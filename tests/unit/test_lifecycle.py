"""Every edge of the lifecycle tables, and the illegal ones (docs/design.md house rule 5)."""
from __future__ import annotations

import pytest

from grokemu.domain.errors import IllegalTransition
from grokemu.domain.lifecycle import (CONTAINER_TRANSIENT, CONTAINER_TRANSITIONS, IMAGE_TRANSITIONS, ContainerEvent,
                                      ContainerStatus as S, ImageStatus as I, next_status)

CONTAINER_EVENTS = sorted({event for (_, event) in CONTAINER_TRANSITIONS})


def test_wire_strings_are_datagroks():
    assert [s.value for s in S] == ["pending start", "starting", "checking", "started", "pending user stop",
                                    "pending system stop", "stopping", "stopped by user", "stopped by system",
                                    "error"]
    assert [i.value for i in I] == ["pending validation", "validating", "ready", "error"]


@pytest.mark.parametrize("path", [
    [(I.PENDING_VALIDATION, "validate", I.VALIDATING), (I.VALIDATING, "valid", I.READY)],
    [(I.PENDING_VALIDATION, "validate", I.VALIDATING), (I.VALIDATING, "invalid", I.ERROR)],
])
def test_image_paths(path):
    for status, event, expected in path:
        assert next_status(IMAGE_TRANSITIONS, status, event) is expected


@pytest.mark.parametrize("status", list(I))
def test_revalidate_from_anywhere(status):
    assert next_status(IMAGE_TRANSITIONS, status, "revalidate") is I.PENDING_VALIDATION


@pytest.mark.parametrize("status, event", [(I.READY, "valid"), (I.PENDING_VALIDATION, "valid"),
                                           (I.ERROR, "validate"), (I.READY, "validate")])
def test_illegal_image_transitions(status, event):
    with pytest.raises(IllegalTransition):
        next_status(IMAGE_TRANSITIONS, status, event)


# The whole container table, written out: (from, event) -> to. Anything not listed must be illegal.
EXPECTED = {
    **{(s, "request_start"): S.PENDING_START for s in (S.USER_STOPPED, S.SYSTEM_STOPPED, S.ERROR,
                                                      S.PENDING_USER_STOP, S.PENDING_SYSTEM_STOP)},
    (S.PENDING_START, "begin_start"): S.STARTING,
    (S.STARTING, "daemon_lost"): S.PENDING_START,  # the daemon went away under the start
    (S.STARTING, "container_running"): S.CHECKING,
    (S.CHECKING, "app_ready"): S.STARTED,
    **{(s, "replace"): S.PENDING_START for s in (S.STARTED, S.CHECKING, S.STARTING)},
    **{(s, "request_user_stop"): S.PENDING_USER_STOP for s in (S.PENDING_START, S.STARTING, S.CHECKING, S.STARTED,
                                                              S.PENDING_SYSTEM_STOP)},
    (S.STARTED, "request_system_stop"): S.PENDING_SYSTEM_STOP,
    (S.PENDING_USER_STOP, "begin_stop"): S.STOPPING,
    (S.PENDING_SYSTEM_STOP, "begin_stop"): S.STOPPING,
    (S.STOPPING, "stopped_by_user"): S.USER_STOPPED,
    (S.STOPPING, "stopped_by_system"): S.SYSTEM_STOPPED,
    **{(s, "adopt_running"): S.STARTED for s in S},
    **{(s, "adopt_checking"): S.CHECKING for s in S},
    **{(s, "vanished"): S.SYSTEM_STOPPED for s in S if s is not S.ERROR},
    **{(s, "fail"): S.ERROR for s in S},
    **{(s, "timeout"): S.ERROR for s in (S.PENDING_START, S.STARTING, S.CHECKING, S.PENDING_USER_STOP,
                                         S.PENDING_SYSTEM_STOP, S.STOPPING)},
}


@pytest.mark.parametrize("status", list(S))
@pytest.mark.parametrize("event", CONTAINER_EVENTS)
def test_every_container_pair(status, event):
    expected = EXPECTED.get((status, event))
    if expected is None:
        with pytest.raises(IllegalTransition):
            next_status(CONTAINER_TRANSITIONS, status, event)
    else:
        assert next_status(CONTAINER_TRANSITIONS, status, event) is expected


def test_table_has_nothing_unexpected():
    assert CONTAINER_TRANSITIONS == EXPECTED


def test_container_events_are_one_enum_with_the_strings_of_before():
    # the table's keys are ContainerEvent members, and each is its old string (logs and messages show the value)
    assert all(type(event) is ContainerEvent for (_, event) in CONTAINER_TRANSITIONS)
    assert {e.value for e in ContainerEvent} == set(CONTAINER_EVENTS) == {
        "request_start", "replace", "begin_start", "daemon_lost", "container_running", "app_ready",
        "request_user_stop", "request_system_stop", "begin_stop", "stopped_by_user", "stopped_by_system",
        "adopt_running", "adopt_checking", "vanished", "fail", "timeout"}
    assert next_status(CONTAINER_TRANSITIONS, S.PENDING_START, ContainerEvent.BEGIN_START) is S.STARTING
    with pytest.raises(IllegalTransition, match="cannot begin stop a container or image in status 'started'"):
        next_status(CONTAINER_TRANSITIONS, S.STARTED, ContainerEvent.BEGIN_STOP)


def test_transient_states_are_the_ones_that_time_out():
    assert CONTAINER_TRANSIENT == {S.PENDING_START, S.STARTING, S.CHECKING, S.PENDING_USER_STOP,
                                   S.PENDING_SYSTEM_STOP, S.STOPPING}
