"""The connection to the Docker daemon (adapters/docker_orchestrator/): a quick client and a slow one, both
connected lazily with bounded waits, and the one place an SDK error that means "the daemon is gone" becomes
DockerUnavailable (503) for every public call."""
from __future__ import annotations

import functools
import logging
import threading
from inspect import isfunction

import docker
from docker.errors import APIError, DockerException
from requests.exceptions import RequestException

from grokemu.domain.errors import DockerUnavailable

# one logger for the package: grok_spawner's service logs (services/service_logs.py) name it
log = logging.getLogger("grokemu.adapters.docker_orchestrator")

# Bounds on waiting for the daemon (docs/faults.md §4): a daemon that is gone answers at once (the socket is missing or
# refuses); one that hangs must not hold a request, the health page or the scheduler's tick for long.
PING_TIMEOUT = 3.0
CALL_TIMEOUT = 15.0


def _reason(e: BaseException) -> str:
    """The root of a connection failure in a few words (`[Errno 2] No such file or directory`, `Read timed out`)."""
    while e.__context__ is not None and not isinstance(e, (FileNotFoundError, ConnectionRefusedError)):
        e = e.__context__
    text = str(e)
    return text if len(text) < 300 else text[:297] + "..."


def daemon_gone(e: BaseException) -> bool:
    """True when `e` means the daemon (or its containerd) cannot be reached, rather than a refusal of the request.

    The SDK raises requests' ConnectionError when the socket is missing or refuses, ReadTimeout when the daemon does
    not answer in time; while dockerd restarts, the daemon itself may answer 500 because its containerd is gone."""
    if isinstance(e, APIError):  # the daemon answered (APIError is a requests HTTPError too: asked first)
        text = str(e.explanation or e).lower()
        return (e.status_code or 500) >= 500 and ("connection refused" in text or "is the docker daemon running"
                                                  in text or ("containerd" in text and "dial" in text))
    return isinstance(e, RequestException)


def translates_daemon_errors(cls):
    """Every public method of an orchestrator class raises DockerUnavailable (503) when the daemon is gone, never
    the SDK's own error (a 500 for the caller); its dead connections are dropped so the next call reconnects."""
    for name, method in list(vars(cls).items()):
        if name.startswith("_") or not isfunction(method):
            continue

        def wrapped(self, *args, __method=method, **kwargs):
            try:
                return __method(self, *args, **kwargs)
            except (RequestException, APIError) as e:
                if not daemon_gone(e):
                    raise
                self.forget_connection()
                raise DockerUnavailable(f"Docker unreachable: {_reason(e)}") from None

        setattr(cls, name, functools.wraps(method)(wrapped))
    return cls


@translates_daemon_errors
class DaemonConnection:
    """The clients every call goes through (DockerOrchestrator, containers.py, is what callers build)."""

    def __init__(self, base_url: str | None = None, timeout: float = 120, network: str | None = None,
                 call_timeout: float = CALL_TIMEOUT):
        self.network = network or None  # run containers on this network, publishing nothing (docker_network)
        self._base_url = base_url
        self._timeout = timeout  # builds, pulls, runs and stops (a stop adds its grace)
        self._call_timeout = call_timeout  # everything else: one answer from the daemon
        self._client: docker.DockerClient | None = None
        self._slow: docker.DockerClient | None = None
        self._lock = threading.Lock()
        self._network_lock = threading.Lock()
        self._storage_opt_supported: bool | None = None

    def _connect(self, timeout: float, version: str | None = None) -> docker.DockerClient:
        # A new connection asks the daemon's API version first: as quick as a ping, so a ping after the daemon went
        # away is bounded by PING_TIMEOUT too; the client's own calls then get `timeout`.
        kwargs: dict = {"timeout": PING_TIMEOUT}
        if version:
            kwargs["version"] = version  # no version request of its own: the quick client asked already
        try:
            client = (docker.DockerClient(base_url=self._base_url, **kwargs) if self._base_url
                      else docker.from_env(**kwargs))
        except DockerException as e:
            raise DockerUnavailable(f"Docker unreachable: {_reason(e)}") from None
        # read by every request (a stop adds its grace); types-docker says int, requests takes seconds as a float
        client.api.timeout = timeout  # type: ignore[assignment]
        return client

    @property
    def client(self) -> docker.DockerClient:
        """The client for calls the daemon answers at once (inspect, list, logs, remove, networks, services): bounded
        by `call_timeout`, so a daemon that went away or hangs is an error within seconds, never a hung request.
        Connected lazily, so grokemu starts (and serves what does not need Docker) while the daemon is down."""
        with self._lock:
            if self._client is None:
                self._client = self._connect(self._call_timeout)
            return self._client

    @property
    def slow_client(self) -> docker.DockerClient:
        """The client for builds, pulls, runs and stops, which take as long as they take (up to `timeout`)."""
        version = self.client.api.api_version
        with self._lock:
            if self._slow is None:
                self._slow = self._connect(self._timeout, version)
            return self._slow

    def forget_connection(self) -> None:
        """The daemon went away: its pooled connections are dead; the next call connects again."""
        with self._lock:
            clients, self._client, self._slow = (self._client, self._slow), None, None
        for client in clients:
            if client is not None:
                try:
                    client.close()
                except Exception:  # closing a dead connection pool: nothing to save
                    pass

    def ping(self) -> bool:
        """Whether the daemon answers, within PING_TIMEOUT (health, the dashboard and every tick ask)."""
        try:
            api = self.client.api
            return api.get(f"{api.base_url}/_ping", timeout=PING_TIMEOUT).status_code == 200
        except (DockerException, DockerUnavailable, OSError):
            self.forget_connection()
            return False
