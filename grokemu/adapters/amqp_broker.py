"""The Broker port on AMQP 0-9-1 through kombu, the messaging library the Celery workers themselves use.

Wire facts (docs/queue-functions.md): a call is published on the default exchange with the container's queue as
routing key, JSON body `{"args": [<FuncCall>], "kwargs": {}}` and headers `task`, `id`, `lang: py` (Celery reads the
task name from `headers["task"]`, the "hybrid" message Datagrok's server sends). Workers publish `accepted`,
`progress`, `log` and `call` on the non-durable fanout exchange `calls_fanout` with the call id as `correlation_id`
and the kind as `type`; grokemu binds an exclusive queue of its own to it. Cancellation is Celery's `revoke`
broadcast on the `celery.pidbox` fanout (kombu's Mailbox, so the exchange is declared exactly as workers do).

kombu connections are not thread-safe: publishing shares one connection under a lock; the consumer has its own.
"""
from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

from kombu import Connection, Exchange, Producer, Queue
from kombu.exceptions import KombuError, OperationalError
from kombu.pidbox import Mailbox

from grokemu.domain.errors import BrokerUnavailable
from grokemu.domain.ports import CallEventHandler

log = logging.getLogger(__name__)

CALLS_FANOUT = Exchange("calls_fanout", type="fanout", durable=False, auto_delete=False)
_ERRORS: tuple[type[BaseException], ...] = (OSError, KombuError, OperationalError, ConnectionError)
try:  # py-amqp's own errors (a refused login, a closed channel) are not all KombuErrors
    from amqp.exceptions import AMQPError

    _ERRORS = (*_ERRORS, AMQPError)
except ImportError:  # another kombu transport
    pass


class AmqpBroker:
    def __init__(self, url: str, connect_timeout: float = 5.0):
        self._url = url
        self._timeout = connect_timeout
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mailbox = Mailbox("celery", type="fanout", accept=["json"], serializer="json")
        self.listening = threading.Event()  # set while the calls_fanout consumer is bound

    def _connection(self) -> Connection:
        if self._conn is None:
            conn = Connection(self._url, connect_timeout=self._timeout, heartbeat=0)
            try:
                conn.ensure_connection(max_retries=1, timeout=self._timeout)
            except _ERRORS as e:
                conn.release()
                raise BrokerUnavailable(f"The message broker cannot be reached: {e}") from None
            self._conn = conn
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.release()
            except _ERRORS:
                pass
            self._conn = None

    def _with_connection(self, action):
        """Run `action(connection)` under the lock; a broken connection is replaced once."""
        with self._lock:
            for attempt in (1, 2):
                try:
                    return action(self._connection())
                except BrokerUnavailable:
                    raise
                except _ERRORS as e:
                    self._drop()
                    if attempt == 2:
                        raise BrokerUnavailable(f"The message broker failed: {e}") from None
        return None

    def publish_task(self, queue: str, task: str, call_id: str, call: dict[str, Any]) -> None:
        def publish(conn: Connection) -> None:
            Producer(conn.default_channel).publish(
                {"args": [call], "kwargs": {}}, exchange="", routing_key=queue, serializer="json",
                headers={"task": task, "id": call_id, "lang": "py"}, correlation_id=call_id,
                delivery_mode=2, retry=False)
        self._with_connection(publish)

    def revoke(self, call_id: str) -> None:
        def broadcast(conn: Connection) -> None:
            self._mailbox(conn)._broadcast("revoke", {"task_id": call_id, "terminate": True, "signal": "SIGTERM"})
        self._with_connection(broadcast)

    def consumers(self, queue: str) -> int:
        def count(conn: Connection) -> int:
            channel = conn.channel()
            try:
                return int(channel.queue_declare(queue=queue, passive=True).consumer_count)
            except _ERRORS as e:
                if getattr(e, "code", None) == 404 or "NOT_FOUND" in str(e):
                    return 0  # no worker declared it yet
                raise
            finally:
                try:
                    channel.close()
                except _ERRORS:
                    pass
        return self._with_connection(count) or 0

    # -- calls_fanout -------------------------------------------------------------------------------------------
    def listen(self, handler: CallEventHandler) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._consume, args=(handler,), name="grokemu-calls-fanout",
                                        daemon=True)
        self._thread.start()

    def _consume(self, handler: CallEventHandler) -> None:
        queue = Queue(f"grokemu.calls.{uuid.uuid4().hex[:12]}", CALLS_FANOUT, exclusive=True, auto_delete=True,
                      durable=False)

        def on_message(body: Any, message) -> None:
            props = message.properties or {}
            call_id, kind = props.get("correlation_id"), props.get("type")
            try:
                if isinstance(call_id, str) and isinstance(kind, str):
                    handler(call_id, kind, body)
            except Exception:  # a handler bug must not kill the consumer
                log.exception("calls_fanout message %s %s", kind, call_id)
            finally:
                message.ack()

        while not self._stop.is_set():
            try:
                with Connection(self._url, connect_timeout=self._timeout, heartbeat=0) as conn:
                    conn.ensure_connection(max_retries=1, timeout=self._timeout)
                    with conn.Consumer(queue, callbacks=[on_message], accept=["json"]):
                        self.listening.set()
                        while not self._stop.is_set():
                            try:
                                conn.drain_events(timeout=0.5)
                            except TimeoutError:
                                continue
            except _ERRORS as e:
                log.info("calls_fanout consumer: %s (reconnecting)", e)
            finally:
                self.listening.clear()
            self._stop.wait(1.0)

    def wait_listening(self, timeout: float) -> bool:
        return self.listening.wait(timeout)

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._drop()
        if self._thread is not None:
            self._thread.join(timeout=3)
            self._thread = None
