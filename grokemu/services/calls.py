"""Queue-function calls: what Datagrok's server does between `grok.functions.call('Pkg:func')` and a Celery worker.

One client socket (`/api/log/funcs/call/stream`, web/functions.py) is one `CallSession`; each `n CALL <FuncCall>` on
it is one `Call`, dispatched on a thread of its own: resolve the function, start its container when it is on_demand
and stopped (ready = its worker consumes its queue), publish the Celery message, then wait for `accepted` within
`task_pickup_timeout`. The worker reports on the `calls_fanout` exchange (accepted, progress, log, call) and, for
calls with dataframe/blob/file parameters, over the pipe it opens to grokemu (`/<call id>`): each frame is relayed
to the other side as it arrives, so a parameter streams through in chunks, never held whole.

A call always ends with exactly one `n CALL` to the client: the worker's result, or one grokemu makes (Canceled,
Error with the reason). Deadlines (pickup, cancel grace, a container that stopped under a call) are checked by
`tick`, on the scheduler, against the injected clock.
"""
from __future__ import annotations

import hmac
import json
import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from grokemu.config import Settings
from grokemu.domain.calls import (
    CALL_TRANSITIONS,
    CallEvent,
    CallState,
    FrameError,
    binary_frame,
    client_result,
    result_json,
    split_binary,
    split_text,
    text_frame,
    worker_request,
)
from grokemu.domain.clock import Clock
from grokemu.domain.errors import Conflict, Forbidden, GrokemuError, NotFound, Unauthorized
from grokemu.domain.functions import DockerFunc
from grokemu.domain.lifecycle import ContainerStatus
from grokemu.domain.ports import FrameChannel, Store
from grokemu.services.activity import ActivityTracker
from grokemu.services.functions import FunctionRegistry
from grokemu.services.run_specs import RunSpecs

if TYPE_CHECKING:
    from grokemu.services.broker import BrokerService
    from grokemu.services.inspector import RequestInspector
    from grokemu.services.spawner import Spawner

log = logging.getLogger(__name__)
PIPE_TO_CLIENT_ACKS = ("PART OK", "PART_OK")


@dataclass
class Call:
    id: str
    n: int
    func: DockerFunc
    login: str
    client: FrameChannel
    request: dict[str, Any]
    started: float
    state: CallState = CallState.STARTING
    pipe: FrameChannel | None = None
    canceled: bool = False
    deadline: float | None = None  # pickup, then cancel grace
    lock: threading.Lock = field(default_factory=threading.Lock)
    held: bool = False  # the container's activity hold (idle shutdown waits for it)

    @property
    def container_id(self) -> str:
        return self.func.container_id

    def summary(self, status: str, now: float) -> dict[str, Any]:
        return {"id": self.id, "function": self.func.nq_name, "status": status, "login": self.login,
                "started": self.started, "durationMs": round((now - self.started) * 1000, 1)}


class CallSession:
    """One client socket: its calls by their `n`."""

    def __init__(self, service: CallService, client: FrameChannel, login: str, token: str):
        self._service = service
        self._client = client
        self.login = login
        self.token = token
        self.calls: dict[int, Call] = {}

    def frame(self, data: str | bytes) -> None:
        """One frame from the client; a malformed one ends what it names with an Error, never the server."""
        try:
            if isinstance(data, str):
                n, message = split_text(data)
            else:
                n, payload = split_binary(data)
                self._service.client_binary(self.calls.get(n), payload)
                return
        except FrameError as e:
            self._client.send_text(f"ERROR {e}")
            return
        verb = message.split(" ", 1)[0]
        if verb == "CALL":
            if n in self.calls and self.calls[n].state is not CallState.FINISHED:
                return  # the client re-sends CALL after a reconnect: the call is already on its way
            call = self._service.start(self, n, message[5:])
            if call is not None:
                self.calls[n] = call
        elif verb == "CANCEL" and message.strip() == "CANCEL":
            if n in self.calls:
                self._service.cancel(self.calls[n])
        elif verb == "DONE":
            self.calls.pop(n, None)
        else:
            self._service.client_text(self.calls.get(n), message)

    def closed(self) -> None:
        """The client went away: its unfinished calls are canceled (the worker's time is not spent for no one)."""
        for call in list(self.calls.values()):
            self._service.cancel(call, quiet=True)


class CallService:
    def __init__(self, settings: Settings, store: Store, clock: Clock, functions: FunctionRegistry,
                 spawner: Spawner, broker: BrokerService, activity: ActivityTracker, run_specs: RunSpecs,
                 background: bool = True, inspector: RequestInspector | None = None):
        self._inspector = inspector  # finished calls are entries of kind `call` (docs/inspector.md)
        self._settings = settings
        self._store = store
        self._clock = clock
        self._functions = functions
        self._spawner = spawner
        self._broker = broker
        self._activity = activity
        self._run_specs = run_specs
        self._background = background
        self._calls: dict[str, Call] = {}
        self._lock = threading.Lock()
        self._history: dict[str, deque] = {}
        broker.subscribe(self._on_event)

    # -- sessions and calls -------------------------------------------------------------------------------------
    def session(self, client: FrameChannel, login: str, token: str) -> CallSession:
        return CallSession(self, client, login, token)

    def start(self, session: CallSession, n: int, body: str) -> Call | None:
        try:
            request = json.loads(body)
        except (ValueError, RecursionError) as e:  # RecursionError: nesting deeper than Python's stack
            self._refuse(session, n, {}, f"The CALL frame holds no FuncCall JSON: {e}")
            return None
        if not isinstance(request, dict) or not isinstance(request.get("id"), str) or not request["id"] \
                or len(request["id"]) > 100:
            self._refuse(session, n, request if isinstance(request, dict) else {}, "The FuncCall has no 'id'")
            return None
        func = self._functions.resolve(request.get("func"))
        if func is None:
            named = request.get("func")
            label = f"{named.get('namespace', '')}{named.get('name', '')}" if isinstance(named, dict) else named
            self._refuse(session, n, request, f"Unknown function {str(label)[:200]}: no published container "
                                              f"declares it")
            return None
        with self._lock:
            if request["id"] in self._calls:
                self._refuse(session, n, request, f"Call {request['id']} is already running")
                return None
            call = Call(id=request["id"], n=n, func=func, login=session.login, client=session._client,
                        request=worker_request(request, func, token=session.token,
                                               batch_size=self._settings.call_batch_size),
                        started=self._clock.now())
            self._calls[call.id] = call
        self._activity.changed("container")  # the Dockers page lists running calls
        if self._background:
            threading.Thread(target=self._dispatch, args=(call,), name=f"grokemu-call-{call.id[:8]}",
                             daemon=True).start()
        else:
            self._dispatch(call)
        return call

    def _refuse(self, session: CallSession, n: int, request: dict, message: str) -> None:
        log.info("call refused: %s", message)
        session._client.send_text(text_frame(n, "CALL " + result_json(
            client_result(request, None, status="Error", error=message, now=self._clock.now()))))

    def _dispatch(self, call: Call) -> None:
        try:
            self._spawner.ensure_ready(call.container_id, call.login, self._settings.container_status_timeout)
            broker = self._broker.broker()
            with call.lock:
                if call.state is not CallState.STARTING:  # canceled while its container started
                    return
                self._activity.begin_hold(call.container_id)
                call.held = True
                broker.publish_task(call.func.task_queue, call.func.task, call.id, call.request)
                self._move(call, CallEvent.PUBLISHED)
                call.deadline = self._clock.now() + self._settings.task_pickup_timeout
            log.info("call %s: %s published to %s", call.id, call.func.nq_name, call.func.task_queue)
        except GrokemuError as e:
            self.finish(call, None, status="Error", error=f"{call.func.nq_name}: {e.message}")
        except Exception as e:  # a bug: the caller still gets an answer
            log.exception("dispatching call %s", call.id)
            self.finish(call, None, status="Error", error=f"{call.func.nq_name}: grokemu failed: {e}")

    @staticmethod
    def _move(call: Call, event: CallEvent) -> bool:
        nxt = CALL_TRANSITIONS.get((call.state, event))
        if nxt is None:
            return False
        call.state = nxt
        return True

    def finish(self, call: Call, result: dict | None, *, status: str | None = None, error: str | None = None,
               stack: str | None = None) -> None:
        """The one end of a call: its `n CALL` to the client, once."""
        with call.lock:
            if call.state is CallState.FINISHED:
                return
            self._move(call, CallEvent.FINISH)
            if call.held:
                self._activity.end_hold(call.container_id)
                call.held = False
        now = self._clock.now()
        self._activity.touch(call.container_id)
        out = client_result(call.request, result, status=status, error=error, stack=stack, now=now)
        with self._lock:
            self._calls.pop(call.id, None)
            kept = self._history.setdefault(call.container_id, deque(maxlen=self._settings.calls_kept))
            kept.appendleft(call.summary(str(out.get("status")), now))
        self._activity.changed("container")
        if self._inspector is not None:
            self._inspector.call(call.container_id, call.func.nq_name, call.started, str(out.get("status")),
                                 round((now - call.started) * 1000, 1),
                                 request=call.request.get("parameterValues"),
                                 response=out.get("parameterValues") if error is None else None,
                                 # a task's own failure comes in the worker's result, grokemu's in `error`
                                 error=error or out.get("errorMessage"),
                                 token=(call.request.get("aux") or {}).get("USER_API_KEY"))
        try:
            call.client.send_text(text_frame(call.n, "CALL " + result_json(out)))
        except OSError:
            log.info("call %s finished after its client left", call.id)
        log.info("call %s: %s %s", call.id, call.func.nq_name, out.get("status"))

    def cancel(self, call: Call, quiet: bool = False) -> None:
        """`n CANCEL`: revoke the task (terminate); the client always gets a Canceled CALL, also when the task never
        started (the worker says nothing for a task revoked before it ran)."""
        with call.lock:
            if call.state is CallState.FINISHED:
                return
            call.canceled = True
            running = call.state in (CallState.RUNNING, CallState.CANCELING)
            if running:
                self._move(call, CallEvent.CANCEL)
                call.deadline = self._clock.now() + self._settings.cancel_grace
            published = call.state is not CallState.STARTING
        if published:
            try:
                self._broker.broker().revoke(call.id)
            except GrokemuError as e:
                log.info("revoke of %s: %s", call.id, e.message)
        if not running:
            self.finish(call, None, status="Canceled")
        elif quiet:
            log.info("call %s: its client left; revoked", call.id)

    # -- what the worker says (calls_fanout) ----------------------------------------------------------------------
    def _on_event(self, call_id: str, kind: str, body: Any) -> None:
        call = self._calls.get(call_id)
        if call is None:
            return
        self._activity.touch(call.container_id)
        if kind == "accepted":
            with call.lock:
                self._move(call, CallEvent.ACCEPTED)
                if call.state is CallState.RUNNING:
                    call.deadline = None
                again = call.canceled
            if again:  # canceled before the worker took it: revoke reaches the worker now
                self._broker.broker().revoke(call.id)
        elif kind in ("progress", "log"):
            self._send_client(call, f"{kind.upper()} {json.dumps(body, default=str)}")
        elif kind == "call" and isinstance(body, dict):
            self.finish(call, body)

    def _send_client(self, call: Call, message: str) -> None:
        try:
            call.client.send_text(text_frame(call.n, message))
        except OSError:
            pass

    # -- the pipe -------------------------------------------------------------------------------------------------
    def join_pipe(self, call_id: str, key: str) -> Call:
        """A worker opening `/<call id>` with its DATAGROK_PIPE_KEY: the call, when it was sent to that container."""
        if not key or key == "None":
            raise Unauthorized("The pipe needs the container's DATAGROK_PIPE_KEY in 'authorization'")
        digest = self._run_specs.pipe_key_hash(key)
        owner = next((c for c in self._store.list_containers()
                      if c.pipe_key_hash and hmac.compare_digest(c.pipe_key_hash, digest)), None)
        if owner is None:
            raise Unauthorized("Unknown or revoked pipe key")
        call = self._calls.get(call_id)
        if call is None:
            raise NotFound(f"No running call {call_id[:100]}")
        if call.container_id != owner.id:
            raise Forbidden(f"Call {call_id} was not sent to container {owner.name}")
        if call.pipe is not None:
            raise Conflict(f"Call {call_id} has its pipe already")
        return call

    def attach_pipe(self, call: Call, pipe: FrameChannel) -> None:
        with call.lock:
            call.pipe = pipe
            self._move(call, CallEvent.ACCEPTED)  # the worker runs it: its `accepted` may still be on the way
            if call.state is CallState.RUNNING:
                call.deadline = None

    def pipe_frame(self, call: Call, data: str | bytes) -> None:
        """Worker → client: add the client's `n`. Acks for the client's uploads arrive spelled either way."""
        if call.state is CallState.FINISHED:
            return
        self._activity.touch(call.container_id)
        if isinstance(data, (bytes, bytearray)):
            call.client.send_binary(binary_frame(call.n, data))
            return
        if data in PIPE_TO_CLIENT_ACKS:
            call.client.send_text(text_frame(call.n, "PART OK"))
        elif data.startswith("CALL "):
            try:
                result = json.loads(data[5:])
            except (ValueError, RecursionError):
                self.finish(call, None, status="Error", error="The worker sent a CALL that is not JSON")
                return
            self.finish(call, result if isinstance(result, dict) else None)
        else:
            call.client.send_text(text_frame(call.n, data))

    def pipe_closed(self, call: Call) -> None:
        with call.lock:
            call.pipe = None

    def client_text(self, call: Call | None, message: str) -> None:
        """Client → worker, during a parameter upload or a download's acks: strip `n`."""
        if call is None or call.pipe is None:
            return
        if message.startswith("PART ERROR"):
            message = "ERROR"  # the worker library aborts a download on ERROR
        call.pipe.send_text(message)

    def client_binary(self, call: Call | None, payload: memoryview) -> None:
        if call is None or call.pipe is None:
            return
        call.pipe.send_binary(bytes(payload))

    # -- deadlines, the page --------------------------------------------------------------------------------------
    def tick(self) -> None:
        now = self._clock.now()
        for call in list(self._calls.values()):
            if call.deadline is not None and now >= call.deadline:
                if call.state is CallState.QUEUED:
                    try:
                        self._broker.broker().revoke(call.id)
                    except GrokemuError:
                        pass
                    self.finish(call, None, status="Error", error=(
                        f"{call.func.nq_name}: no worker picked the task up within "
                        f"{self._settings.task_pickup_timeout:g} s (setting task_pickup_timeout)"))
                elif call.state is CallState.CANCELING:
                    self.finish(call, None, status="Canceled")
                continue
            if call.state in (CallState.QUEUED, CallState.RUNNING, CallState.CANCELING):
                c = self._store.get_container(call.container_id)
                if c is None or c.status is not ContainerStatus.STARTED:
                    reason = f"its container {'was removed' if c is None else 'is ' + c.status.value}"
                    if c is not None and c.error:
                        reason += f": {c.error}"
                    self.finish(call, None, status="Error", error=f"{call.func.nq_name}: {reason}")

    def running(self, container_id: str | None = None) -> list[dict[str, Any]]:
        now = self._clock.now()
        return [c.summary(c.state.value, now) for c in list(self._calls.values())
                if container_id is None or c.container_id == container_id]

    def recent(self, container_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._history.get(container_id, ()))

    def reset(self) -> None:
        for call in list(self._calls.values()):
            self.finish(call, None, status="Error", error="grokemu was reset")
        with self._lock:
            self._history.clear()
