"""Image calls of the Docker orchestrator (adapters/docker_orchestrator/): inspect, build, pull, tag, remove."""
from __future__ import annotations

from collections.abc import Callable

from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from grokemu.adapters.docker_orchestrator.daemon import DaemonConnection, log, translates_daemon_errors
from grokemu.domain.ports import BuildResult, ImageInfo


@translates_daemon_errors
class ImageCalls(DaemonConnection):
    def inspect_image(self, ref: str) -> ImageInfo | None:
        try:
            attrs = self.client.api.inspect_image(ref)
        except (ImageNotFound, NotFound):
            return None
        except APIError as e:
            if e.status_code == 404:
                return None
            raise
        config = attrs.get("Config") or {}
        ports = sorted(int(p.split("/")[0]) for p in (config.get("ExposedPorts") or {}))
        return ImageInfo(id=attrs["Id"], exposed_ports=ports, labels=config.get("Labels") or {},
                         healthcheck=bool((config.get("Healthcheck") or {}).get("Test")))

    def build_image(self, context_dir: str, tag: str, labels: dict[str, str],
                    on_output: Callable[[str], None] | None = None) -> BuildResult:
        """Build `context_dir` as `tag`; `on_output` gets the build output as it comes (`grokemu dev` streams it)."""
        lines: list[str] = []
        image_id = ""
        try:
            for chunk in self.slow_client.api.build(path=context_dir, tag=tag, labels=labels, rm=True, forcerm=True,
                                               decode=True):
                if "stream" in chunk:
                    lines.append(chunk["stream"])
                    if on_output is not None:
                        on_output(chunk["stream"])
                if "aux" in chunk and "ID" in chunk["aux"]:
                    image_id = chunk["aux"]["ID"]
                if "error" in chunk:
                    lines.append(chunk["error"].rstrip("\n") + "\n")
                    if on_output is not None:
                        on_output(lines[-1])
                    return BuildResult(ok=False, logs="".join(lines))
        except (APIError, DockerException) as e:
            lines.append(f"{e}\n")
            return BuildResult(ok=False, logs="".join(lines))
        return BuildResult(ok=True, logs="".join(lines), image_id=image_id)

    def pull_image(self, ref: str) -> bool:
        try:
            self.slow_client.images.pull(ref)
            return True
        except (APIError, DockerException) as e:
            log.info("pull of %s failed: %s", ref, e)
            return False

    def tag_image(self, source: str, target: str) -> None:
        repository, _, tag = target.rpartition(":")
        if not repository or "/" in tag:
            repository, tag = target, "latest"
        self.client.api.tag(source, repository, tag)

    def remove_image(self, ref: str, untagged_only: bool = False) -> bool:
        """Remove one image by reference or id, never forced (an image a container uses stays): a reference loses
        only that tag. `untagged_only`: only when no tag names it any more (a build that a newer one replaced; the
        same layers may carry someone else's tag). False when nothing was removed."""
        try:
            if untagged_only and (self.client.api.inspect_image(ref).get("RepoTags") or []):
                return False
            self.client.api.remove_image(ref)
            return True
        except (ImageNotFound, NotFound):
            return False
        except APIError as e:
            log.info("image %s not removed: %s", ref, e)
            return False

    def remove_images(self, labels: dict[str, str]) -> int:
        removed = 0
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        for image in self.client.images.list(filters=filters):
            if image.id is None:  # never for an image the daemon lists
                continue
            try:
                self.client.images.remove(image.id, force=True)
                removed += 1
            except APIError as e:
                log.warning("could not remove image %s: %s", image.id, e)
        return removed
