"""The decisions of `grokemu dev` (docs/cli.md §5), as pure functions and one clock-driven debouncer, so that they can
be unit-tested without files, Docker or a server: which saved paths rebuild which image and which re-upload the
package, when a burst of saves is over, which files a debug delta carries, and how a container's status line
reads. grokemu/dev_session.py runs them against the folder, the Docker daemon and grokemu.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path

from grokemu.client import ALWAYS_SKIPPED, ignored


def docker_dir_of(rel: str, docker_dirs: Iterable[str]) -> list[str]:
    """The docker folders whose build context holds `rel`: `dockerfiles/<dir>/...` is `<dir>`'s; a root
    `dockerfiles/Dockerfile` (".") builds from all of dockerfiles/, so it holds every path under it."""
    dirs = set(docker_dirs)
    parts = rel.split("/")
    if parts[0] != "dockerfiles" or len(parts) < 2:
        return []
    found = [parts[1]] if len(parts) > 2 and parts[1] in dirs else []
    if "." in dirs:
        found.append(".")
    return found


@dataclass(frozen=True)
class Plan:
    """What one settled batch of saves asks for: the images to rebuild, and whether other files changed."""

    rebuild: tuple[str, ...] = ()
    upload: bool = False

    def __bool__(self) -> bool:
        return bool(self.rebuild or self.upload)


def plan_changes(changed: Iterable[str], docker_dirs: Iterable[str], ignore: Iterable[str] = ()) -> Plan:
    """Saved paths (package-relative, POSIX) → a Plan. A path in a docker folder rebuilds that folder's image (its
    files reach the server with the upload that follows a good build); any other path re-uploads the package;
    ignored paths (ALWAYS_SKIPPED, .npmignore) change nothing. `.npmignore` itself re-uploads: it changes what an
    upload carries."""
    dirs = list(docker_dirs)
    patterns = [*ALWAYS_SKIPPED, *ignore]
    rebuild: set[str] = set()
    upload = False
    for rel in changed:
        if ignored(rel, patterns):
            continue
        owners = docker_dir_of(rel, dirs)
        if owners:
            rebuild.update(owners)
        else:
            upload = True
    return Plan(rebuild=tuple(sorted(rebuild)), upload=upload)


def upload_after_builds(plan: Plan, built: Mapping[str, bool]) -> bool:
    """Upload when files outside the rebuilt folders changed, or when a build succeeded (its new files and its
    image.json go up, and grokemu replaces the container). Only failed builds and nothing else: no upload at all,
    so the old container keeps serving and the server's files stay those of its image."""
    return plan.upload or any(built.values())


class Debouncer:
    """Saves gathered until `quiet` seconds pass without another: one burst (an editor's save-all, a formatter, a
    checkout) is one batch, so one rebuild. The clock is passed in: tests count steps, not seconds."""

    def __init__(self, quiet: float):
        self.quiet = quiet
        self._pending: set[str] = set()
        self._last = 0.0

    def add(self, paths: Iterable[str], now: float) -> None:
        fresh = set(paths)
        if fresh:
            self._pending |= fresh
            self._last = now

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def take(self, now: float) -> set[str] | None:
        """The batch, once it has been quiet long enough; None while saves may still be coming (or none came)."""
        if not self._pending or now - self._last < self.quiet:
            return None
        batch, self._pending = self._pending, set()
        return batch


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def delta(current: Mapping[str, str], sent: Mapping[str, str], docker_dirs: Iterable[str],
          failing: Iterable[str]) -> list[str]:
    """The files a debug delta carries: those whose content (sha256 in `current`) differs from what was last sent,
    except the files of docker folders whose build fails (the server keeps the files of the image that serves).
    Contents, not mtimes as `grok publish` compares (docs/grok-publish.md §1.4): its timestamps have whole seconds,
    and two saves within one second are the common case here."""
    dirs, bad = list(docker_dirs), set(failing)
    return sorted(p for p, h in current.items() if sent.get(p) != h and not bad.intersection(docker_dir_of(p, dirs)))


def utc_string(mtime: float) -> str:
    """A file's mtime as the grok CLI's timestamps.json writes it (JavaScript's `toUTCString()`)."""
    return formatdate(mtime, usegmt=True)


def image_json_path(docker_dir: str) -> str:
    """Where the grok CLI puts an image's image.json (docs/grok-publish.md §2.4)."""
    return "dockerfiles/image.json" if docker_dir == "." else f"dockerfiles/{docker_dir}/image.json"


def docker_dirs_on_disk(root: Path) -> list[str]:
    """The package's docker folders with a Dockerfile to build ("." for dockerfiles/Dockerfile); a folder with only
    a container.json naming an image is nothing to build."""
    base = root / "dockerfiles"
    found = ["."] if (base / "Dockerfile").is_file() else []
    if base.is_dir():
        found += sorted(p.name for p in base.iterdir() if (p / "Dockerfile").is_file())
    return found


def build_step(line: str) -> str | None:
    """`Step 3/5` from a classic build's `Step 3/5 : COPY ...` line (the progress line), else None."""
    head = line.strip()
    if head.startswith("Step ") and " : " in head:
        return head.split(" : ", 1)[0]
    return None


def ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


@dataclass
class Note:
    """What dev itself knows of a folder's image beyond the server's view: a build running or failed."""

    building: str = ""  # the progress: "Step 2/5, 1.3 s"
    failed: str = ""  # why the last build, or the container of the new build, failed (the old container serves)


def container_line(c: Mapping, url: str, now: float | None, note: Note | None = None) -> str:
    """One container's status line: name, status, fetchProxy URL (a worker has functions, not a URL), the last
    proxied request. `now` None (output that is not a terminal): no ages, so the line changes only when something
    happened and is printed again only then."""
    stats = c.get("grokemu") or {}
    parts = [str(c.get("name")), str(c.get("status"))]
    parts.append(f"queue {c['taskQueue']}" if c.get("taskQueue") else url)
    if stats.get("requests"):
        last = f"last request {stats.get('lastStatus')}"
        if now is not None and stats.get("lastAt"):
            last += f" {ago(now - stats['lastAt'])}"
        parts.append(f"{last} ({stats['requests']} in all)")
    else:
        parts.append("no request yet")
    if note and note.building:
        parts.append(f"building: {note.building}")
    if note and note.failed:
        parts.append(f"FAILED, the previous image serves: {note.failed}")
    if c.get("status") == "error" and c.get("errorMessage"):
        parts.append(f"error: {str(c['errorMessage']).splitlines()[0][:200]}")
    return "  ".join(parts)
