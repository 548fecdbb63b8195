"""The relay loop's records and their states as data (server/relay_loop.py): a caller's connection (`_Client`), one
request relayed to a container (`_Exchange`), a socket to a container (`_Upstream`), and the transition tables their
states move through (an answer's `Framing` is in relay_answer.py, beside the code that picks it). Every move goes through `_move`, which refuses one the table does not list: that is a bug, logged
and raised (the loop then closes that one connection, as for any error in a handler).

The states are plain enum members compared with `is`; each member carries its allowed next states as a tuple
(`moves`, copied from the tables below), so a move costs a tuple scan and no hashing.
"""
from __future__ import annotations

import enum
import logging
import selectors
import socket
import time

import httptools

from grokemu.domain.upstream import FastForward, KeptAliveSockets
from grokemu.http1 import ChunkedDecoder
from grokemu.server.relay_answer import NONE

log = logging.getLogger("grokemu.server")

MAX_PENDING = 256 * 1024  # bytes read ahead of the request in flight (pipelining) before the caller is not read
HIGH_WATER = 1024 * 1024  # answer bytes waiting for a slow caller before the container is not read
HOLD_HEAD_FOR = 64 * 1024  # an answer head is held back until its body when the body is at most this big
SWEEP = 0.5  # seconds between timeout checks
_READ, _WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


class ClientState(enum.Enum):
    """Where a caller's connection is, for the loop."""

    OPEN = "open"  # requests are read and served
    ENDED = "ended"  # the caller shut its sending side: the requests it sent are answered, then it closes
    CLOSING = "closing"  # no more requests: close once the answer bytes waiting (`out`) are written
    CLOSED = "closed"
    HANDED_OFF = "handed off"  # a stream thread serves it (server/relay.py); it comes back as a new _Client

    moves: tuple[ClientState, ...]  # the allowed next states (CLIENT_MOVES)


class ExchangeState(enum.Enum):
    """Where one relayed request is."""

    CONNECTING = "connecting"  # a fresh socket's connect is in progress: the request waits for it
    WAITING = "waiting"  # the request is (being) sent on the socket; no answer head yet
    EXPLAINING = "explaining"  # the socket broke before an answer: a thread asks the daemon why (_explain)
    ANSWERING = "answering"  # the answer's head is shaped for the caller, its body is passed on
    FINISHED = "finished"  # the socket kept or closed, the plan told, the caller free for its next request

    moves: tuple[ExchangeState, ...]  # the allowed next states (EXCHANGE_MOVES)


OPEN, ENDED, CLOSING, CLOSED, HANDED_OFF = (ClientState.OPEN, ClientState.ENDED, ClientState.CLOSING,
                                            ClientState.CLOSED, ClientState.HANDED_OFF)
CONNECTING, WAITING, EXPLAINING, ANSWERING, FINISHED = (
    ExchangeState.CONNECTING, ExchangeState.WAITING, ExchangeState.EXPLAINING, ExchangeState.ANSWERING,
    ExchangeState.FINISHED)

CLIENT_MOVES: dict[ClientState, tuple[ClientState, ...]] = {
    OPEN: (CLOSING, CLOSED, HANDED_OFF, ENDED),
    ENDED: (CLOSING, CLOSED, HANDED_OFF),  # a complete request still buffered may need the blocking relay
    CLOSING: (CLOSED,),
    CLOSED: (),
    HANDED_OFF: (),
}
EXCHANGE_MOVES: dict[ExchangeState, tuple[ExchangeState, ...]] = {
    WAITING: (ANSWERING, FINISHED, CONNECTING, EXPLAINING),  # CONNECTING: the one retry on a fresh socket
    CONNECTING: (WAITING, FINISHED),
    EXPLAINING: (FINISHED,),
    ANSWERING: (FINISHED,),
    FINISHED: (),
}
for _table in (CLIENT_MOVES, EXCHANGE_MOVES):
    for _state, _next in _table.items():
        _state.moves = _next


class IllegalMove(RuntimeError):
    """A state change the transition table does not allow: a bug in the loop."""


def _move(obj: _Client | _Exchange, new) -> None:
    """Move `obj` (a _Client or an _Exchange) to the state `new`, which its current state must allow."""
    old = obj.state
    if new not in old.moves:
        log.error("relay loop bug: %s cannot move from %s to %s", type(obj).__name__, old.name, new.name)
        raise IllegalMove(f"{type(obj).__name__}: {old.name} -> {new.name}")
    obj.state = new


class _Head:
    """httptools callbacks for one request head. The method, version and keep-alive are read when the head is
    complete: llhttp resets them once the message is."""

    __slots__ = ("parser", "url", "headers", "method", "version", "keep", "complete")

    def __init__(self):
        self.parser: httptools.HttpRequestParser | None = None  # set by the caller, dropped once the head is parsed
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.method = b""
        self.version = ""
        self.keep = False
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        assert parser is not None  # called from its feed_data
        self.method, self.version, self.keep = parser.get_method(), parser.get_http_version(), \
            parser.should_keep_alive()

    def on_message_complete(self) -> None:
        self.complete = True


class _Client:
    """A caller's connection in the loop. Whether it is read is not a state: it is the READ bit of `events`
    (off while too much is buffered ahead, or once the caller ended)."""

    __slots__ = ("sock", "channel", "remote", "listener", "buf", "head_since", "idle_since", "exchange", "out",
                 "out_since", "state", "events", "last_block", "last_base", "last_keep")

    def __init__(self, sock: socket.socket, channel, buf: bytes, listener: str):
        self.sock = sock
        self.channel = channel  # waitress's, detached: its server, address and adjustments serve hand-offs
        self.remote = channel.addr[0]
        self.listener = listener
        self.buf = buf
        self.head_since: float | None = None
        self.idle_since = time.monotonic()
        self.exchange: _Exchange | None = None
        self.out = bytearray()  # answer bytes the caller has not taken yet
        self.out_since = 0.0
        self.state = OPEN
        self.events = 0
        self.last_block: bytes | None = None  # the header lines of the last head the loop served, their environ part, keep-alive
        self.last_base: dict = {}
        self.last_keep = True


class _Exchange:
    """One request relayed to a container and its answer coming back."""

    __slots__ = ("client", "plan", "head", "keep", "up", "reused", "retried", "state", "unsent", "since",
                 "rbuf", "status", "framing", "remaining", "chunks", "up_keep", "head_out")

    def __init__(self, client: _Client, plan: FastForward, head: bytes, keep: bool):
        self.client = client
        self.plan = plan
        self.head = head  # the caller's head, for a hand-off when the container refused the connection
        self.keep = keep  # the caller's connection stays open after this answer
        self.up: _Upstream | None = None
        self.state = WAITING
        # two facts beside the state, not phases of it: `reused`, the socket came from the idle pool (it may have
        # been closed by the container meanwhile); `retried`, the one replacement of such a socket is spent
        self.reused = False
        self.retried = False
        self.unsent = b""
        self.since = time.monotonic()  # the last progress of the upstream leg
        self.rbuf = b""
        self.status: int | None = None  # set once the answer's head is shaped for the caller
        self.framing = NONE  # set with the answer's head
        self.remaining = 0
        self.chunks: ChunkedDecoder | None = None  # set with the chunked framing
        self.up_keep = False
        self.head_out = b""  # the answer's head, sent together with the first body bytes


class _Upstream:
    """A socket to a container, registered with the loop while it carries an exchange (`exchange`) and while it
    rests, watched, in the container's pool (`pool`, domain/upstream.py KeptAliveSockets; `exchange` None then), and
    the events the loop watches on it."""

    __slots__ = ("sock", "pool", "exchange", "events")

    def __init__(self, sock: socket.socket, pool: KeptAliveSockets | None):
        self.sock = sock
        self.pool = pool
        self.exchange: _Exchange | None = None
        self.events = 0
