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


class ContainerEvent(str, Enum):
    """What happens to a container, the keys of CONTAINER_TRANSITIONS (services/spawner/ fires them). Str-valued:
    logs and messages name an event by its value, as before it was an enum."""

    REQUEST_START = "request_start"
    REPLACE = "replace"
    BEGIN_START = "begin_start"
    DAEMON_LOST = "daemon_lost"
    CONTAINER_RUNNING = "container_running"
    APP_READY = "app_ready"
    REQUEST_USER_STOP = "request_user_stop"
    REQUEST_SYSTEM_STOP = "request_system_stop"
    BEGIN_STOP = "begin_stop"
    STOPPED_BY_USER = "stopped_by_user"
    STOPPED_BY_SYSTEM = "stopped_by_system"
    ADOPT_RUNNING = "adopt_running"
    ADOPT_CHECKING = "adopt_checking"
    VANISHED = "vanished"
    FAIL = "fail"
    TIMEOUT = "timeout"


_I = ImageStatus
IMAGE_TRANSITIONS: dict[tuple[ImageStatus, str], ImageStatus] = {
    (_I.PENDING_VALIDATION, "validate"): _I.VALIDATING,
    (_I.VALIDATING, "valid"): _I.READY,
    (_I.VALIDATING, "invalid"): _I.ERROR,
    # revalidate (GET /docker/images/<id>/revalidate) and a new publish put any image back to pending.
    **{(s, "revalidate"): _I.PENDING_VALIDATION for s in ImageStatus},
}

_C = ContainerStatus
_E = ContainerEvent
_STOPPED = (_C.USER_STOPPED, _C.SYSTEM_STOPPED, _C.ERROR)
_RUNNING = (_C.PENDING_START, _C.STARTING, _C.CHECKING, _C.STARTED)
CONTAINER_TRANSITIONS: dict[tuple[ContainerStatus, ContainerEvent], ContainerStatus] = {
    # desiredInstances 1: pending start → starting → checking → started
    **{(s, _E.REQUEST_START): _C.PENDING_START for s in _STOPPED},
    # a run request cancels a stop that has not begun
    (_C.PENDING_USER_STOP, _E.REQUEST_START): _C.PENDING_START,
    (_C.PENDING_SYSTEM_STOP, _E.REQUEST_START): _C.PENDING_START,
    # a new image for a running container: it is replaced (stopped, then started from the new image)
    (_C.STARTED, _E.REPLACE): _C.PENDING_START,
    (_C.CHECKING, _E.REPLACE): _C.PENDING_START,
    (_C.STARTING, _E.REPLACE): _C.PENDING_START,
    (_C.PENDING_START, _E.BEGIN_START): _C.STARTING,
    # the Docker daemon went away under a start: it waits as a pending start for the daemon to come back
    (_C.STARTING, _E.DAEMON_LOST): _C.PENDING_START,
    (_C.STARTING, _E.CONTAINER_RUNNING): _C.CHECKING,
    (_C.CHECKING, _E.APP_READY): _C.STARTED,
    # desiredInstances 0: pending user|system stop → stopping → stopped by user|system
    **{(s, _E.REQUEST_USER_STOP): _C.PENDING_USER_STOP for s in _RUNNING + (_C.PENDING_SYSTEM_STOP,)},
    # the idle reaper only stops what is fully started; a start in flight is not idle
    (_C.STARTED, _E.REQUEST_SYSTEM_STOP): _C.PENDING_SYSTEM_STOP,
    (_C.PENDING_USER_STOP, _E.BEGIN_STOP): _C.STOPPING,
    (_C.PENDING_SYSTEM_STOP, _E.BEGIN_STOP): _C.STOPPING,
    (_C.STOPPING, _E.STOPPED_BY_USER): _C.USER_STOPPED,
    (_C.STOPPING, _E.STOPPED_BY_SYSTEM): _C.SYSTEM_STOPPED,
    # reconcile after a restart: a running labelled container is re-adopted, a vanished one is stopped
    **{(s, _E.ADOPT_RUNNING): _C.STARTED for s in ContainerStatus},
    **{(s, _E.ADOPT_CHECKING): _C.CHECKING for s in ContainerStatus},
    **{(s, _E.VANISHED): _C.SYSTEM_STOPPED for s in ContainerStatus if s is not _C.ERROR},
    # error from anywhere: a failed step, a container that exited by itself, a state held too long
    **{(s, _E.FAIL): _C.ERROR for s in ContainerStatus},
    **{(s, _E.TIMEOUT): _C.ERROR for s in ContainerStatus if s not in (*_STOPPED, _C.STARTED)},
}

# States that are transient: held longer than container_status_timeout they become `error`.
CONTAINER_TRANSIENT = frozenset(s for (s, event) in CONTAINER_TRANSITIONS if event is ContainerEvent.TIMEOUT)


def next_status(table: dict, status, event: str):
    try:
        return table[(status, event)]
    except KeyError:
        raise IllegalTransition(f"cannot {event.replace('_', ' ')} a container or image in status '{status.value}'") from None
