"""The message broker queue functions go through: RabbitMQ, as Datagrok runs it (docs/queue-functions.md).

By default grokemu runs it itself, as a Docker container, the first time a queue container or a call needs it:
labelled like every container grokemu creates (so a restart re-adopts it and reset removes it), with credentials
made for this stand (never guest/guest, kept in `<data>/broker.json`, readable by the owner only), its AMQP port
published on 127.0.0.1 only. It runs on a bridge network of its own that only the queue workers join, so they
reach it at its address there and no other container on the machine reaches it at all. The `amqp_url` setting uses an existing broker instead (the compose stand's service).
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from grokemu.config import Settings
from grokemu.domain.errors import BrokerUnavailable, DockerUnavailable, GrokemuError
from grokemu.domain.labels import managed_labels, queue_network
from grokemu.domain.ports import Broker, CallEventHandler, Orchestrator, RunningContainer, RunSpec

log = logging.getLogger(__name__)

AMQP_PORT = 5672
ROLE_LABEL = "grokemu.role"
BROKER_ROLE = "broker"
MB = 1024 * 1024


@dataclass(frozen=True)
class BrokerEndpoint:
    url: str  # where grokemu connects
    host: str  # DATAGROK_AMPQ_HOST, as plugin containers reach it
    port: int
    user: str
    password: str
    tls: bool = False

    def container_env(self) -> dict[str, str]:
        """Datagrok's spelling (`AMPQ`), as the worker library reads it."""
        return {"DATAGROK_AMPQ_HOST": self.host, "DATAGROK_AMPQ_PORT": str(self.port),
                "DATAGROK_AMPQ_USER": self.user, "DATAGROK_AMPQ_PASSWORD": self.password,
                "DATAGROK_AMPQ_TLS": "true" if self.tls else "false"}


def endpoint_from_url(url: str, container_url: str = "") -> BrokerEndpoint:
    """An existing broker (`amqp_url`); `container_url` when containers reach it under another name."""
    parts = urlsplit(url)
    theirs = urlsplit(container_url or url)
    if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
        raise BrokerUnavailable(f"setting amqp_url: {url.split('@')[-1]!r} is not amqp://user:pass@host:port")
    return BrokerEndpoint(url=url, host=theirs.hostname or "", port=theirs.port or AMQP_PORT,
                          user=unquote(theirs.username or parts.username or "guest"),
                          password=unquote(theirs.password or parts.password or "guest"),
                          tls=theirs.scheme == "amqps")


class BrokerService:
    def __init__(self, settings: Settings, orchestrator: Orchestrator, connect: Callable[[str], Broker],
                 start_timeout: float = 90.0):
        self._settings = settings
        self._orchestrator = orchestrator
        self._connect = connect  # url → a Broker (adapters/amqp_broker.py)
        self._start_timeout = start_timeout
        self._lock = threading.Lock()
        self._endpoint: BrokerEndpoint | None = None
        self._broker: Broker | None = None
        self._handlers: list[CallEventHandler] = []
        self._creds_path = Path(settings.data_dir) / "broker.json"

    # -- who hears the workers ------------------------------------------------------------------------------------
    def subscribe(self, handler: CallEventHandler) -> None:
        """`handler(call id, type, body)` for every calls_fanout message (the call service, at construction)."""
        self._handlers.append(handler)

    def _dispatch(self, call_id: str, kind: str, body: Any) -> None:
        for handler in list(self._handlers):
            handler(call_id, kind, body)

    # -- the broker itself ----------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._broker is not None

    def broker(self) -> Broker:
        """The connected broker, started first when grokemu runs it; BrokerUnavailable when it cannot be had."""
        self.endpoint()
        assert self._broker is not None
        return self._broker

    def endpoint(self) -> BrokerEndpoint:
        with self._lock:
            if self._endpoint is None or self._broker is None:
                endpoint = endpoint_from_url(self._settings.amqp_url, self._settings.amqp_container_url) \
                    if self._settings.amqp_url else self._ensure_container()
                broker = self._connect(endpoint.url)
                broker.listen(self._dispatch)
                if not broker.wait_listening(self._start_timeout):
                    broker.close()
                    raise BrokerUnavailable(f"The message broker at {endpoint.host}:{endpoint.port} accepts no "
                                            f"consumer on calls_fanout")
                self._endpoint, self._broker = endpoint, broker
            return self._endpoint

    def consumers(self, queue: str, start: bool = False) -> int:
        """Workers consuming `queue`; 0 while the broker is not running (nothing consumes then). `start`: connect
        (and run the broker) first, as a worker re-adopted after a restart of grokemu needs."""
        broker = self._broker
        if broker is None and start:
            try:
                broker = self.broker()
            except BrokerUnavailable:
                return 0
        if broker is None:
            return 0
        try:
            return broker.consumers(queue)
        except BrokerUnavailable:
            return 0

    def labels(self) -> dict[str, str]:
        return {**managed_labels(self._settings.instance), ROLE_LABEL: BROKER_ROLE}

    def _container_name(self) -> str:
        instance = self._settings.instance
        return "grokemu-rabbitmq" if instance == "default" else f"grokemu-{instance}-rabbitmq"

    def _ensure_container(self) -> BrokerEndpoint:
        orch = self._orchestrator
        if not orch.ping():
            raise BrokerUnavailable("The message broker needs Docker (or the amqp_url setting): Docker is unreachable")
        creds = self._read_creds()
        running = None
        for found in orch.list_labelled(self.labels()):
            if running is None and found.state == "running" and creds:
                running = found  # re-adopted after a restart of grokemu
            else:
                orch.remove(found.id)
        if running is None:
            creds = {"user": "grokemu", "password": secrets.token_urlsafe(24)}
            self._write_creds(creds)
            spec = RunSpec(name=self._container_name(), image=self._settings.broker_image, container_port=AMQP_PORT,
                           labels=self.labels(), nano_cpus=1_000_000_000, mem_bytes=768 * MB, shm_bytes=64 * MB,
                           env={"RABBITMQ_DEFAULT_USER": creds["user"], "RABBITMQ_DEFAULT_PASS": creds["password"]},
                           network=queue_network(self._settings.instance))
            try:
                running = orch.run(spec)
            except (GrokemuError, DockerUnavailable):
                raise
            except Exception as e:  # the daemon refused it (no such image, a name clash it could not fix)
                raise BrokerUnavailable(f"The message broker container ({self._settings.broker_image}) could not "
                                        f"start: {e}") from None
            log.info("message broker %s started (%s)", spec.name, self._settings.broker_image)
        assert creds is not None
        return self._await_amqp(running, creds)

    def _await_amqp(self, running: RunningContainer, creds: dict[str, str]) -> BrokerEndpoint:
        """RabbitMQ takes seconds to boot: poll until it takes a login, or say why not."""
        deadline = time.monotonic() + self._start_timeout
        last_error = "not started"
        orch = self._orchestrator
        while True:
            current = orch.inspect(running.id)
            if current is None or current.state in ("exited", "dead"):
                logs = orch.logs(running.id, 20) if current else ""
                raise BrokerUnavailable(f"The message broker container exited: {logs[-1500:] or 'no logs'}")
            host, port = current.endpoint()
            if host and port:
                url = f"amqp://{quote(creds['user'], safe='')}:{quote(creds['password'], safe='')}@{host}:{port}//"
                probe = self._connect(url)
                try:
                    probe.consumers("grokemu.probe")  # a login and a channel: the broker serves
                    return BrokerEndpoint(url=url, host=current.app_ip or host, port=AMQP_PORT,
                                          user=creds["user"], password=creds["password"])
                except BrokerUnavailable as e:
                    last_error = e.message
                finally:
                    probe.close()
            if time.monotonic() >= deadline:
                raise BrokerUnavailable(f"The message broker did not accept logins within {self._start_timeout:g} "
                                        f"s: {last_error}")
            time.sleep(0.5)

    def _read_creds(self) -> dict[str, str] | None:
        try:
            data = json.loads(self._creds_path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and data.get("user") and data.get("password") else None

    def _write_creds(self, creds: dict[str, str]) -> None:
        self._creds_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._creds_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(creds, f)
        os.replace(tmp, self._creds_path)

    # -- admin ------------------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        endpoint = self._endpoint
        return {"running": self._broker is not None, "external": bool(self._settings.amqp_url),
                "host": endpoint.host if endpoint else None, "port": endpoint.port if endpoint else None}

    def close(self) -> None:
        with self._lock:
            if self._broker is not None:
                self._broker.close()
            self._broker = self._endpoint = None

    def reset(self) -> None:
        """After reset removed grokemu's containers (the broker's among them): new credentials next time."""
        self.close()
        try:
            self._creds_path.unlink()
        except OSError:
            pass
