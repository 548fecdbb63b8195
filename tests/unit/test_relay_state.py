"""The relay loop's states as data (server/relay_state.py): the transition tables, written out here once more so a
change to them is a deliberate one, every listed move made through `_move`, every other one refused and logged."""
import itertools
import logging
from types import SimpleNamespace

import pytest

from grokemu.server.relay_answer import Framing
from grokemu.server.relay_state import (
    CLIENT_MOVES,
    EXCHANGE_MOVES,
    ClientState,
    ExchangeState,
    IllegalMove,
    _Client,
    _Exchange,
    _move,
)

C, X = ClientState, ExchangeState
EXPECTED_CLIENT = {
    C.OPEN: {C.ENDED, C.CLOSING, C.CLOSED, C.HANDED_OFF},
    C.ENDED: {C.CLOSING, C.CLOSED, C.HANDED_OFF},
    C.CLOSING: {C.CLOSED},
    C.CLOSED: set(),
    C.HANDED_OFF: set(),
}
EXPECTED_EXCHANGE = {
    X.WAITING: {X.CONNECTING, X.EXPLAINING, X.ANSWERING, X.FINISHED},
    X.CONNECTING: {X.WAITING, X.FINISHED},
    X.EXPLAINING: {X.FINISHED},
    X.ANSWERING: {X.FINISHED},
    X.FINISHED: set(),
}


def _client(state=C.OPEN) -> _Client:
    c = _Client(None, SimpleNamespace(addr=("127.0.0.1", 40000)), b"", "public")  # type: ignore[arg-type]
    c.state = state
    return c


def _exchange(state=X.WAITING) -> _Exchange:
    ex = _Exchange(_client(), None, b"GET / HTTP/1.1\r\n\r\n", True)  # type: ignore[arg-type]
    ex.state = state
    return ex


def test_the_tables_are_the_expected_ones_and_cover_every_state():
    assert {s: set(n) for s, n in CLIENT_MOVES.items()} == EXPECTED_CLIENT
    assert {s: set(n) for s, n in EXCHANGE_MOVES.items()} == EXPECTED_EXCHANGE
    assert set(CLIENT_MOVES) == set(ClientState) and set(EXCHANGE_MOVES) == set(ExchangeState)
    for table in (CLIENT_MOVES, EXCHANGE_MOVES):  # what _move reads is the table
        for state, allowed in table.items():
            assert state.moves == allowed


def test_new_records_start_open_and_waiting():
    assert _client().state is C.OPEN
    ex = _exchange()
    assert ex.state is X.WAITING and ex.framing is Framing.NONE


@pytest.mark.parametrize("old, new", [(o, n) for o, ns in EXPECTED_CLIENT.items() for n in ns])
def test_every_legal_client_move_is_made(old, new):
    c = _client(old)
    _move(c, new)
    assert c.state is new


@pytest.mark.parametrize("old, new", [(o, n) for o, ns in EXPECTED_EXCHANGE.items() for n in ns])
def test_every_legal_exchange_move_is_made(old, new):
    ex = _exchange(old)
    _move(ex, new)
    assert ex.state is new


ILLEGAL = [(_client, o, n) for o, n in itertools.product(ClientState, repeat=2) if n not in EXPECTED_CLIENT[o]] + \
    [(_exchange, o, n) for o, n in itertools.product(ExchangeState, repeat=2) if n not in EXPECTED_EXCHANGE[o]]


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.mark.parametrize("make, old, new", ILLEGAL)
def test_every_other_move_is_refused_logged_and_leaves_the_state(make, old, new, monkeypatch):
    obj = make(old)
    logger, seen = logging.getLogger("grokemu.server"), _Records()  # its own handler: other tests may stop propagation
    monkeypatch.setattr(logger, "disabled", False)  # other tests' dictConfig (disable_existing_loggers)
    logger.addHandler(seen)
    try:
        with pytest.raises(IllegalMove) as refused:
            _move(obj, new)
    finally:
        logger.removeHandler(seen)
    assert obj.state is old
    assert f"{old.name} -> {new.name}" in str(refused.value)
    assert [r.levelno for r in seen.records] == [logging.ERROR]
    assert "relay loop bug" in seen.records[0].getMessage()


def test_no_state_moves_to_itself_and_the_ends_are_final():
    assert len(ILLEGAL) == 5 * 5 - 8 + 5 * 5 - 8  # 8 legal moves in each table
    for state in [*ClientState, *ExchangeState]:
        assert state not in state.moves
    for state in (C.CLOSED, C.HANDED_OFF, X.FINISHED):
        assert state.moves == ()


def test_framing_members_are_their_names():
    assert [f.value for f in Framing] == ["length", "chunked", "close", "none"]
    assert Framing.CHUNKED == "chunked" and Framing("close") is Framing.CLOSE


class _Streams:
    def __init__(self):
        self.unparked = 0

    def unpark(self):
        self.unparked += 1


def test_a_closing_connection_closes_once_its_answer_is_written_and_a_handed_off_one_is_left_alone():
    import socket

    from grokemu.server.relay_loop import RelayLoop

    streams = _Streams()
    loop = RelayLoop(SimpleNamespace(settings=None, streams=streams), lambda environ: None, lambda *a: None,
                     lambda environ: None, "/api/")
    ours, theirs = socket.socketpair()
    try:
        ours.setblocking(False)
        c = _Client(ours, SimpleNamespace(addr=("127.0.0.1", 40000)), b"", "public")  # type: ignore[arg-type]
        loop._clients.add(c)
        c.out += b"HTTP/1.1 200 OK\r\n\r\n"
        loop._close_when_written(c)
        assert c.state is C.CLOSING and streams.unparked == 0  # its answer bytes wait
        loop._flush(c)
        assert c.state is C.CLOSED and streams.unparked == 1 and c not in loop._clients
        assert theirs.recv(100) == b"HTTP/1.1 200 OK\r\n\r\n"
        loop._close_when_written(c)  # closed already: nothing moves, nothing is unparked twice
        assert c.state is C.CLOSED and streams.unparked == 1
        gone = _client(C.HANDED_OFF)
        loop._close_when_written(gone)
        loop._close_client(gone)
        assert gone.state is C.HANDED_OFF and streams.unparked == 1
    finally:
        theirs.close()
        loop.close()
