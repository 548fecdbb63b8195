"""A queue-function call as data: its states, the call socket's multiplexed frames, and the FuncCall JSON grokemu
sends the worker and returns to the client (docs/queue-functions.md §3, §4, §6).

The client's socket carries `"<n> <message>"` text frames and binary frames prefixed with `n` as 4 bytes, big
endian; the worker's pipe carries the same messages without `n`. So the relay between them only adds or strips `n`.
"""
from __future__ import annotations

import json
from enum import Enum
from typing import Any

from grokemu.domain.clock import iso
from grokemu.domain.functions import DockerFunc


class CallState(str, Enum):
    STARTING = "starting"  # resolving the function, starting its container
    QUEUED = "queued"  # published; no worker has accepted it yet
    RUNNING = "running"  # accepted
    CANCELING = "canceling"  # revoked while running: waiting for the worker's Canceled
    FINISHED = "finished"


class CallEvent(str, Enum):
    PUBLISHED = "published"
    ACCEPTED = "accepted"
    CANCEL = "cancel"
    FINISH = "finish"


CALL_TRANSITIONS: dict[tuple[CallState, CallEvent], CallState] = {
    (CallState.STARTING, CallEvent.PUBLISHED): CallState.QUEUED,
    (CallState.QUEUED, CallEvent.ACCEPTED): CallState.RUNNING,
    (CallState.RUNNING, CallEvent.ACCEPTED): CallState.RUNNING,  # the pipe and the AMQP `accepted`, in either order
    (CallState.CANCELING, CallEvent.ACCEPTED): CallState.CANCELING,
    (CallState.RUNNING, CallEvent.CANCEL): CallState.CANCELING,
    **{(s, CallEvent.FINISH): CallState.FINISHED for s in CallState if s is not CallState.FINISHED},
}


class FrameError(ValueError):
    """A frame on the call socket that is not `<n> <message>` (or a binary frame shorter than its 4-byte n)."""


def split_text(frame: str) -> tuple[int, str]:
    head, sep, message = frame.partition(" ")
    if not sep or not head.isdigit() or len(head) > 9:
        raise FrameError(f"expected '<n> <message>', got {frame[:60]!r}")
    return int(head), message


def split_binary(frame: bytes) -> tuple[int, memoryview]:
    if len(frame) < 4:
        raise FrameError("a binary frame shorter than its 4-byte call number")
    view = memoryview(frame)
    return int.from_bytes(view[:4], "big"), view[4:]


def text_frame(n: int, message: str) -> str:
    return f"{n} {message}"


def binary_frame(n: int, payload: bytes | memoryview) -> bytes:
    return n.to_bytes(4, "big") + bytes(payload)


def worker_request(call: dict[str, Any], func: DockerFunc, *, token: str, batch_size: int) -> dict[str, Any]:
    """The FuncCall the worker gets: the client's, with the function as registered (its params, outputs with
    isInput false), declared defaults for inputs sent as null, `aux.USER_API_KEY` (the caller's session, for tasks that call back) and `aux.batchSize`."""
    request = dict(call)
    client_func = call.get("func")
    if not isinstance(client_func, dict):
        client_func = {}
    request["func"] = {**func.to_wire(), **{k: v for k, v in client_func.items() if k not in ("params",)}}
    request["func"]["params"] = [p.to_wire() for p in func.params]
    request["parameterValues"] = values = dict(call.get("parameterValues") or {})
    # A value the caller left out takes its declared default (`#input: int b = 2`): the JS client sends null for it,
    # and the worker would pass None to the task.
    for p in func.params:
        if p.is_input and p.default is not None and values.get(p.name) is None:
            values[p.name] = p.default
    request["options"] = dict(call.get("options") or {})
    request["aux"] = {**(call.get("aux") or {}), "USER_API_KEY": token, "batchSize": batch_size}
    return request


def client_result(request: dict[str, Any], result: dict[str, Any] | None, *, status: str | None = None,
                  error: str | None = None, stack: str | None = None, now: float | None = None) -> dict[str, Any]:
    """The final `CALL` for the client: the worker's result (or one grokemu makes: Canceled, Error), always with
    `func.params` (without them the client resolves to null) and without the caller's USER_API_KEY."""
    out = dict(request)
    if result:
        out.update({k: v for k, v in result.items() if k not in ("func", "aux")})
        if isinstance(result.get("func"), dict) and result["func"].get("params"):
            out["func"] = result["func"]
    if status:
        out["status"] = status
    if error is not None:
        out["errorMessage"] = error
        out["errorStackTrace"] = stack
    out.setdefault("status", "Completed")
    out["aux"] = {k: v for k, v in (out.get("aux") or {}).items() if k != "USER_API_KEY"}
    if now is not None:
        out.setdefault("finished", iso(now))
    return out


def result_json(result: dict[str, Any]) -> str:
    return json.dumps(result, default=str)
