"""`grokemu dev PACKAGE_DIR` (docs/cli.md §5): publish a package as `grok publish` does in debug mode, start its
containers, then watch the folder and keep them current.

Images are built here, with the Docker daemon this machine's docker CLI talks to (the daemon grokemu runs containers
on), and tagged `datagrok/<image>:<login>` as the grok CLI tags a debug build (docs/grok-publish.md §2); the upload
names them in image.json. The replacement itself is the server's: a debug upload puts the package's images back to
validation, grokemu finds the new build in the daemon, and the spawner replaces a running container whose image id
changed (services/spawner/service.py `image_ready`): the same DockerContainer entity, so plugin code and open pages keep
their id, and proxied requests that arrive meanwhile wait for the new container. A build that fails uploads
nothing, so the server keeps the files and the image of the container that serves. The decisions are in
grokemu/dev_loop.py.
"""
from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol, TextIO

from grokemu.client import Client, ClientError, PublishFailed, api_message, package_files
from grokemu.dev_loop import (
    Debouncer,
    Note,
    build_step,
    container_line,
    delta,
    digest,
    docker_dir_of,
    docker_dirs_on_disk,
    image_json_path,
    plan_changes,
    upload_after_builds,
    utc_string,
)
from grokemu.domain.model import container_name, image_docker_name
from grokemu.domain.ports import BuildResult

STOPPED = ("stopped by user", "stopped by system")


class Builder(Protocol):
    """What dev needs of Docker (adapters/docker_orchestrator/ DockerOrchestrator has it)."""

    def build_image(self, context_dir: str, tag: str, labels: dict[str, str],
                    on_output: Callable[[str], None] | None = None) -> BuildResult: ...

    def remove_image(self, ref: str, untagged_only: bool = False) -> bool: ...

    def tag_image(self, source: str, target: str) -> None: ...


class Board:
    """The output: log lines, and under them one status line per container. On a terminal the status lines are
    rewritten in place (ANSI: cursor up, clear to the end); otherwise every line is appended, and a status line is
    printed again only when it changed, so a log file or a pipe reads as a plain record."""

    def __init__(self, out: TextIO, tty: bool | None = None):
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self._lines: dict[str, str] = {}
        self._printed: dict[str, str] = {}
        self._drawn = 0

    def _clear(self) -> None:
        if self.tty and self._drawn:
            self.out.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def _draw(self) -> None:
        if not self.tty:
            return
        width = max(20, shutil.get_terminal_size().columns - 1)  # a wrapped line would throw the count off
        for line in self._lines.values():
            self.out.write(line[:width] + "\n")
        self._drawn = len(self._lines)

    def log(self, text: str) -> None:
        self._clear()
        for line in text.rstrip("\n").splitlines() or [""]:
            self.out.write(line + "\n")
        self._draw()
        self.out.flush()

    def show(self, lines: dict[str, str]) -> None:
        """The status lines, by key (the container's name)."""
        self._lines = dict(lines)
        if self.tty:
            self._clear()
            self._draw()
        else:
            for key, line in lines.items():
                if self._printed.get(key) != line:
                    self.out.write(line + "\n")
                    self._printed[key] = line
        self.out.flush()


class DevSession:
    def __init__(self, client: Client, root: str | Path, docker: Builder, board: Board, *, quiet: float = 0.05,
                 wait_timeout: float = 300, clock: Callable[[], float] = time.monotonic):
        self.client = client
        self.root = Path(root).resolve()
        if not (self.root / "package.json").is_file():
            raise ClientError(f"{self.root} is not a package folder (no package.json)")
        self.package: str = json.loads((self.root / "package.json").read_text())["name"]
        self.docker = docker
        self.board = board
        self.quiet = quiet
        self.wait_timeout = wait_timeout
        self.clock = clock
        self.tag = "admin"
        self.sent: dict[str, str] = {}  # path -> sha256 of what the server has from us
        self.built: dict[str, str] = {}  # docker folder -> the image id of its last good build
        self.notes: dict[str, Note] = {}  # docker folder -> build running / failed
        self.builds = 0
        self.image_ids: list[str] = []  # every image dev built (`--clean` removes them, older builds too)
        self._superseded: dict[str, str] = {}  # docker folder -> the build its new one replaces, removed once it has
        self._last_refresh = 0.0
        self._now = 0.0  # the server's clock at the last snapshot (status lines' ages)

    # -- names ------------------------------------------------------------------------------------------------------
    def image_ref(self, docker_dir: str) -> str:
        return f"datagrok/{image_docker_name(self.package, docker_dir)}:{self.tag}"

    def _ignore(self) -> list[str]:
        npmignore = self.root / ".npmignore"
        return npmignore.read_text().splitlines() if npmignore.is_file() else []

    def _failing(self) -> list[str]:
        return [d for d, n in self.notes.items() if n.failed]

    # -- the steps --------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """The first publish: every image built, the package uploaded, its images waited for, its containers run."""
        self.tag = self.client.json("GET", "users/current")["login"]  # the debug tag (docs/grok-publish.md R3)
        self.board.log(f"grokemu dev: {self.package} ({self.root}) on {self.client.url}, images tagged "
                       f"datagrok/<image>:{self.tag}")
        for d in docker_dirs_on_disk(self.root):
            self.build(d)
        self.publish()
        for c in self.containers():
            if c["status"] not in ("started", "checking", "starting", "pending start"):
                self._run(c)
        self.refresh(force=True)

    def build(self, docker_dir: str) -> bool:
        """Build one image, its output streamed; True when it built. A failure is noted on the folder's status line
        and leaves the image that serves alone."""
        note = self.notes.setdefault(docker_dir, Note())
        ref = self.image_ref(docker_dir)
        context = self.root / "dockerfiles" if docker_dir == "." else self.root / "dockerfiles" / docker_dir
        began = self.clock()
        self.builds += 1
        self.board.log(f"build {ref} from {context.relative_to(self.root)}/")

        def output(text: str) -> None:
            for line in text.splitlines():
                if line.strip():
                    step = build_step(line)
                    if step:
                        note.building = f"{step}, {self.clock() - began:.1f} s"
                    self.board.log(f"  [{docker_dir}] {line.rstrip()}")

        # no labels: the classic builder adds each as a build step of its own, a container run apiece
        result = self.docker.build_image(str(context), ref, {}, on_output=output)
        seconds = self.clock() - began
        note.building = ""
        if result.ok:
            previous = self.built.get(docker_dir)
            if previous and previous != result.image_id:
                self._superseded[docker_dir] = previous
            self.built[docker_dir] = result.image_id
            self.image_ids.append(result.image_id)
            note.failed = ""
            self.board.log(f"built {ref} in {seconds:.2f} s ({result.image_id[:19]})")
            return True
        reason = next((line for line in reversed(result.logs.splitlines()) if line.strip()), "the build failed")
        note.failed = f"the build failed: {reason[:200]}"
        self.board.log(f"build of {ref} FAILED after {seconds:.2f} s; the previous container keeps serving. "
                       f"Build log:\n{result.logs.rstrip()}")
        return False

    def publish(self) -> None:
        """One debug upload: the files that changed since the last (a delta; the server keeps the rest), an
        image.json per image built, timestamps.json as the grok CLI writes it. Then its images are waited for."""
        files = package_files(self.root)
        dirs = docker_dirs_on_disk(self.root)
        failing = self._failing()
        current = {p: digest(data) for p, data in files.items()}
        changed = delta(current, self.sent, dirs, failing)
        body: dict[str, bytes] = {p: files[p] for p in changed}
        for d in dirs:
            if d in self.built and d not in failing:
                body[image_json_path(d)] = json.dumps({"image": self.image_ref(d), "fallback": False},
                                                      indent=2).encode()
        stamps = {p: utc_string((self.root / p).stat().st_mtime) for p in files
                  if not set(failing).intersection(docker_dir_of(p, dirs))}
        body["timestamps.json"] = json.dumps(stamps).encode()
        began = self.clock()
        try:
            result = self.client.upload(self.package, body)
        except ClientError as e:
            self.board.log(f"upload of {self.package} failed: {e}")
            return
        for p in changed:
            self.sent[p] = current[p]
        self.board.log(f"uploaded {self.package}: {len(changed)} changed file(s) (debug delta) in "
                       f"{self.clock() - began:.2f} s")
        ids = [i["id"] for i in (result or {}).get("dockerImages") or []]
        if ids:
            try:
                self.client.wait_images(self.package, self.wait_timeout, ids=ids)
            except PublishFailed as e:
                self.board.log(f"grokemu: {e}\n{e.logs}")
            except ClientError as e:
                self.board.log(f"grokemu: {e}")

    def handle(self, changed: Iterable[str]) -> None:
        """One settled batch of saves: rebuild the images it touches, upload when there is something to send, then
        wait until each rebuilt container runs its new image."""
        paths = sorted(changed)
        plan = plan_changes(paths, docker_dirs_on_disk(self.root), self._ignore())
        if not plan:
            return
        began = self.clock()
        shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
        self.board.log(f"changed: {shown}")
        built = {d: self.build(d) for d in plan.rebuild}
        if not upload_after_builds(plan, built):
            self.board.log("nothing uploaded: the build failed and nothing else changed")
            self.refresh(force=True)
            self.board.log(f"up to date, {self.clock() - began:.2f} s after the save")
            return
        # a started container is replaced live first (the fetchProxy answer changes without waiting for the upload
        # or a stop); the upload then finds the build already running and replaces nothing
        live = {d for d, ok in built.items() if ok and self.replace_live(d)}
        built = {d: ok and not self.notes[d].failed for d, ok in built.items()}
        if not upload_after_builds(plan, built):  # the new container failed and nothing else changed
            self.refresh(force=True)
            self.board.log(f"up to date, {self.clock() - began:.2f} s after the save (nothing uploaded)")
            return
        self.publish()
        for c in self.containers():  # a docker folder that is new (or built for the first time) gets run
            if c["status"] in STOPPED and not (c.get("grokemu") or {}).get("runningImageId"):
                self._run(c)
        for d, ok in built.items():
            if ok and d not in live and not self.notes[d].failed:
                self.wait_replaced(d)
        self.refresh(force=True)
        self.board.log(f"up to date, {self.clock() - began:.2f} s after the save")

    def replace_live(self, docker_dir: str) -> bool:
        """Ask grokemu to run the new build beside the container that serves and switch the entity over to it
        (services/spawner/live_replace.py `replace_image`). True when that settled it (done, or the new container
        failed and the old one still serves: then the folder counts as failing, so no upload sends its files); False
        when the container is not started or cannot be replaced live (the upload's validation replaces it instead)."""
        name = container_name(self.package, docker_dir)
        c = next((c for c in self.containers() if c["name"] == name), None)
        if c is None or c["status"] != "started":
            return False
        began = self.clock()
        try:
            replaced = self.client.replace(c["id"], self.image_ref(docker_dir))
        except ClientError as e:
            if e.status in (400, 409) or e.status == 0:
                return False
            why = api_message(e.body.encode())
            self.notes[docker_dir].failed = f"its new container failed: {why[:200]}"
            self.board.log(f"{name}: the new build did not come up, the previous container keeps serving: {why}")
            serving = (c.get("grokemu") or {}).get("runningImageId")
            if serving:  # the tag back on what serves: a validation (any later upload) must not pick the broken one
                broken, self.built[docker_dir] = self.built[docker_dir], serving
                self._superseded.pop(docker_dir, None)
                self.docker.tag_image(serving, self.image_ref(docker_dir))
                self.docker.remove_image(broken, untagged_only=True)
            return True
        self.board.log(f"{name}: runs {self.built[docker_dir][:19]}, ready {self.clock() - began:.2f} s after the "
                       f"build, replaced live (container id {replaced['id']}, unchanged)")
        old = self._superseded.pop(docker_dir, None)
        if old:  # no container runs it any more: one dangling image per save would pile up
            self.docker.remove_image(old, untagged_only=True)
        return True

    def wait_replaced(self, docker_dir: str) -> None:
        """Until the folder's container runs the new build (started), or is in error, or is stopped (its next start
        runs the new image)."""
        name, image_id = container_name(self.package, docker_dir), self.built[docker_dir]
        began = self.clock()
        deadline = began + self.wait_timeout
        while True:
            c = next((c for c in self.containers() if c["name"] == name), None)
            status = c["status"] if c else "missing"
            if c and status == "started" and (c.get("grokemu") or {}).get("runningImageId") == image_id:
                self.board.log(f"{name}: runs {image_id[:19]}, ready {self.clock() - began:.2f} s after the upload "
                               f"(container id {c['id']}, unchanged)")
                old = self._superseded.pop(docker_dir, None)
                if old:  # no container runs it any more: one dangling image per save would pile up
                    self.docker.remove_image(old, untagged_only=True)
                return
            if status == "error":
                self.board.log(f"{name}: error: {c.get('errorMessage') if c else ''}")
                return
            if status in STOPPED:
                self.board.log(f"{name}: {status}; its next start runs the new image")
                return
            if self.clock() > deadline:
                self.board.log(f"{name}: still {status} after {self.wait_timeout:g} s")
                return
            time.sleep(0.05)

    def _run(self, c: dict) -> None:
        try:
            self.client.run(c["id"])
        except ClientError as e:
            self.board.log(f"{c['name']} did not start: {e}")

    # -- the status lines -------------------------------------------------------------------------------------------
    def containers(self) -> list[dict[str, Any]]:
        snapshot = self.client.snapshot()
        self._now = snapshot["now"]
        return [c for c in snapshot["containers"] if (c.get("package") or {}).get("name") == self.package]

    def refresh(self, force: bool = False) -> None:
        if not force and self.clock() - self._last_refresh < 1.0:
            return
        self._last_refresh = self.clock()
        try:
            found = self.containers()
        except ClientError as e:
            self.board.show({"": f"grokemu unreachable: {e}"})
            return
        by_name = {container_name(self.package, d): self.notes.get(d) for d in self.notes}
        now = self._now if self.board.tty else None
        self.board.show({c["name"]: container_line(c, self.client.proxy_url(c["id"]), now, by_name.get(c["name"]))
                         for c in sorted(found, key=lambda c: c["name"])})

    # -- watching ---------------------------------------------------------------------------------------------------
    def watch(self, stop: Any = None) -> None:
        """Watch the folder until Ctrl-C (KeyboardInterrupt) or `stop` (a threading.Event) is set. watchfiles groups
        saves that come within 50 ms; the debouncer waits `quiet` more (woken every 25 ms), so a burst is one batch."""
        import watchfiles

        debouncer = Debouncer(self.quiet)
        self.board.log(f"watching {self.root} (Ctrl-C stops watching and leaves the stand as it is)")
        for changes in watchfiles.watch(self.root, step=50, rust_timeout=25, yield_on_timeout=True,
                                        stop_event=stop, raise_interrupt=True):
            now = self.clock()
            debouncer.add(self._relative(p for _, p in changes), now)
            batch = debouncer.take(now)
            if batch:
                self.handle(batch)
            self.refresh()

    def _relative(self, paths: Iterable[str]) -> list[str]:
        found = []
        for p in paths:
            try:
                found.append(Path(p).resolve().relative_to(self.root).as_posix())
            except ValueError:
                continue
        return found

    def clean(self) -> None:
        """`--clean`: what dev published goes: the package's images and containers (removed from Docker), and the
        images dev built."""
        try:
            self.client.delete_package(self.package)
        except ClientError as e:
            self.board.log(f"clean: {e}")
        # its tags first (an image someone else also tagged keeps that tag), then the builds no tag names any more
        removed = sum(self.docker.remove_image(self.image_ref(d)) for d in self.built)
        removed += sum(self.docker.remove_image(i, untagged_only=True) for i in dict.fromkeys(self.image_ids))
        self.board.log(f"clean: {self.package}'s images and containers deleted, {removed} local image(s) and tag(s) "
                       "removed")
