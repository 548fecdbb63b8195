"""The waitress internals grokemu/server/ relies on, checked against the installed waitress.

server/ subclasses waitress's HTTPChannel, WSGITask and TcpWSGIServer, copies HTTPChannel.received, and reads
attributes no public API offers (the channel behind `environ["waitress.client_disconnected"]`, its socket, buffers
and locks). pyproject.toml pins waitress to the versions checked here; a new waitress that renames or reshapes one
of these fails this test with the name of what changed, rather than the server failing at run time.
"""
from __future__ import annotations

import inspect
import socket
from importlib.metadata import version

import pytest
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import MultiSocketServer, TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher, WSGITask

from grokemu.server.channel import GrokemuChannel

CHECKED = ((3, 0, 1), (3, 1))  # [from, to): pyproject.toml's waitress>=3.0.1,<3.1

# (attribute, kind): "method" must be callable on the class, "attr" must exist on the instance
CHANNEL = [
    ("received", "method"), ("readable", "method"), ("writable", "method"), ("handle_write", "method"),
    ("handle_read", "method"), ("handle_close", "method"), ("del_channel", "method"), ("send_continue", "method"),
    ("service", "method"), ("_flush_some", "method"), ("_flush_exception", "method"),
    ("_flush_outbufs_below_high_watermark", "method"),
    ("socket", "attr"), ("server", "attr"), ("adj", "attr"), ("addr", "attr"), ("connected", "attr"),
    ("will_close", "attr"), ("close_when_flushed", "attr"), ("requests", "attr"), ("request", "attr"),
    ("requests_lock", "attr"), ("outbuf_lock", "attr"), ("outbufs", "attr"), ("current_outbuf_count", "attr"),
    ("total_outbufs_len", "attr"), ("sent_continue", "attr"), ("last_activity", "attr"), ("parser_class", "attr"),
    ("task_class", "attr"),
]
REQUEST = ["received", "close", "headers_finished", "completed", "empty", "error", "path", "command", "chunked",
           "content_length", "expect_continue"]
SERVER = [
    ("add_task", "method"), ("maintenance", "method"), ("readable", "method"), ("handle_accept", "method"),
    ("accept", "method"), ("set_socket_options", "method"), ("fix_addr", "method"), ("pull_trigger", "method"),
    ("log_info", "method"), ("close", "method"), ("run", "method"),
    ("application", "attr"), ("adj", "attr"), ("active_channels", "attr"), ("next_channel_cleanup", "attr"),
    ("accepting", "attr"), ("_map", "attr"), ("effective_host", "attr"), ("effective_port", "attr"),
    ("channel_class", "attr"),
]
ADJUSTMENTS = ["threads", "max_request_body_size", "ident", "asyncore_use_poll", "connection_limit",
               "channel_timeout", "cleanup_interval", "inbuf_overflow", "recv_bytes", "outbuf_high_watermark"]


def _app(environ, start_response):
    start_response("200 OK", [])
    return [b""]


@pytest.fixture
def waitress_objects():
    listening = socket.create_server(("127.0.0.1", 0))
    ours, theirs = socket.socketpair()
    adj = Adjustments(asyncore_use_poll=True)
    dispatcher = ThreadedTaskDispatcher()
    socket_map: dict = {}
    server = TcpWSGIServer(_app, socket_map, True, listening, dispatcher=dispatcher, adj=adj, bind_socket=False,
                           sockinfo=(listening.family, listening.type, listening.proto, listening.getsockname()))
    channel = HTTPChannel(server, ours, ("127.0.0.1", 1234), adj, map=socket_map)
    request = HTTPRequestParser(adj)
    request.received(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
    yield server, channel, request
    channel.del_channel()
    ours.close()
    theirs.close()
    server.close()


def _check(obj, name: str, kind: str, where: str) -> None:
    if not hasattr(obj, name):
        pytest.fail(f"waitress {version('waitress')}: {where}.{name} is gone; grokemu/server/ uses it")
    if kind == "method" and not callable(getattr(obj, name)):
        pytest.fail(f"waitress {version('waitress')}: {where}.{name} is no longer a method")


def test_installed_waitress_is_a_checked_version():
    installed = tuple(int(p) for p in version("waitress").split(".")[:3] if p.isdigit())
    assert CHECKED[0] <= installed < CHECKED[1], (
        f"waitress {version('waitress')} is outside the versions grokemu/server/ was checked against "
        f"(>=3.0.1,<3.1): re-check the internals below, then widen the pin in pyproject.toml")


def test_channel_internals(waitress_objects):
    _, channel, _ = waitress_objects
    for name, kind in CHANNEL:
        _check(channel, name, kind, "HTTPChannel")
    assert isinstance(channel.requests, list), "HTTPChannel.requests is no longer a list"
    assert isinstance(channel.outbufs, list) and hasattr(channel.outbufs[-1], "append"), \
        "HTTPChannel.outbufs is no longer a list of buffers with append()"
    assert hasattr(channel.outbuf_lock, "wait"), "HTTPChannel.outbuf_lock is no longer a Condition (wait())"
    assert channel.parser_class is HTTPRequestParser, "HTTPChannel.parser_class is no longer HTTPRequestParser"
    assert list(inspect.signature(HTTPChannel.received).parameters) == ["self", "data"], \
        "HTTPChannel.received(data) changed its signature (GrokemuChannel.received copies it)"
    assert list(inspect.signature(HTTPChannel.__init__).parameters) == ["self", "server", "sock", "addr", "adj",
                                                                         "map"], \
        "HTTPChannel.__init__(server, sock, addr, adj, map) changed (GrokemuServer.handle_accept calls it)"
    assert issubclass(GrokemuChannel, HTTPChannel)


def test_request_parser_internals(waitress_objects):
    _, _, request = waitress_objects
    for name in REQUEST:
        _check(request, name, "method" if name in ("received", "close") else "attr", "HTTPRequestParser")
    assert request.headers_finished and not request.completed, \
        "HTTPRequestParser no longer reports a finished head before the body"
    assert request.path == "/x" and request.command == "POST", "HTTPRequestParser.path / .command changed"
    assert request.content_length == 3 and request.chunked is False, "HTTPRequestParser.content_length changed"
    assert request.expect_continue is True, "HTTPRequestParser.expect_continue changed"


def test_task_environment_leads_back_to_the_channel(waitress_objects):
    _, channel, request = waitress_objects
    task = WSGITask(channel, request)
    assert task.channel is channel, "WSGITask(channel, request).channel changed"
    environ = task.get_environment()
    disconnected = environ.get("waitress.client_disconnected")
    assert disconnected is not None, "environ['waitress.client_disconnected'] is gone (the takeover finds the " \
                                     "connection through it)"
    assert getattr(disconnected, "__self__", None) is channel, \
        "environ['waitress.client_disconnected'] is no longer a bound method of the channel"


def test_server_internals(waitress_objects):
    server, _, _ = waitress_objects
    for name, kind in SERVER:
        _check(server, name, kind, "TcpWSGIServer")
    assert isinstance(server.active_channels, dict), "TcpWSGIServer.active_channels is no longer a dict"
    params = inspect.signature(TcpWSGIServer.__init__).parameters
    for name in ("application", "map", "_start", "_sock", "dispatcher", "adj", "sockinfo", "bind_socket"):
        assert name in params, f"TcpWSGIServer.__init__ lost its parameter {name!r} (GrokemuServer passes it)"
    assert list(inspect.signature(TcpWSGIServer.maintenance).parameters) == ["self", "now"], \
        "TcpWSGIServer.maintenance(now) changed its signature"
    assert len(inspect.signature(TcpWSGIServer.add_task).parameters) == 2, \
        "TcpWSGIServer.add_task(channel) changed its signature (GrokemuChannel.received calls it with the channel)"
    ms = list(inspect.signature(MultiSocketServer.__init__).parameters)
    assert ms[:6] == ["self", "map", "adj", "effective_listen", "dispatcher", "log_info"], \
        f"MultiSocketServer.__init__ changed its parameters: {ms}"


def test_adjustments_and_dispatcher():
    for name in ADJUSTMENTS:
        assert hasattr(Adjustments(), name), f"waitress Adjustments lost the setting {name!r} (create_server sets it)"
    assert callable(getattr(ThreadedTaskDispatcher, "set_thread_count", None)), \
        "ThreadedTaskDispatcher.set_thread_count is gone"


def test_the_trigger_internals_the_in_process_stop_uses():
    """stop_server (server/serve.py `_run_on_loop`) queues the closing on waitress's trigger and writes to its pipe
    while holding `trigger.lock`, the lock under which the loop runs thunks, so the loop cannot close the pipe
    between the queueing and the write; a closed trigger gets no write at all."""
    from waitress import trigger as waitress_trigger

    from grokemu.server.serve import _run_on_loop

    trigger = waitress_trigger.trigger({})
    for name in ("lock", "thunks", "_closed", "_physical_pull", "handle_read", "close"):
        _check(trigger, name, "method" if name in ("_physical_pull", "handle_read", "close") else "attr", "trigger")
    pulls, ran = [], []
    physical_pull = trigger._physical_pull
    trigger._physical_pull = lambda: (pulls.append(trigger.lock.locked()), physical_pull())
    _run_on_loop(trigger, lambda: ran.append(1))
    assert pulls == [True] and ran == []  # written under the lock; run by the loop, not the caller
    trigger.handle_read()  # what the loop does on the pipe's byte
    assert ran == [1] and trigger.thunks == []
    trigger.close()
    _run_on_loop(trigger, lambda: ran.append(2))  # would be os.write on a closed descriptor
    assert pulls == [True] and ran == [1] and trigger.thunks == []
