"""Package publish, wire-exact for datagrok-tools 6.7.5 (docs/grok-publish.md §1).

An upload is a raw ZIP. Debug uploads are deltas: the CLI leaves out every file whose mtime matches the
timestamps map the server returned, so the server merges the upload onto the files it kept. Release uploads
replace the package's files.

Publish is all-or-nothing, whatever fails and whenever the process is killed. A publish checks the name, unpacks
the ZIP into a staging folder under the ZIP limits (services/package_archive.py, counted while decompressing),
checks every file, renames the staging folder to a new version folder, commits the database rows that point to
it, and only then removes the previous version (adapters/fs_package_files.py has the layout). A crash at any instant
leaves a staging folder or an unreferenced version folder at worst; `sweep()` (called once at startup) removes
them.
"""
from __future__ import annotations

import codecs
import hashlib
import io
import logging
import os
import shutil
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from grokemu.domain.clock import Clock
from grokemu.domain.container_config import load_json, parse_container_json
from grokemu.domain.errors import BadRequest, PayloadTooLarge
from grokemu.domain.functions import MAX_PY_BYTES, ScannedFunc, bind, celery_name, package_namespace, scan_folder
from grokemu.domain.lifecycle import ImageStatus
from grokemu.domain.model import DockerContainer, DockerImage, container_name, friendly, image_docker_name
from grokemu.domain.package_rules import check_package_name
from grokemu.domain.ports import PackageFiles, Store
from grokemu.services.environment import find_published_package, package_entities
from grokemu.services.package_archive import (
    FileSource,
    MiB,
    ZipLimits,
    _chunks,
    _Tree,
    extract_zip,
    read_small,
    spool_body,
)

if TYPE_CHECKING:
    from grokemu.services.images import ImageService
    from grokemu.services.spawner import Spawner

log = logging.getLogger(__name__)

__all__ = ["DockerDir", "PackageService", "PublishResult", "find_docker_dirs", "folder_hash", "spool_body"]


# -- what a package declares ----------------------------------------------------------------------------------------

def folder_hash(files: Mapping[str, FileSource], prefix: str, exclude: set[str]) -> str:
    """calculateFolderHash of datagrok-tools 6.7.5 (publish.js:203-246) over the stored files under `prefix`:
    sha256 over the sorted entries, `dir:<rel>:` per folder, `file:<rel>:` + bytes per file, CRLF → LF when the
    file has a CR and no NUL byte. The image.json the CLI appends after hashing is left out. Files are read in
    chunks, so a big file in a Dockerfile folder costs no memory."""
    entries: dict[str, FileSource | None] = {}
    for path, data in files.items():
        if not path.startswith(prefix):
            continue
        rel = path[len(prefix):]
        if rel in exclude:
            continue
        parts = rel.split("/")
        for i in range(1, len(parts)):
            entries.setdefault("/".join(parts[:i]), None)
        entries[rel] = data
    digest = hashlib.sha256()
    for rel in sorted(entries):
        entry = entries[rel]
        if entry is None:
            digest.update(f"dir:{rel}:".encode())
            continue
        digest.update(f"file:{rel}:".encode())
        data = entry
        has_cr = has_nul = False
        for buf in _chunks(data):
            has_cr = has_cr or b"\r" in buf
            has_nul = has_nul or b"\x00" in buf
        if not (has_cr and not has_nul):
            for buf in _chunks(data):
                digest.update(buf)
            continue
        # text: decode as UTF-8 (invalid bytes → U+FFFD), CRLF → LF, encode; a CR at a chunk's end waits for the next
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        pending = ""
        for buf in _chunks(data):
            text = pending + decoder.decode(buf)
            pending = "\r" if text.endswith("\r") else ""
            if pending:
                text = text[:-1]
            digest.update(text.replace("\r\n", "\n").encode())
        tail = pending + decoder.decode(b"", final=True)
        digest.update(tail.replace("\r\n", "\n").encode())
    return digest.hexdigest()


@dataclass
class DockerDir:
    """One `dockerfiles/<dir>/` of a package: a Dockerfile to build, or a container.json naming an image."""

    dir: str  # "." for a root dockerfiles/Dockerfile
    dockerfile: str | None
    config: dict[str, Any]
    image_json: dict[str, Any] | None
    content_hash: str
    functions: list[ScannedFunc] = field(default_factory=list)  # Celery tasks with a Datagrok header
    warnings: list[str] = field(default_factory=list)  # bad headers, file:line

    @property
    def prefix(self) -> str:
        return "dockerfiles/" if self.dir == "." else f"dockerfiles/{self.dir}/"


@dataclass
class PublishResult:
    package: str
    version: str
    files: int
    uploaded: int
    images: list[dict[str, Any]] = field(default_factory=list)

    def to_wire(self) -> dict[str, Any]:
        return {"#type": "PackageUploadResult", "name": self.package, "version": self.version,
                "files": self.files, "uploaded": self.uploaded, "dockerImages": self.images}


def _json_file(files: Mapping[str, FileSource], path: str) -> Any:
    return load_json(read_small(files[path], path), path)


def find_docker_dirs(files: Mapping[str, FileSource]) -> list[DockerDir]:
    dirs: dict[str, DockerDir] = {}
    candidates = set()
    for path in files:
        parts = path.split("/")
        if parts[0] != "dockerfiles" or len(parts) < 2:
            continue
        if len(parts) == 2 and parts[1] in ("Dockerfile", "container.json"):
            candidates.add(".")
        elif len(parts) == 3 and parts[2] in ("Dockerfile", "container.json"):
            candidates.add(parts[1])
    for d in sorted(candidates):
        prefix = "dockerfiles/" if d == "." else f"dockerfiles/{d}/"
        dockerfile = read_small(files[prefix + "Dockerfile"], prefix + "Dockerfile") \
            if prefix + "Dockerfile" in files else None
        config_bytes = read_small(files[prefix + "container.json"], prefix + "container.json") \
            if prefix + "container.json" in files else None
        config = parse_container_json(config_bytes, where=prefix + "container.json")
        if dockerfile is None and not config.get("image"):
            continue  # a container.json alone, without `image`, is not an image (the CLI skips it too)
        image_json = _json_file(files, prefix + "image.json") if prefix + "image.json" in files else None
        if image_json is not None and not isinstance(image_json, dict):
            raise BadRequest(f"{prefix}image.json must be a JSON object")
        if image_json and image_json.get("image") is not None and not isinstance(image_json["image"], str):
            raise BadRequest(f"{prefix}image.json: 'image' must be a string or null")
        sub_image_jsons = {f"{x}/image.json" for x in candidates if d == "." and x != "."}
        others = tuple(f"dockerfiles/{x}/" for x in candidates if d == "." and x != ".")
        functions, warnings = _scan_functions(files, prefix, others)
        dirs[d] = DockerDir(dir=d, dockerfile=dockerfile.decode("utf-8", "replace") if dockerfile else None,
                            config=config, image_json=image_json,
                            content_hash=folder_hash(files, prefix, {"image.json", *sub_image_jsons}),
                            functions=functions, warnings=warnings)
    return list(dirs.values())


def _scan_functions(files: Mapping[str, FileSource], prefix: str, skip: tuple[str, ...]
                    ) -> tuple[list[ScannedFunc], list[str]]:
    """The Celery tasks of one docker folder (domain/functions.py): its .py files, and its tasks.yaml when there is
    one; a root folder leaves out the sub-folders that are docker folders of their own."""
    sources, warnings = [], []
    for path in sorted(files):
        if not path.startswith(prefix) or not path.endswith(".py") or (skip and path.startswith(skip)):
            continue
        try:
            text = read_small(files[path], path, limit=MAX_PY_BYTES).decode("utf-8", "replace")
        except PayloadTooLarge:
            warnings.append(f"{path}: over {MAX_PY_BYTES // (1024 * 1024)} MiB, not scanned for functions")
            continue
        sources.append((path[len(prefix):], text))
    tasks_yaml = None
    if prefix + "tasks.yaml" in files:
        try:
            tasks_yaml = read_small(files[prefix + "tasks.yaml"], prefix + "tasks.yaml").decode("utf-8", "replace")
        except PayloadTooLarge as e:
            warnings.append(f"{prefix}tasks.yaml: {e.message}")
    found, more = scan_folder(sources, tasks_yaml)
    return found, warnings + [w if w.startswith(prefix) else prefix + w for w in more]


def _package_meta(files: Mapping[str, FileSource], package_name: str) -> tuple[dict, str, dict]:
    if "package.json" not in files:
        raise BadRequest("Package has no package.json")
    meta = _json_file(files, "package.json")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"].strip():
        raise BadRequest("package.json has no 'name'")
    if meta["name"] != package_name:
        raise BadRequest(f"package.json name '{meta['name'][:300]}' does not match the upload path '{package_name}'")
    for key in ("friendlyName", "description"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise BadRequest(f"package.json: '{key}' must be a string")
    raw_version = meta.get("version")
    if raw_version is not None and not isinstance(raw_version, (str, int, float)) or isinstance(raw_version, bool):
        raise BadRequest("package.json: 'version' must be a string")
    version = str(raw_version or "0.0.0")
    timestamps = _json_file(files, "timestamps.json") if "timestamps.json" in files else {}
    if not isinstance(timestamps, dict):
        raise BadRequest("timestamps.json must be a JSON object")
    return meta, version, timestamps



# -- the service ----------------------------------------------------------------------------------------------------

class PackageService:
    def __init__(self, store: Store, clock: Clock, files: PackageFiles, images: ImageService,
                 spawner: Spawner, settings: Any = None):
        self._store = store
        self._clock = clock
        self._files = files
        self._images = images
        self._spawner = spawner
        self._settings = settings  # read at each publish: the limits are settings
        # One publish at a time: its read-merge-rename-commit-remove sequence is never interleaved with another's.
        self._publish_lock = threading.Lock()

    @property
    def root(self) -> Path:
        return self._files.root

    # -- reading ---------------------------------------------------------------------------------------------------
    @staticmethod
    def check_name(package_name: Any) -> str:
        return check_package_name(package_name)

    def files_dir(self, package_name: str) -> Path:
        """The folder of the package's current files (resolved through its database row); for a package never
        published, the folder it would get."""
        return self._files.files_dir(package_name, self._store.get_package(check_package_name(package_name)))

    def current_files(self, package_name: str) -> dict[str, Path]:
        try:
            check_package_name(package_name)
        except BadRequest:
            return {}
        return self._files.current_files(self._store.get_package(package_name))

    def entities(self, package_name: str) -> list[dict[str, Any]]:
        """Entities of a package that container environment expressions may name (connections/*.json)."""
        try:
            check_package_name(package_name)
        except BadRequest:
            return []
        return package_entities(self._files, self._store.get_package(package_name))

    def find_package(self, ref: str) -> tuple[str, list[dict[str, Any]]] | None:
        """A published package by any of its names (`MolTrack`, `moltrack`, `@datagrok/moltrack`)."""
        return find_published_package(self._store, self._files, ref)

    def timestamps(self, package_name: str) -> dict[str, str]:
        """The map the CLI compares mtimes against (docs/grok-publish.md R1). Unknown packages get {} (not 404, or the CLI retries the
        legacy URL)."""
        record = self._store.get_package(check_package_name(package_name))
        return dict(record.get("timestamps") or {}) if record else {}

    # -- publish ---------------------------------------------------------------------------------------------------
    def spool(self, stream: IO[bytes]) -> IO[bytes]:
        """The request body in a temporary file under the packages folder, at most max_package_bytes."""
        return spool_body(stream, int(getattr(self._settings, "max_package_bytes", 256 * MiB)), self._files.root)

    def publish(self, package_name: str, body: bytes | IO[bytes], *, debug: bool, rebuild: bool = False,
                drop_db: bool = False, suffix: str | None = None, login: str) -> PublishResult:
        check_package_name(package_name)
        source = io.BytesIO(body) if isinstance(body, (bytes, bytearray, memoryview)) else body
        staging = self._files.staging_dir()
        tree = staging / "files"
        try:
            tree.mkdir(parents=True)
            uploaded = extract_zip(source, tree, ZipLimits.from_settings(self._settings))
            with self._publish_lock:
                files: dict[str, Path] = dict(uploaded)
                if debug:
                    files.update(self._link_kept_files(package_name, tree, uploaded))
                meta, version, timestamps = _package_meta(files, package_name)
                docker_dirs = find_docker_dirs(files)
                images = self._swap_in(package_name, tree, meta, version, timestamps, docker_dirs, debug=debug,
                                       rebuild=rebuild, drop_db=drop_db, suffix=suffix, login=login)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self._images.wake()
        return PublishResult(package=package_name, version=version, files=len(files), uploaded=len(uploaded),
                             images=[{"id": i.id, "name": i.name, "version": i.version, "status": i.status.value}
                                     for i in images])

    def _link_kept_files(self, package_name: str, tree: Path, uploaded: dict[str, Path]) -> dict[str, Path]:
        """A debug upload is a delta: the current files it does not replace are kept, hard-linked into the new
        version (never written through: every file a publish writes is a new one). A kept file that clashes with
        an uploaded path (`a` kept, `a/b` uploaded, or the reverse) gives way to the upload."""
        up = _Tree()
        for path, p in uploaded.items():
            up.add(path, p)
        kept: dict[str, Path] = {}
        for path, src in sorted(self.current_files(package_name).items()):
            if path in up.files or up.clash(path) is not None:
                continue
            target = tree / path
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src, target, follow_symlinks=False)
            except OSError:
                shutil.copyfile(src, target, follow_symlinks=False)
            kept[path] = target
        return kept

    def _swap_in(self, package_name: str, tree: Path, meta: dict, version: str, timestamps: dict,
                 docker_dirs: list[DockerDir], **flags: Any) -> list[DockerImage]:
        """Rename the checked tree to a new version folder, commit the rows that point to it, then drop the
        previous version. Any failure before the commit removes the new folder: the previous state is kept."""
        with self._files.new_version(package_name, tree) as version_id:
            now = self._clock.now()
            with self._store.transaction():
                previous = self._store.get_package(package_name) or {}
                images, functions = self._sync_entities(package_name, meta, version, docker_dirs, flags["login"],
                                                        now, previous.get("dockerFuncs") or [])
                self._store.put_package({
                    "name": package_name, "version": version, "friendlyName": meta.get("friendlyName"),
                    "description": meta.get("description"), "timestamps": timestamps, "debug": flags["debug"],
                    "rebuild": flags["rebuild"], "dropDb": flags["drop_db"], "suffix": flags["suffix"],
                    "publishedBy": flags["login"], "updatedOn": now, "filesVersion": version_id,
                    "dockerFuncs": functions})
        return images

    # -- startup -----------------------------------------------------------------------------------------------
    def sweep(self) -> int:
        """Remove what an interrupted publish left (adapters/fs_package_files.py `sweep`). Called once at startup,
        before requests are served. Returns how many entries were removed."""
        return self._files.sweep(self._store.list_packages())

    def _sync_entities(self, package_name: str, meta: dict, version: str, docker_dirs: list[DockerDir],
                       login: str, now: float, previous_funcs: list[dict]) -> tuple[list[DockerImage], list[dict]]:
        """The package's images and containers, and its functions' records (kept in the package's row: one
        commit with the rest). A function keeps its id across publishes."""
        namespace = package_namespace(package_name, meta.get("friendlyName"))
        old_ids = {(f.get("container_id"), f.get("name")): f.get("id") for f in previous_funcs}
        functions: list[dict] = []
        existing_images = {i.docker_dir: i for i in self._store.list_images() if i.package == package_name}
        existing_containers = {c.image_id: c for c in self._store.list_containers() if c.package == package_name}
        result = []
        for d in docker_dirs:
            image_ref = (d.image_json or {}).get("image") or d.config.get("image")
            tag = image_ref.rsplit(":", 1)[1] if image_ref and ":" in image_ref.rsplit("/", 1)[-1] else version
            image = existing_images.pop(d.dir, None) or DockerImage(
                name=image_docker_name(package_name, d.dir), package=package_name, docker_dir=d.dir, version=tag,
                created_on=now)
            image.version = tag
            image.image_ref = image_ref
            image.dockerfile = d.dockerfile or ""
            image.content_hash = d.content_hash
            image.friendly_name = friendly(image.name)
            image.description = meta.get("description") or ""
            image.port = None
            image.logs = ""
            image.status = ImageStatus.PENDING_VALIDATION
            image.status_since = now
            image.updated_on = now
            image.updated_by = login
            image.warnings = list(d.warnings)
            self._store.put_image(image)
            for warning in d.warnings:
                log.warning("%s: %s", package_name, warning)
            result.append(image)

            container = existing_containers.pop(image.id, None) or DockerContainer(
                name=container_name(package_name, d.dir), package=package_name, image_id=image.id, created_on=now,
                status_since=now)
            container.friendly_name = friendly(container.name)
            container.config = d.config
            container.updated_on = now
            container.updated_by = login
            # one queue per container; the id keeps two stands on one broker apart
            container.task_queue = f"{container.name}.{container.id[:8]}" if d.functions else ""
            container.celery_name = celery_name(image.name) if d.functions else ""
            self._store.put_container(container)
            functions += [bind(f, package=package_name, namespace=namespace, container_id=container.id,
                               prefix=d.prefix, task_queue=container.task_queue,
                               previous_id=old_ids.get((container.id, f.name))).to_record() for f in d.functions]
            if d.config["unknown_keys"]:
                log.warning("%s%scontainer.json: keys Datagrok does not model, kept as given: %s", package_name,
                            f" {d.prefix}", ", ".join(d.config["unknown_keys"]))

        # Folders gone from the package: their images and containers go too (the spawner removes Docker leftovers).
        for image in existing_images.values():
            self._store.delete_image(image.id)
        for container in existing_containers.values():
            self._spawner.forget(container)
        return result, functions
