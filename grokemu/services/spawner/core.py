"""What every part of the spawner shares (services/spawner/): the store and the collaborators, one driver lock per
container, the transition that fires a lifecycle event (domain/lifecycle.py), waiting for a container to settle, and
failing one with its reason and last logs."""
from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from grokemu.config import Settings
from grokemu.domain.clock import Clock
from grokemu.domain.container_config import DEFAULTS
from grokemu.domain.errors import DOCKER_UNREACHABLE, DockerUnavailable, NotFound
from grokemu.domain.exits import LOG_LINES_SHOWN, explain_exit
from grokemu.domain.lifecycle import CONTAINER_TRANSITIONS, ContainerEvent, ContainerStatus, next_status
from grokemu.domain.model import DockerContainer
from grokemu.domain.ports import Orchestrator, RunningContainer, Store
from grokemu.services.activity import ActivityTracker
from grokemu.services.run_specs import RunSpecs

if TYPE_CHECKING:
    from grokemu.services.auth import AuthService
    from grokemu.services.broker import BrokerService

# one logger for every part: grok_spawner's service logs (services/service_logs.py) and log settings name it
log = logging.getLogger("grokemu.services.spawner")
S = ContainerStatus
E = ContainerEvent
STOPPED = (S.USER_STOPPED, S.SYSTEM_STOPPED)
STARTING_UP = (S.PENDING_START, S.STARTING, S.CHECKING)
STOPPING_DOWN = (S.PENDING_USER_STOP, S.PENDING_SYSTEM_STOP, S.STOPPING)
LOG_LINES_KEPT = 200
NOT_LISTENING = "nothing listens on port"  # the warning on a started container whose port never accepted


class SpawnerCore:
    """The state the spawner's parts share (Spawner, service.py, is what callers build)."""

    def __init__(self, store: Store, orchestrator: Orchestrator, clock: Clock, settings: Settings,
                 auth: AuthService, activity: ActivityTracker, run_specs: RunSpecs,
                 background: bool = True, probe_interval: float = 0.02, watch_interval: float = 1.0,
                 broker: BrokerService | None = None):
        self._broker = broker  # a Celery worker is ready when it consumes its queue there
        self._store = store
        self._orchestrator = orchestrator
        self._clock = clock
        self._settings = settings
        self._auth = auth
        self._activity = activity
        self._run_specs = run_specs  # container.json → what the orchestrator runs
        self._background = background
        self._probe_interval = probe_interval
        self._watch_interval = watch_interval
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._changed = threading.Condition()  # notified (and _generation bumped) on every status change
        self._generation = 0
        self._reconciled = False
        self._last_watch = 0.0
        # the daemon as the last tick found it (None: not asked yet); when it went away (the injected clock)
        self._docker_up: bool | None = None
        self._down_since: float | None = None
        self._outage = False  # the daemon went away since the last reconcile: the next one runs what it stopped
        self._reconcile_lock = threading.Lock()  # the scheduler and a proxied request may both find one due

    # -- plumbing ----------------------------------------------------------------------------------------------
    def _lock_for(self, cid: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(cid, threading.Lock())

    def _notify(self) -> None:
        with self._changed:
            self._generation += 1
            self._changed.notify_all()
        self._activity.changed("container")  # the dashboard's live feed (services/activity.py)

    def get(self, cid: str) -> DockerContainer:
        return self._get(cid)

    def _get(self, cid: str) -> DockerContainer:
        c = self._store.get_container(cid)
        if c is None:
            raise NotFound(f"Docker container {cid} not found")
        return c

    def _transition(self, cid: str, event: ContainerEvent, expect: tuple | None = None, **changes: Any
                    ) -> DockerContainer | None:
        """Fire one lifecycle event; None when the container is gone or no longer in an `expect`ed status."""
        with self._store.transaction():
            c = self._store.get_container(cid)
            if c is None or (expect is not None and c.status not in expect):
                return None
            c.status = next_status(CONTAINER_TRANSITIONS, c.status, event)
            c.status_since = c.updated_on = self._clock.now()
            for key, value in changes.items():
                setattr(c, key, value)
            if c.status not in (S.STARTING, S.CHECKING, S.STARTED):
                c.pipe_key_hash = ""  # the pipe key of a worker dies with its run, like its USER_API_KEY
            self._store.put_container(c)
        if c.status not in (S.STARTING, S.CHECKING, S.STARTED):
            # stopping, stopped, error, vanished, or about to be (re)started: its USER_API_KEY dies now (a start
            # mints a new one in _spec)
            self._auth.revoke_owner(cid)
        log.info("container %s: %s (%s)", c.name, c.status.value, event.value)
        self._notify()
        return c

    def _require_orchestrator(self) -> Orchestrator:
        if not self._orchestrator.ping():
            raise DockerUnavailable(DOCKER_UNREACHABLE)
        return self._orchestrator

    def labels(self, c: DockerContainer | None = None) -> dict[str, str]:
        return self._run_specs.labels(c)

    @property
    def generation(self) -> int:
        """Bumped on every status change of any container: a reader may cache what it saw until it moves."""
        return self._generation

    @property
    def activity(self) -> ActivityTracker:
        return self._activity

    @property
    def run_specs(self) -> RunSpecs:
        return self._run_specs

    # -- waiting -----------------------------------------------------------------------------------------------
    def _wait(self, cid: str, timeout: float) -> DockerContainer:
        """Until the container settles (started, stopped, error) or `timeout` real seconds pass."""
        deadline = time.monotonic() + timeout
        while True:
            with self._changed:
                seen = self._generation
            # read the store outside the condition's lock: _transition notifies while holding the store's lock
            c = self._get(cid)
            if c.status not in STARTING_UP and c.status not in STOPPING_DOWN:
                return c
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._background:
                return c
            with self._changed:
                if self._generation == seen:
                    self._changed.wait(min(remaining, 0.5))

    # -- failing -----------------------------------------------------------------------------------------------
    def _fail(self, cid: str, reason: str, expect: tuple | None = None, event: ContainerEvent = E.FAIL) -> None:
        c = self._store.get_container(cid)
        if c is None:
            return
        logs = c.last_logs
        if c.docker_id and self._orchestrator.ping():
            logs = self._orchestrator.logs(c.docker_id, LOG_LINES_KEPT) or logs
            self._orchestrator.remove(c.docker_id)  # no orphan: the reason and the logs stay on the entity
        failed = self._transition(cid, event, expect=expect, error=reason, last_logs=logs, docker_id="",
                                  address=None, port=None)
        if failed:
            log.warning("container %s: error: %s", failed.name, reason)

    def _exit_reason(self, c: DockerContainer, running: RunningContainer, when: str = "") -> str:
        """How an ended container ended, in words (domain/exits.py), with its last log lines."""
        logs = self._orchestrator.logs(running.id, LOG_LINES_SHOWN * 2)
        return explain_exit(running.exit_facts(), c.config.get("memory") or DEFAULTS["memory"], logs or c.last_logs,
                            when)

    def _worker_consuming(self, c: DockerContainer) -> bool:
        return self._broker is not None and self._broker.consumers(c.task_queue, start=True) > 0
