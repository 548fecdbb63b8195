"""A background job that meets a full disk is retried every pass and logged once, not once per pass
(docs/faults.md §3)."""
from __future__ import annotations

import errno
import logging
import sqlite3

import pytest

from grokemu.domain.clock import ManualClock
from grokemu.services import scheduler as scheduler_module
from grokemu.services.scheduler import Scheduler


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records():
    """The scheduler's own records, on its logger: another test's logging.config (disable_existing_loggers) may
    have disabled it or stopped it propagating to caplog's root handler."""
    handler, logger = _Records(), scheduler_module.log
    level, disabled = logger.level, logger.disabled
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.disabled = False
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)
    logger.disabled = disabled


def test_a_job_on_a_full_disk_is_logged_once_and_retried_until_it_gets_through(records):
    runs, failures = [], [OSError(errno.ENOSPC, "No space left on device")] * 3 + [None] + \
        [sqlite3.OperationalError("database or disk is full")] * 2

    def job():
        runs.append(1)
        error = failures.pop(0) if failures else None
        if error is not None:
            raise error

    scheduler = Scheduler(ManualClock())
    scheduler.add("write", job)
    for _ in range(8):
        scheduler.run_once()
    assert len(runs) == 8  # retried on every pass
    waits = [r for r in records.records if "waits for disk space" in r.getMessage()]
    assert len(waits) == 2 and all(r.exc_info is None for r in waits)  # once per spell, no traceback
    assert sum("got through" in r.getMessage() for r in records.records) == 2


def test_any_other_failure_still_logs_its_traceback_every_pass(records):
    scheduler = Scheduler(ManualClock())
    scheduler.add("broken", lambda: 1 / 0)
    scheduler.run_once()
    scheduler.run_once()
    assert [r.exc_info is not None for r in records.records] == [True, True]


def test_passes_count_whole_passes_failing_jobs_included():
    """`passes` (shown by the signed-in health) counts completed passes, so a test can wait for a step."""
    s, ran = Scheduler(ManualClock()), []
    s.add("ok", lambda: ran.append(s.passes))
    s.add("fails", lambda: 1 / 0)
    assert s.passes == 0
    s.run_once()
    s.run_once()
    assert s.passes == 2 and ran == [0, 1]  # a pass counts once all its jobs ran, the failing one included
