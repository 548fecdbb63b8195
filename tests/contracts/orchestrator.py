"""The Orchestrator contract (house rule 4, after distribution's storage-driver suite): every adapter passes these
same tests, so the in-memory fake behaves like the Docker adapter where the services rely on it.

A test module subclasses OrchestratorContract and provides the fixtures `orch` (the adapter), `base_image` (an
image that can run `python3 -m http.server`) and `labels` (unique to the test run)."""
from __future__ import annotations

import time
import uuid

import pytest

from grokemu.domain.errors import GrokemuError
from grokemu.domain.ports import RunSpec


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


class OrchestratorContract:
    def spec(self, image, labels, **overrides):
        fields = dict(name=f"grokemu-contract-{uuid.uuid4().hex[:8]}", image=image, container_port=8000,
                      labels=labels, env={"HELLO": "world"}, nano_cpus=250_000_000, mem_bytes=128 * 1024 * 1024,
                      shm_bytes=64 * 1024 * 1024)
        fields.update(overrides)
        return RunSpec(**fields)

    def build(self, orch, tmp_path, dockerfile, labels, files=None, tag=None):
        (tmp_path / "Dockerfile").write_text(dockerfile)
        for name, text in (files or {}).items():
            (tmp_path / name).write_text(text)
        tag = tag or f"grokemu-contract/{uuid.uuid4().hex[:8]}:1"
        return tag, orch.build_image(str(tmp_path), tag, labels)

    def test_ping(self, orch):
        assert orch.ping() is True

    def test_unknown_image(self, orch):
        assert orch.inspect_image(f"grokemu-contract/none-{uuid.uuid4().hex}:x") is None

    def test_build_reports_ports_and_labels(self, orch, tmp_path, labels):
        tag, result = self.build(orch, tmp_path, "FROM scratch\nCOPY a.txt /a.txt\nEXPOSE 8000\n", labels,
                                 {"a.txt": "a"})
        assert result.ok, result.logs
        info = orch.inspect_image(tag)
        assert info.exposed_ports == [8000] and info.labels["grokemu.test"] == labels["grokemu.test"]
        assert info.healthcheck is False

    def test_build_failure_keeps_the_output(self, orch, tmp_path, labels):
        tag, result = self.build(orch, tmp_path, "FROM scratch\nCOPY missing.txt /\n", labels)
        assert result.ok is False and "missing.txt" in result.logs
        assert orch.inspect_image(tag) is None

    def test_run_ready_logs_stop_remove(self, orch, base_image, labels):
        running = orch.run(self.spec(base_image, labels))
        try:
            # reachable: a published loopback port (Docker), or the app's own address on a network (Swarm)
            assert running.state == "running" and (isinstance(running.host_port, int)
                                                   or (running.app_ip and running.app_port == 8000))
            assert running.labels["grokemu.test"] == labels["grokemu.test"]
            assert [c.id for c in orch.list_labelled(labels)] == [running.id]
            assert wait_for(lambda: orch.app_ready(orch.inspect(running.id)))
            assert isinstance(orch.logs(running.id, 10), str)
            orch.stop(running.id, timeout=2)
            stopped = orch.inspect(running.id)
            assert stopped.state == "exited" and not orch.app_ready(stopped)
        finally:
            orch.remove(running.id)
        assert orch.inspect(running.id) is None
        assert list(orch.list_labelled(labels)) == []
        orch.remove(running.id)  # removing twice is not an error

    def test_gpu_without_runtime_fails_clearly_and_leaves_nothing(self, orch, base_image, labels):
        with pytest.raises(GrokemuError, match="GPU"):
            orch.run(self.spec(base_image, labels, gpus=1))
        assert list(orch.list_labelled(labels)) == []

    def test_remove_images_by_label(self, orch, tmp_path, labels):
        tag, result = self.build(orch, tmp_path, "FROM scratch\nCOPY a.txt /a.txt\n", labels, {"a.txt": "b"})
        assert result.ok
        assert orch.remove_images(labels) >= 1
        assert orch.inspect_image(tag) is None


    # -- log streams (Orchestrator.stream_logs: `grokemu logs`, services/container_logs.py) ----------------------
    def emit_output(self, orch, running, marker: str) -> None:
        """Make the app in `running` write a log line containing `marker`: the base image's `http.server` logs each
        request it serves (the in-memory fake overrides this)."""
        import urllib.error
        import urllib.request

        host, port = running.endpoint()
        try:
            urllib.request.urlopen(f"http://{host}:{port}/{marker}", timeout=10).read()
        except urllib.error.HTTPError:
            pass  # 404: logged all the same

    @staticmethod
    def collect(stream):
        """Read `stream` on a thread: (the chunks so far, the thread)."""
        import threading

        chunks: list[bytes] = []
        thread = threading.Thread(target=lambda: chunks.extend(stream), daemon=True)
        thread.start()
        return chunks, thread

    def test_stream_logs_tail_and_unknown(self, orch, base_image, labels):
        running = orch.run(self.spec(base_image, labels))
        try:
            assert wait_for(lambda: orch.app_ready(orch.inspect(running.id)))
            marker = f"contract-{uuid.uuid4().hex[:8]}"
            self.emit_output(orch, running, marker)
            assert wait_for(lambda: marker in orch.logs(running.id, 0))
            whole = b"".join(orch.stream_logs(running.id, None, follow=False)).decode()
            assert marker in whole and whole == orch.logs(running.id, 0)
            assert b"".join(orch.stream_logs(running.id, 0, follow=False)) == b""
            last = b"".join(orch.stream_logs(running.id, 1, follow=False)).decode()
            assert marker in last and last.count("\n") == 1
        finally:
            orch.remove(running.id)
        assert list(orch.stream_logs(running.id, None, follow=False)) == []  # gone: nothing, no error

    def test_a_followed_stream_brings_new_output_and_ends_when_closed(self, orch, base_image, labels):
        running = orch.run(self.spec(base_image, labels))
        try:
            assert wait_for(lambda: orch.app_ready(orch.inspect(running.id)))
            stream = orch.stream_logs(running.id, 0, follow=True)
            chunks, thread = self.collect(stream)
            marker = f"contract-{uuid.uuid4().hex[:8]}"
            self.emit_output(orch, running, marker)
            assert wait_for(lambda: marker.encode() in b"".join(chunks)), chunks
            assert thread.is_alive()  # following: waits for more
            stream.close()  # from another thread than the reader's
            thread.join(10)
            assert not thread.is_alive()
        finally:
            orch.remove(running.id)

    def test_a_followed_stream_ends_when_the_container_stops(self, orch, base_image, labels):
        if orch.keeps_stopped:
            return  # a Swarm service scaled to 0 keeps its log stream; services/container_logs.py ends the follow
        running = orch.run(self.spec(base_image, labels))
        try:
            assert wait_for(lambda: orch.app_ready(orch.inspect(running.id)))
            chunks, thread = self.collect(orch.stream_logs(running.id, None, follow=True))
            orch.stop(running.id, timeout=2)
            thread.join(20)
            assert not thread.is_alive()
            assert all(isinstance(c, bytes) for c in chunks)
        finally:
            orch.remove(running.id)


class DaemonContract(OrchestratorContract):
    """The contract against a real Docker daemon (the Docker and Swarm adapters): unique labels whose containers and
    images are removed afterwards, and a base image built from python:3.12-slim."""

    @pytest.fixture
    def labels(self, orch):
        labels = {"grokemu.test": uuid.uuid4().hex}
        yield labels
        for c in orch.list_labelled(labels):
            orch.remove(c.id)
        orch.remove_images(labels)

    @pytest.fixture
    def base_image(self, orch, tmp_path, labels):
        import subprocess

        from tests.helpers import require

        found = subprocess.run(["docker", "image", "inspect", "python:3.12-slim"], capture_output=True)
        require(found.returncode == 0, "the python:3.12-slim image (scripts/ensure-base-image.sh)")
        tag, result = self.build(orch, tmp_path, 'FROM python:3.12-slim\nEXPOSE 8000\n'
                                 'CMD ["python3", "-m", "http.server", "8000"]\n', labels)
        assert result.ok, result.logs
        return tag

    def test_an_oom_kill_is_reported_with_the_limit(self, orch, base_image, labels, tmp_path):
        # listens (so a Swarm start sees it running), then allocates past its 32 MB limit
        app = ("import socket, time\ns = socket.socket(); s.bind(('0.0.0.0', 8000)); s.listen()\ntime.sleep(2)\n"
               "held = [b'1' * (8 << 20) for _ in range(50)]\n")
        context = tmp_path / "oom"
        context.mkdir()
        tag, result = self.build(orch, context, f'FROM {base_image}\nCOPY app.py /app.py\nCMD ["python3", "/app.py"]\n',
                                 labels, {"app.py": app})
        assert result.ok, result.logs
        running = orch.run(self.spec(tag, labels, mem_bytes=32 * 1024 * 1024))
        try:
            assert wait_for(lambda: orch.inspect(running.id).state == "exited", timeout=60)
            ended = orch.inspect(running.id)
            assert (ended.oom_killed, ended.exit_code, ended.mem_limit) == (True, 137, 32 * 1024 * 1024)
        finally:
            orch.remove(running.id)
