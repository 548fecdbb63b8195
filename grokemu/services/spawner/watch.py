"""The scheduler's pass (services/spawner/): the daemon's health (an outage, and the reconcile owed when it is back),
containers that ended on their own, states held too long, and idle shutdown; and, for the proxy, whether a broken
exchange means the container ended."""
from __future__ import annotations

import time
from typing import Any

from grokemu.domain.errors import DOCKER_UNREACHABLE, DockerUnavailable
from grokemu.domain.lifecycle import CONTAINER_TRANSIENT
from grokemu.domain.model import DockerContainer
from grokemu.services.spawner.core import STARTING_UP, STOPPING_DOWN, E, S, log
from grokemu.services.spawner.reconcile import Reconciler


class Watcher(Reconciler):
    """The daemon's health and the scheduler's pass (`tick`)."""

    # -- the daemon ------------------------------------------------------------------------------------------------
    def docker_state(self) -> dict[str, Any]:
        """The daemon as the scheduler last found it, without asking it (the dashboard's live feed)."""
        up = self._docker_up is not False
        return {"reachable": up, "since": self._down_since,
                "message": "ok" if up else DOCKER_UNREACHABLE}

    def _daemon_answers(self) -> bool:
        """Ping, and notice a change: the daemon going away (logged, shown) and coming back (reconcile again)."""
        up = self._orchestrator.ping()
        if up != self._docker_up:
            if not up:
                # an outage, or a start without Docker: either way, what the daemon ran may have been stopped
                self._down_since = self._clock.now()
                self._outage = True
                log.warning("%s", DOCKER_UNREACHABLE)
            else:
                if self._outage:
                    log.info("Docker is back after %.1f s: reconciling", self._clock.now() - (self._down_since or 0))
                    self._reconciled = False
                self._down_since = None
            self._docker_up = up
            self._notify()  # the dashboard's live feed shows it
        return up

    def _orchestrator_or_raise(self) -> None:
        if not self._daemon_answers():
            raise DockerUnavailable(DOCKER_UNREACHABLE)

    def catch_up(self) -> bool:
        """Whether the daemon answers; when it does and a reconcile is owed (startup, the daemon back after an
        outage), run it now, once, before anything judges a container by what the daemon says."""
        if not self._daemon_answers():
            return False
        if not self._reconciled:
            with self._reconcile_lock:
                if not self._reconciled:
                    self.reconcile()
        return True

    def started_again(self, seen: DockerContainer) -> bool:
        """A connection to the started container `seen` was refused: is that because the daemon restarted and the
        container is run again (the reconcile owed is run first, or waited for)? Then the caller waits for it, as for a
        cold start, and sends to the new one."""
        if not self.catch_up():
            return False
        with self._reconcile_lock:  # one in progress (the scheduler's) has decided when this returns
            c = self._store.get_container(seen.id)
        return c is not None and (c.status in STARTING_UP or (c.status is S.STARTED and c.docker_id != seen.docker_id))

    # -- the scheduler's pass ----------------------------------------------------------------------------------
    def tick(self) -> None:
        try:
            if self.catch_up():
                self._tick()
        except DockerUnavailable as e:  # it went away during this pass: the next one sees it down
            log.warning("tick cut short: %s", e.message)

    def _tick(self) -> None:
        now = self._clock.now()
        watch = not self._background or time.monotonic() - self._last_watch >= self._watch_interval
        if watch:
            self._last_watch = time.monotonic()
        timeout = self._settings.container_status_timeout
        for c in self._store.list_containers():
            self._flush_activity(c)
            if c.status in CONTAINER_TRANSIENT and now - c.status_since > timeout:
                reason = f"the worker did not consume its queue {c.task_queue} within {timeout:g} s (see its " \
                         f"logs)" if c.is_worker and c.status is S.CHECKING else \
                    f"status '{c.status.value}' held longer than {timeout:g} s"
                self._fail(c.id, reason, expect=(c.status,), event=E.TIMEOUT)
            elif c.status is S.STARTED:
                if watch:
                    self._watch(c)
                if c.desired_instances == 0:
                    self._transition(c.id, E.REQUEST_USER_STOP, expect=(S.STARTED,))
                    self._kick(c.id)
                elif self._idle(c, now):
                    self._transition(c.id, E.REQUEST_SYSTEM_STOP, expect=(S.STARTED,), desired_instances=0)
                    self._kick(c.id)
            elif c.status in STARTING_UP or c.status in STOPPING_DOWN:
                self._kick(c.id)  # no-op when a driver holds it

    def _flush_activity(self, c: DockerContainer) -> None:
        touched = self._activity.last_active(c.id)
        if touched and (c.last_active or 0) < touched:
            with self._store.transaction():
                fresh = self._store.get_container(c.id)
                if fresh:
                    fresh.last_active = touched
                    self._store.put_container(fresh)
            c.last_active = touched

    def _idle(self, c: DockerContainer, now: float) -> bool:
        return self._activity.is_idle(c.id, max(c.last_active or 0, c.status_since), c.config.get("shutdown_timeout"),
                                      now)

    def _watch(self, c: DockerContainer) -> None:
        """A started container that exits on its own becomes `error` (never silently restarted)."""
        running = self._orchestrator.inspect(c.docker_id) if c.docker_id else None
        if running is None:
            self._transition(c.id, E.VANISHED, expect=(S.STARTED,), docker_id="", address=None, port=None,
                             desired_instances=0, error="the container was removed outside grokemu")
        elif running.state in ("exited", "dead"):
            self._fail(c.id, self._exit_reason(c, running), expect=(S.STARTED,))

    def explain_broken(self, cid: str, within: float = 2.0) -> str | None:
        """A proxied request broke off: did the container end? Its reason (and the entity becomes `error` now, not
        at the next watch), or None when its app still accepts connections, or it still runs after `within` real
        seconds: the daemon records the exit a moment after the connection drops, hence the short poll."""
        deadline = time.monotonic() + within
        if self._outage or self._docker_up is False:
            # the daemon is gone (DockerUnavailable: the caller's 503), or back and owed a reconcile, which decides
            # first: a container the daemon's restart stopped is run again, not failed for it
            self._orchestrator_or_raise()
            self.catch_up()
        while True:
            c = self._store.get_container(cid)
            if c is None:
                return None
            if c.status is S.ERROR:
                return c.error
            if c.status is not S.STARTED or not c.docker_id:
                return None
            running = self._orchestrator.inspect(c.docker_id)
            if running is None or running.state in ("exited", "dead"):
                self._watch(c)
                fresh = self._store.get_container(cid)
                return fresh.error if fresh is not None and fresh.error else None
            if time.monotonic() >= deadline or self._orchestrator.app_ready(running):
                return None  # alive: the app itself closed that connection
            time.sleep(0.05)
