"""A container's one pool of kept-alive sockets (adapters/lean_upstream.py LeanPool), which the blocking relay and the
server's relay loop share: what `take` and `take_watched` hand out, the stale-socket rule's first half (a loose socket
the container closed while it waited is closed, never handed out; a watched one is discarded by the loop), and what
giving back does when the pool is full or closed."""
from __future__ import annotations

import socket

import pytest

from grokemu.adapters.lean_upstream import LeanPool


@pytest.fixture
def pairs():
    made: list[tuple[socket.socket, socket.socket]] = []

    def pair() -> tuple[socket.socket, socket.socket]:
        made.append(socket.socketpair())
        return made[-1]

    yield pair
    for a, b in made:
        a.close()
        b.close()


def test_take_hands_out_the_newest_live_socket_and_none_when_empty(pairs):
    pool = LeanPool(("127.0.0.1", 1), 4, 5.0)
    assert pool.take() is None
    (old, _), (new, _) = pairs(), pairs()
    pool.give(old)
    pool.give(new)
    assert pool.take() is new
    assert pool.take() is old
    assert pool.take() is None


def test_a_socket_the_container_closed_while_idle_is_closed_not_handed_out(pairs):
    pool = LeanPool(("127.0.0.1", 1), 4, 5.0)
    (alive, _), (stale, peer) = pairs(), pairs()
    pool.give(alive)
    pool.give(stale)
    peer.close()  # the container's side: readable EOF on `stale`
    assert pool.take() is alive
    assert stale.fileno() == -1
    assert pool.take() is None


def test_a_socket_with_unasked_bytes_waiting_is_dropped_too(pairs):
    pool = LeanPool(("127.0.0.1", 1), 4, 5.0)
    sock, peer = pairs()
    pool.give(sock)
    peer.sendall(b"HTTP/1.1 200 OK\r\n\r\n")  # nobody asked: the next answer read on it would be the wrong one
    assert pool.take() is None and sock.fileno() == -1


def test_give_closes_what_does_not_fit(pairs):
    pool = LeanPool(("127.0.0.1", 1), 1, 5.0)
    (kept, _), (extra, _) = pairs(), pairs()
    pool.give(kept)
    pool.give(extra)
    assert extra.fileno() == -1 and kept.fileno() >= 0
    assert pool.take() is kept


def test_a_closed_pool_closes_its_sockets_and_those_given_back_later(pairs):
    """The container moved or was forgotten while an exchange held one of its sockets: the socket is closed when the
    exchange gives it back, never kept for an address that is gone."""
    pool = LeanPool(("127.0.0.1", 1), 4, 5.0)
    (idle, _), (busy, _) = pairs(), pairs()
    pool.give(idle)
    pool.close()
    assert idle.fileno() == -1
    pool.give(busy)
    assert busy.fileno() == -1
    assert pool.take() is None


def test_watched_sockets_go_only_to_the_loop_newest_first_with_their_records(pairs):
    """A socket the relay loop gives back stays registered with the loop's selector: the blocking relay never gets
    it (it would read it under the loop), the loop gets it back with the record it gave."""
    pool = LeanPool(("127.0.0.1", 1), 4, 5.0)
    (loose, _), (old, _), (new, _) = pairs(), pairs(), pairs()
    pool.give(loose)
    assert pool.give_watched(old, "old record") and pool.give_watched(new, "new record")
    assert pool.take() is loose
    assert pool.take() is None  # the two watched ones are not the blocking relay's
    assert pool.take_watched() == (new, "new record")
    assert pool.take_watched() == (old, "old record")
    assert pool.take_watched() is None


def test_both_kinds_count_towards_the_size_and_a_watched_one_that_does_not_fit_is_left_open(pairs):
    pool = LeanPool(("127.0.0.1", 1), 2, 5.0)
    (loose, _), (watched, _), (extra, _), (extra_loose, _) = pairs(), pairs(), pairs(), pairs()
    pool.give(loose)
    assert pool.give_watched(watched, 1)
    assert not pool.give_watched(extra, 2)
    assert extra.fileno() >= 0  # the loop unregisters and closes it itself
    pool.give(extra_loose)
    assert extra_loose.fileno() == -1


def test_a_discarded_watched_socket_is_no_longer_offered(pairs):
    pool = LeanPool(("127.0.0.1", 1), 4, 5.0)
    (kept, _), (stale, _) = pairs(), pairs()
    assert pool.give_watched(kept, "kept") and pool.give_watched(stale, "stale")
    pool.discard(stale)  # the loop saw it turn readable
    pool.discard(stale)  # twice is harmless
    assert pool.take_watched() == (kept, "kept")
    assert pool.take_watched() is None


def test_closing_shuts_watched_sockets_down_for_the_loop_to_close_and_refuses_more(pairs):
    """Closing a socket registered with the loop's selector from another thread would leave a stale registration:
    the pool shuts it down instead, and the loop sees its EOF."""
    pool = LeanPool(("127.0.0.1", 1), 4, 5.0)
    (watched, _), (later, _) = pairs(), pairs()
    assert pool.give_watched(watched, "w")
    pool.close()
    assert watched.fileno() >= 0
    watched.setblocking(False)
    assert watched.recv(1) == b""  # readable EOF: what the loop's selector reports
    assert pool.take_watched() is None
    assert not pool.give_watched(later, "l") and later.fileno() >= 0
