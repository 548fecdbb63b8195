"""Shared helpers for the benchmarks (not tests: they print numbers, they assert nothing)."""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def median(values):
    return statistics.median(values)


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def wait_until(predicate, timeout: float, interval: float = 0.005):
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError("condition not reached")
