"""The Orchestrator of an app built without one (create_app with no orchestrator: tests of the API and the registry
alone): a null object, so "no Docker" is one adapter instead of an `is None` branch in every service.

It answers as an unreachable daemon does where the callers look: `ping()` is False, and every service asks `ping()`
before it uses the daemon (or reports "Docker daemon unreachable" without it). Questions get the answers of a daemon
with nothing in it (no image, no container, no logs, nothing removed); orders that would need a daemon to carry them
out raise DockerUnavailable, the 503 the Docker adapter raises when its daemon cannot be reached.
"""
from __future__ import annotations

from collections.abc import Iterator

from grokemu.domain.errors import DockerUnavailable
from grokemu.domain.ports import BuildResult, ImageInfo, RunningContainer, RunSpec

MESSAGE = "Docker is not available: this grokemu has no container engine"


class NoDaemon:
    keeps_stopped = False

    def ping(self) -> bool:
        return False

    # images
    def inspect_image(self, ref: str) -> ImageInfo | None:
        return None

    def build_image(self, context_dir: str, tag: str, labels: dict[str, str]) -> BuildResult:
        raise DockerUnavailable(MESSAGE)

    def pull_image(self, ref: str) -> bool:
        return False

    def tag_image(self, source: str, target: str) -> None:
        raise DockerUnavailable(MESSAGE)

    def remove_images(self, labels: dict[str, str]) -> int:
        return 0

    def remove_networks(self, labels: dict[str, str]) -> int:
        return 0

    # containers
    def run(self, spec: RunSpec) -> RunningContainer:
        raise DockerUnavailable(MESSAGE)

    def inspect(self, container_id: str) -> RunningContainer | None:
        return None

    def stop(self, container_id: str, timeout: float = 10) -> None:
        raise DockerUnavailable(MESSAGE)

    def remove(self, container_id: str) -> None:
        raise DockerUnavailable(MESSAGE)

    def logs(self, container_id: str, tail: int) -> str:
        return ""

    def stream_logs(self, container_id: str, tail: int | None, follow: bool) -> _NoLogs:
        return _NoLogs()

    def list_labelled(self, labels: dict[str, str]) -> list[RunningContainer]:
        return []

    def app_ready(self, container: RunningContainer) -> bool:
        return False


class _NoLogs:
    """The log stream of a container that is not there: empty (the port's answer for an unknown container)."""

    def __iter__(self) -> Iterator[bytes]:
        return iter(())

    def close(self) -> None:
        pass
