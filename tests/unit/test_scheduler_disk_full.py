"""A background job that meets a full disk is retried every pass and logged once, not once per pass
(docs/faults.md §3)."""
from __future__ import annotations

import errno
import logging
import sqlite3

from grokemu.domain.clock import ManualClock
from grokemu.services.scheduler import Scheduler


def test_a_job_on_a_full_disk_is_logged_once_and_retried_until_it_gets_through(caplog):
    runs, failures = [], [OSError(errno.ENOSPC, "No space left on device")] * 3 + [None] + \
        [sqlite3.OperationalError("database or disk is full")] * 2

    def job():
        runs.append(1)
        error = failures.pop(0) if failures else None
        if error is not None:
            raise error

    scheduler = Scheduler(ManualClock())
    scheduler.add("write", job)
    with caplog.at_level(logging.INFO, logger="grokemu.services.scheduler"):
        for _ in range(8):
            scheduler.run_once()
    assert len(runs) == 8  # retried on every pass
    waits = [r for r in caplog.records if "waits for disk space" in r.getMessage()]
    assert len(waits) == 2 and all(r.exc_info is None for r in waits)  # once per spell, no traceback
    assert sum("got through" in r.getMessage() for r in caplog.records) == 2


def test_any_other_failure_still_logs_its_traceback_every_pass(caplog):
    scheduler = Scheduler(ManualClock())
    scheduler.add("broken", lambda: 1 / 0)
    with caplog.at_level(logging.ERROR, logger="grokemu.services.scheduler"):
        scheduler.run_once()
        scheduler.run_once()
    assert [r.exc_info is not None for r in caplog.records] == [True, True]
