"""Admin reset as a registry (services/resets.py): every stateful service the app builds is in it, in stage order,
and one failing reset neither stops the others nor goes unreported."""
from __future__ import annotations

import dataclasses

import pytest

from grokemu.services.resets import Resets, ResetStage


def test_every_service_of_the_app_with_a_reset_is_in_the_registry(ctx):
    stateful = {f.name: getattr(ctx, f.name) for f in dataclasses.fields(ctx)
                if callable(getattr(getattr(ctx, f.name), "reset", None)) and f.name != "admin"}
    assert {"store", "auth", "calls", "broker", "spawner", "proxy", "activity", "registry", "images",
            "package_files"} <= stateful.keys()
    forgotten = [name for name, service in stateful.items() if not ctx.resets.covers(service)]
    assert forgotten == []


def test_the_app_resets_callers_first_and_readers_last(ctx):
    names = ctx.resets.names
    assert names[:2] == ["calls", "broker"]
    assert names[-3:] == ["spawner", "activity", "proxy"]
    assert names.index("store") < names.index("spawner")


class _Recorder:
    def __init__(self, log: list[str], name: str, fail: bool = False):
        self.log, self.name, self.fail = log, name, fail

    def reset(self):
        self.log.append(self.name)
        if self.fail:
            raise OSError("disk gone")
        return self.name.upper()


def test_stage_order_then_adding_order_and_a_failure_is_reported_while_the_rest_run():
    log: list[str] = []
    resets = Resets()
    resets.add("late", _Recorder(log, "late"), ResetStage.READERS)
    resets.add("broken", _Recorder(log, "broken", fail=True), ResetStage.STATE)
    resets.add("first", _Recorder(log, "first"), ResetStage.CALLERS)
    resets.add("state", _Recorder(log, "state"), ResetStage.STATE)
    results = resets.run()
    assert log == ["first", "broken", "state", "late"]
    assert results == {"first": "FIRST", "state": "STATE", "late": "LATE", "failed": ["broken"]}


def test_a_service_without_reset_is_refused_when_added():
    with pytest.raises(TypeError, match="no reset"):
        Resets().add("nothing", object(), ResetStage.STATE)
