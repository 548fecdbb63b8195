"""pytest plugin (entry point `pytest11: grokemu`): the test kit for plugin authors, and a `grokemu up` subprocess.

    def test_square(grokemu):
        grokemu.publish("path/to/my-package")            # upload as `grok publish` does, wait until images are ready
        squares = grokemu.container("squares")            # by id, container, docker folder, package or image name
        squares.start()
        assert squares.fetch("/square?number=4").json() == {"result": 16.0}  # through fetchProxy
        with squares.websocket("/ws") as ws:                # through webSocketProxy (after its CONNECTED frame)
            ws.send("hi"); assert ws.recv() == "hi"
        print(squares.logs()); squares.stop()
        assert grokemu.requests(squares)[0]["kind"] == "websocket"  # the request inspector's entries, newest first
        assert grokemu.call("QueueDemo:add", a=40, b=2) == 42    # a Python function in a Celery worker

`grokemu` is session-scoped. It uses a running grokemu when given one (`--grokemu-url URL` or `GROKEMU_URL`, e.g. the
compose stand at http://localhost:8080; `--grokemu-key` / `GROKEMU_KEY` for the dev key, default admin), otherwise
it starts one on a free port with a temporary data directory and its own instance label: `grokemu up` as a
subprocess, or, with `--grokemu-in-process` (or `GROKEMU_IN_PROCESS=1`), the same app and server on a thread of the
test process (ThreadedGrokemu, moto's ThreadedMotoServer pattern), which is up in milliseconds. Teardown removes
what the session published (its images and containers, and their Docker images); a server it started is reset and
stopped. For tests of grokemu itself: `grokemu_server` (function-scoped) is a bare `grokemu up` subprocess,
`grokemu_inprocess` (function-scoped) a bare ThreadedGrokemu.

The kit needs only the standard library; `.websocket()` needs `websocket-client`.

This module is the plugin (its option, its fixtures); the kit itself is in kit.py (Grokemu, ContainerHandle,
Response) and the servers it starts in servers.py (GrokemuProcess, ThreadedGrokemu); every name is importable
from here.
"""
from __future__ import annotations

import os

import pytest

from grokemu.testing.kit import ContainerHandle, Grokemu, Response
from grokemu.testing.servers import GrokemuProcess, ThreadedGrokemu


def pytest_addoption(parser):
    group = parser.getgroup("grokemu")
    group.addoption("--grokemu-url", default=None,
                    help="use the grokemu running at this URL (default $GROKEMU_URL; else start one)")
    group.addoption("--grokemu-key", default=None, help="dev key for it (default $GROKEMU_KEY or admin)")
    group.addoption("--grokemu-in-process", action="store_true", default=None,
                    help="when starting grokemu for the session, run it on a thread of the test process instead of "
                         "as a `grokemu up` subprocess (default $GROKEMU_IN_PROCESS=1)")


KIT_STOP_TIMEOUT = 2.0  # seconds between SIGTERM and SIGKILL for the kit's own grokemu (Docker's default: 10)


@pytest.fixture(scope="session")
def grokemu(request, tmp_path_factory):
    """The test kit: a running grokemu (`--grokemu-url` / `GROKEMU_URL`) or one started for the session."""
    url = request.config.getoption("--grokemu-url") or os.environ.get("GROKEMU_URL")
    key = request.config.getoption("--grokemu-key") or os.environ.get("GROKEMU_KEY") or "admin"
    in_process = request.config.getoption("--grokemu-in-process") or os.environ.get("GROKEMU_IN_PROCESS") == "1"
    process: ThreadedGrokemu | GrokemuProcess | None = None
    if not url:
        # a test suite starts and stops containers often: a short grace, unless GROKEMU_STOP_TIMEOUT says otherwise
        grace = None if "GROKEMU_STOP_TIMEOUT" in os.environ else KIT_STOP_TIMEOUT
        if in_process:
            server = ThreadedGrokemu(tmp_path_factory.mktemp("grokemu"), dev_keys=(key,)) if grace is None else \
                ThreadedGrokemu(tmp_path_factory.mktemp("grokemu"), dev_keys=(key,), stop_timeout=grace)
            process = server.start()
        else:
            flags = [f"--stop-timeout={grace:g}"] if grace is not None else []
            process = GrokemuProcess(tmp_path_factory.mktemp("grokemu"), "--dev-key", key, *flags).start()
        url = process.url
    kit = Grokemu(url, key, process)
    if not kit.client.healthy():
        pytest.fail(f"no grokemu answers at {url}", pytrace=False)
    yield kit
    try:
        kit.cleanup()
    finally:
        if process is not None:
            process.close(key)


@pytest.fixture
def grokemu_server(tmp_path_factory):
    server = GrokemuProcess(tmp_path_factory.mktemp("grokemu"))
    server.start()
    yield server
    server.close()


@pytest.fixture
def grokemu_inprocess(tmp_path_factory):
    """A bare grokemu on a thread of the test process (ThreadedGrokemu) on the host's Docker daemon: reset and
    stopped afterwards."""
    server = ThreadedGrokemu(tmp_path_factory.mktemp("grokemu")).start()
    yield server
    server.close()


__all__ = ["ContainerHandle", "Grokemu", "GrokemuProcess", "Response", "ThreadedGrokemu", "grokemu",
           "grokemu_inprocess", "grokemu_server"]
