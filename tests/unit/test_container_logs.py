"""services/container_logs.py: finding a container by name and following its logs, with the orchestrator's stream
behind a bounded pump (idle ticks, the end of a follow when the entity stops, the stream closed afterwards)."""
from __future__ import annotations

import threading
from dataclasses import replace

import pytest

from grokemu.adapters.memory_orchestrator import MemoryOrchestrator
from grokemu.adapters.sqlite_store import SqliteStore
from grokemu.domain.lifecycle import ContainerStatus as S
from grokemu.domain.model import DockerContainer
from grokemu.domain.names import AmbiguousContainer, UnknownContainer
from grokemu.services.container_logs import STOP_GRACE_TICKS, ContainerLogs

TICK = 0.02


class EndlessStream:
    """A followed stream that never ends by itself (a Swarm service scaled to 0): chunks given, then waits."""

    def __init__(self, chunks):
        self.chunks = list(chunks)
        self.closed = threading.Event()

    def __iter__(self):
        yield from self.chunks
        self.closed.wait()

    def close(self):
        self.closed.set()


class Orchestrator(MemoryOrchestrator):
    def __init__(self, stream):
        super().__init__()
        self.stream = stream

    def stream_logs(self, container_id, tail, follow):
        return self.stream


@pytest.fixture
def store():
    return SqliteStore(":memory:")


def put(store, name, package, **fields) -> DockerContainer:
    c = DockerContainer(name=name, package=package, image_id="i", **fields)
    store.put_container(c)
    return c


def test_find_by_name_and_its_errors(store):
    web = put(store, "shop-web", "Shop")
    put(store, "shop-db", "Shop")
    service = ContainerLogs(store, MemoryOrchestrator())
    assert service.find("web").id == web.id and service.find(web.id).id == web.id
    with pytest.raises(AmbiguousContainer):
        service.find("Shop")
    with pytest.raises(UnknownContainer):
        service.find("nope")


def test_a_container_with_nothing_running_has_its_kept_logs(store):
    c = put(store, "a-b", "A", last_logs="one\ntwo\nthree\n")
    service = ContainerLogs(store, MemoryOrchestrator())
    assert b"".join(service.stream(c, None, follow=True)) == b"one\ntwo\nthree\n"
    assert b"".join(service.stream(c, 2, follow=False)) == b"two\nthree\n"
    assert b"".join(service.stream(c, 0, follow=False)) == b""
    assert b"".join(service.stream(c, 10, follow=False)) == b"one\ntwo\nthree\n"


def test_a_follow_ends_when_the_entity_stops_even_if_the_stream_does_not(store):
    stream = EndlessStream([b"a\n", b"b\n"])
    c = put(store, "a-b", "A", docker_id="d1", status=S.STARTED)
    follow = ContainerLogs(store, Orchestrator(stream), tick=TICK).stream(c, None, follow=True)
    got = [next(follow), next(follow), next(follow)]
    assert got == [b"", b"a\n", b"b\n"]  # an empty first chunk: the answer starts at once
    assert next(follow) == b""  # nothing new for a tick
    store.put_container(replace(store.get_container(c.id), status=S.USER_STOPPED, docker_id=""))
    rest = list(follow)
    assert rest == [b""] * len(rest) and len(rest) <= STOP_GRACE_TICKS + 1
    assert stream.closed.is_set()  # the orchestrator's stream is closed, its pump ends


def test_a_reader_that_leaves_closes_the_stream(store):
    stream = EndlessStream([b"x\n"] * 200)  # more than the read-ahead: the pump waits for the reader
    c = put(store, "a-b", "A", docker_id="d1", status=S.STARTED)
    follow = ContainerLogs(store, Orchestrator(stream), tick=TICK).stream(c, None, follow=True)
    assert next(follow) == b"" and next(follow) == b"x\n"
    follow.close()
    assert stream.closed.wait(2)
