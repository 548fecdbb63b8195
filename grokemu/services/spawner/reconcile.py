"""What the daemon runs against what the store says (services/spawner/): the reconcile on startup and after a daemon
outage, and leaving with the stand (remove_containers_on_exit), which notes what ran for the next start's
reconcile."""
from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from grokemu.domain.errors import GrokemuError
from grokemu.domain.ports import RunningContainer
from grokemu.services.spawner.core import STARTING_UP, STOPPED, STOPPING_DOWN, E, S, log
from grokemu.services.spawner.drivers import Drivers


class Reconciler(Drivers):
    """The reconcile, and leaving with the stand."""

    # -- leaving with the stand (remove_containers_on_exit) ------------------------------------------------------
    def _resume_path(self) -> Path:
        return Path(self._settings.data_dir) / "resume.json"

    def release_for_exit(self) -> int:
        """grokemu stops and takes what it runs in Docker with it (`docker compose down` then leaves nothing): the
        plugin containers that run are noted in <data>/resume.json first, so the next start runs them again, then
        every labelled container of this instance and its queue network are removed. How many were removed."""
        orch = self._orchestrator
        if not orch.ping():
            return 0
        running = [c.id for c in self._store.list_containers() if c.docker_id and c.status not in STOPPED
                   and c.status is not S.ERROR]
        path = self._resume_path()
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(running))
        os.replace(tmp, path)  # whole or not at all: a half-written list would resume nothing
        found = list(orch.list_labelled(self.labels()))
        with ThreadPoolExecutor(max_workers=8) as pool:  # in parallel: compose gives the stop a few seconds only
            list(pool.map(lambda r: orch.remove(r.id), found))
        orch.remove_networks(self.labels())
        log.info("exit: %d containers removed, %d to run again at the next start", len(found), len(running))
        return len(found)

    def _take_resume_list(self) -> set[str]:
        path = self._resume_path()
        try:
            ids = json.loads(path.read_text())
        except (OSError, ValueError):
            return set()
        path.unlink(missing_ok=True)
        return {i for i in ids if isinstance(i, str)} if isinstance(ids, list) else set()

    # -- reconciling -------------------------------------------------------------------------------------------
    def reconcile(self) -> None:
        """On startup, and when the daemon is back after an outage: re-adopt running labelled containers, stop
        entities whose container vanished, remove stray labelled containers of deleted entities and doubles.
        After an outage, what should run (desiredInstances 1) and was stopped by the daemon runs again. Nothing is
        orphaned, nothing duplicated. A container a driver is moving right now is left to it."""
        after_outage = self._outage
        orch = self._orchestrator
        containers = {c.id: c for c in self._store.list_containers()}
        busy = {cid for cid in containers if self._lock_for(cid).locked()}  # a driver owns it and what it runs
        adopted: dict[str, str] = {}
        run_again: set[str] = set()

        def recorded(r: RunningContainer) -> bool:
            c = containers.get(r.labels.get("grokemu.container", ""))
            return c is not None and c.docker_id == r.id

        # the container the entity records first: of two for one entity, that one is kept and the other removed
        found = sorted(orch.list_labelled(self.labels()), key=lambda r: not recorded(r))
        for running in found:
            if running.labels.get("grokemu.role"):
                continue  # grokemu's own services (the message broker: services/broker.py), not plugin containers
            cid = running.labels.get("grokemu.container", "")
            if cid in busy:
                continue
            c = containers.get(cid)
            if c is None or cid in adopted:
                log.info("reconcile: removing stray container %s", running.name)
                orch.remove(running.id)
                continue
            adopted[cid] = running.id
            if running.state in ("exited", "dead"):  # it ended while grokemu was not watching
                if after_outage and c.desired_instances == 1 and c.docker_id == running.id and \
                        c.status in (*STARTING_UP, S.STARTED):
                    # the daemon stopped it on its way down: run it again (a new container, the old one removed)
                    log.info("reconcile: %s was stopped by the Docker daemon (exit code %s): running it again",
                             c.name, running.exit_code)
                    orch.remove(running.id)
                    adopted.pop(cid)
                    run_again.add(cid)
                elif c.docker_id == running.id and c.status not in STOPPED and c.status is not S.ERROR:
                    self._fail(cid, self._exit_reason(c, running))
                elif orch.keeps_stopped and c.status in STOPPED:
                    pass  # a stopped entity's service, scaled to 0: kept for its next start
                else:
                    orch.remove(running.id)
                    adopted.pop(cid)
                continue
            if c.docker_id == running.id and c.status in (S.CHECKING, S.STARTED, *STOPPING_DOWN, S.PENDING_START,
                                                           S.STARTING):
                # already tracked: the drivers carry on from its recorded status. Docker may have restarted it
                # (live-restore keeps it as it was; a restart policy gives it a new host port): follow its address.
                if c.status is S.STARTED and running.endpoint() != (c.address, c.port):
                    self._follow_endpoint(cid, running)
                continue
            if c.status in STOPPED and c.desired_instances == 0 and not orch.keeps_stopped:
                # stopped while the daemon could not be reached (the stop recorded, the container left): finish it
                log.info("reconcile: removing %s, stopped while Docker was unreachable", running.name)
                orch.remove(running.id)
                adopted.pop(cid)
                continue
            ready = self._worker_consuming(c) if c.is_worker else orch.app_ready(running)
            event = E.ADOPT_RUNNING if ready else E.ADOPT_CHECKING
            self._transition(cid, event, docker_id=running.id, address=running.endpoint()[0], port=running.endpoint()[1],
                             desired_instances=1, last_active=self._clock.now())
        resume = self._take_resume_list()
        for cid, c in containers.items():
            if cid in busy or cid in adopted or c.status in STOPPED or c.status is S.ERROR:
                continue
            wanted = c.desired_instances == 1 and c.status in (*STARTING_UP, S.STARTED)
            self._transition(cid, E.VANISHED, docker_id="", address=None, port=None, desired_instances=0)
            if cid in resume or (after_outage and wanted):
                # grokemu removed it on its way out (release_for_exit), or the daemon took it down: run it again
                run_again.add(cid)
        for cid in run_again:
            try:
                self._request_start(cid, containers[cid].started_by or "admin")
            except GrokemuError as e:
                log.warning("container %s not run again: %s", containers[cid].name, e)
        # done (a reconcile cut short by the daemon going again is run again when it is back)
        self._reconciled, self._outage = True, False

    def _follow_endpoint(self, cid: str, running: RunningContainer) -> None:
        address, port = running.endpoint()
        with self._store.transaction():
            fresh = self._store.get_container(cid)
            if fresh is None:
                return
            fresh.address, fresh.port = address, port
            self._store.put_container(fresh)
        log.info("reconcile: container %s re-adopted at %s:%s", fresh.name, address, port)
        self._notify()  # the proxy's started-cache is stale
