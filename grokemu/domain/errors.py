"""Domain errors. Each carries the HTTP status it means; web/errors.py is the one place that renders them
(Datagrok's ApiError JSON under /api, the OCI error envelope under /v2)."""
from __future__ import annotations


class GrokemuError(Exception):
    status = 500

    def __init__(self, message: str, inner: str = ""):
        super().__init__(message)
        self.message = message
        self.inner = inner


class BadRequest(GrokemuError):
    status = 400


class Unauthorized(GrokemuError):
    status = 401


class Forbidden(GrokemuError):
    status = 403


class NotFound(GrokemuError):
    status = 404


class Conflict(GrokemuError):
    status = 409


class LengthRequired(GrokemuError):
    """A body without Content-Length where grokemu must know its size before reading it."""

    status = 411


class PayloadTooLarge(GrokemuError):
    """A body, a package ZIP or one of its entries is over a configured limit (the message names the setting)."""

    status = 413


class Busy(GrokemuError):
    """A server-wide cap is reached (open WebSockets, handed-off streams): try again later."""

    status = 503


class RequestRefused(GrokemuError):
    """A request the server's HTTP parser refused before anything else saw it (a head over the limit: 431, a
    malformed request line: 400, a body over max_request_body_size: 413): `status` and the status line's reason
    phrase are the parser's (waitress's, as its answers always read)."""

    def __init__(self, status: int, message: str, phrase: str | None = None):
        super().__init__(message)
        self.status = status
        self.phrase = phrase


class DiskFull(GrokemuError):
    """The disk under the data directory is full (ENOSPC/EDQUOT, or SQLite's "database or disk is full"): 507, and
    the write that hit it leaves nothing behind (each writer cleans up its temporary files)."""

    status = 507


def disk_full(e: BaseException, data_dir: object = "") -> DiskFull | None:
    """The DiskFull that `e` means, or None when it is something else."""
    import errno
    import sqlite3

    full = (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)) or \
        (isinstance(e, sqlite3.OperationalError) and "disk is full" in str(e))
    if not full:
        return None
    where = f" ({data_dir})" if data_dir else ""
    return DiskFull(f"Insufficient storage: the disk of grokemu's data directory{where} is full; nothing of this "
                    f"request was kept. Free some space and try again",
                    # the system's words, without the file name (a path of this machine)
                    (e.strerror or "") if isinstance(e, OSError) else str(e))


class GatewayTimeout(GrokemuError):
    status = 504


class DockerUnavailable(GrokemuError):
    """The Docker daemon cannot be reached (gone, restarting, not answering in time): everything that needs it
    answers 503 at once, the rest keeps working (docs/faults.md §4)."""

    status = 503


# what health, the dashboard and a refused start say while the daemon is gone
DOCKER_UNREACHABLE = "Docker unreachable: containers cannot be built, run or reached until the daemon is back"


class BrokerUnavailable(GrokemuError):
    """The message broker (RabbitMQ) cannot be started or reached: queue functions cannot be called."""

    status = 503


class IllegalTransition(GrokemuError):
    """A lifecycle table has no edge for this (status, event); the caller asked for something the state forbids."""

    status = 400


class ContainerStartFailed(GrokemuError):
    """The orchestrator could not start a container (the reason is in the message)."""

    status = 500


NO_GPU_MESSAGE = ("The container asks for a GPU (container.json 'gpu') but this Docker host has no GPU runtime; "
                  "start grokemu with --ignore-gpu to run it without one")
