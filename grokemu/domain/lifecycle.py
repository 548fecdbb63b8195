"""Lifecycles as data (house rule 5): each is a transition table {(status, event): next status}.

Status values are Datagrok's wire phrases (docs/datagrok-api.md §2.4); the enum names follow the
help pages' enum spelling (PENDING_VALIDATION, USER_STOPPED, ...).
"""
from __future__ import annotations

from enum import Enum

from grokemu.domain.errors import IllegalTransition


class ImageStatus(str, Enum):
    PENDING_VALIDATION = "pending validation"
    VALIDATING = "validating"
    READY = "ready"
    ERROR = "error"


class ContainerStatus(str, Enum):
    PENDING_START = "pending start"
    STARTING = "starting"
    CHECKING = "checking"
    STARTED = "started"
    PENDING_USER_STOP = "pending user stop"
    PENDING_SYSTEM_STOP = "pending system stop"
    STOPPING = "stopping"
    USER_STOPPED = "stopped by user"
    SYSTEM_STOPPED = "stopped by system"
    ERROR = "error"


_I = ImageStatus
IMAGE_TRANSITIONS: dict[tuple[ImageStatus, str], ImageStatus] = {
    (_I.PENDING_VALIDATION, "validate"): _I.VALIDATING,
    (_I.VALIDATING, "valid"): _I.READY,
    (_I.VALIDATING, "invalid"): _I.ERROR,
    # revalidate (GET /docker/images/<id>/revalidate) and a new publish put any image back to pending.
    **{(s, "revalidate"): _I.PENDING_VALIDATION for s in ImageStatus},
}

_C = ContainerStatus
_STOPPED = (_C.USER_STOPPED, _C.SYSTEM_STOPPED, _C.ERROR)
_RUNNING = (_C.PENDING_START, _C.STARTING, _C.CHECKING, _C.STARTED)
CONTAINER_TRANSITIONS: dict[tuple[ContainerStatus, str], ContainerStatus] = {
    # desiredInstances 1: pending start → starting → checking → started
    **{(s, "request_start"): _C.PENDING_START for s in _STOPPED},
    # a run request cancels a stop that has not begun
    (_C.PENDING_USER_STOP, "request_start"): _C.PENDING_START,
    (_C.PENDING_SYSTEM_STOP, "request_start"): _C.PENDING_START,
    # a new image for a running container: it is replaced (stopped, then started from the new image)
    (_C.STARTED, "replace"): _C.PENDING_START,
    (_C.CHECKING, "replace"): _C.PENDING_START,
    (_C.STARTING, "replace"): _C.PENDING_START,
    (_C.PENDING_START, "begin_start"): _C.STARTING,
    # the Docker daemon went away under a start: it waits as a pending start for the daemon to come back
    (_C.STARTING, "daemon_lost"): _C.PENDING_START,
    (_C.STARTING, "container_running"): _C.CHECKING,
    (_C.CHECKING, "app_ready"): _C.STARTED,
    # desiredInstances 0: pending user|system stop → stopping → stopped by user|system
    **{(s, "request_user_stop"): _C.PENDING_USER_STOP for s in _RUNNING + (_C.PENDING_SYSTEM_STOP,)},
    # the idle reaper only stops what is fully started; a start in flight is not idle
    (_C.STARTED, "request_system_stop"): _C.PENDING_SYSTEM_STOP,
    (_C.PENDING_USER_STOP, "begin_stop"): _C.STOPPING,
    (_C.PENDING_SYSTEM_STOP, "begin_stop"): _C.STOPPING,
    (_C.STOPPING, "stopped_by_user"): _C.USER_STOPPED,
    (_C.STOPPING, "stopped_by_system"): _C.SYSTEM_STOPPED,
    # reconcile after a restart: a running labelled container is re-adopted, a vanished one is stopped
    **{(s, "adopt_running"): _C.STARTED for s in ContainerStatus},
    **{(s, "adopt_checking"): _C.CHECKING for s in ContainerStatus},
    **{(s, "vanished"): _C.SYSTEM_STOPPED for s in ContainerStatus if s is not _C.ERROR},
    # error from anywhere: a failed step, a container that exited by itself, a state held too long
    **{(s, "fail"): _C.ERROR for s in ContainerStatus},
    **{(s, "timeout"): _C.ERROR for s in ContainerStatus if s not in (*_STOPPED, _C.STARTED)},
}

# States that are transient: held longer than container_status_timeout they become `error`.
CONTAINER_TRANSIENT = frozenset(s for (s, event) in CONTAINER_TRANSITIONS if event == "timeout")


def next_status(table: dict, status, event: str):
    try:
        return table[(status, event)]
    except KeyError:
        raise IllegalTransition(f"cannot {event.replace('_', ' ')} a container or image in status '{status.value}'") from None
