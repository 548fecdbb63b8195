"""Package publish, wire-exact for datagrok-tools 6.7.5 (research/grok-cli-protocol.md §1).

An upload is a raw ZIP. Debug uploads are deltas: the CLI leaves out every file whose mtime matches the
timestamps map the server returned, so the server merges the upload onto the files it kept. Release uploads
replace the package's files. Everything is checked before anything is written; files are staged in a new folder
and swapped in only after the database transaction commits, so a bad upload leaves no partial state.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import posixpath
import shutil
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from grokemu.domain.clock import Clock
from grokemu.domain.container_config import parse_container_json
from grokemu.domain.errors import BadRequest
from grokemu.domain.lifecycle import ImageStatus
from grokemu.domain.model import (DockerContainer, DockerImage, container_name, friendly, image_docker_name)
from grokemu.domain.ports import Store
from grokemu.services.environment import entities_from_files, package_matches

if TYPE_CHECKING:
    from grokemu.services.images import ImageService
    from grokemu.services.spawner import Spawner

log = logging.getLogger(__name__)


def package_dir(root: Path, package_name: str) -> Path:
    """Where a package's current files live; the name is quoted so `@acme/pkg` is one safe folder name."""
    return root / quote(package_name, safe="")


@dataclass
class DockerDir:
    """One `dockerfiles/<dir>/` of a package: a Dockerfile to build, or a container.json naming an image."""

    dir: str  # "." for a root dockerfiles/Dockerfile
    dockerfile: str | None
    config: dict[str, Any]
    image_json: dict[str, Any] | None
    content_hash: str

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


def read_zip(body: bytes) -> dict[str, bytes]:
    """Entries by POSIX path. Duplicate names are allowed (the CLI zips dist/package.js twice); the last wins."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(body))
        infos = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise BadRequest("Package upload is not a ZIP archive", str(e)) from None
    files: dict[str, bytes] = {}
    for info in infos:
        if info.is_dir():
            continue
        name = info.filename.replace("\\", "/")  # the CLI uses native separators on Windows
        norm = posixpath.normpath(name)
        if name.startswith("/") or norm.startswith("../") or norm == ".." or ":" in norm.split("/")[0]:
            raise BadRequest(f"Package ZIP entry has an unsafe path: {info.filename}")
        try:
            files[norm] = archive.read(info)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, RuntimeError, EOFError) as e:
            raise BadRequest(f"Package ZIP entry {info.filename} cannot be read", str(e)) from None
    return files


def folder_hash(files: dict[str, bytes], prefix: str, exclude: set[str]) -> str:
    """calculateFolderHash of datagrok-tools 6.7.5 (publish.js:203-246) over the stored files under `prefix`:
    sha256 over the sorted entries, `dir:<rel>:` per folder, `file:<rel>:` + bytes per file, CRLF → LF when the
    file has a CR and no NUL byte. The image.json the CLI appends after hashing is left out."""
    entries: dict[str, bytes | None] = {}
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
        data = entries[rel]
        if data is None:
            digest.update(f"dir:{rel}:".encode())
        else:
            if b"\r" in data and b"\x00" not in data:
                data = data.decode("utf-8", "replace").replace("\r\n", "\n").encode()
            digest.update(f"file:{rel}:".encode())
            digest.update(data)
    return digest.hexdigest()


def _json_file(files: dict[str, bytes], path: str) -> Any:
    try:
        return json.loads(files[path])
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"{path} is not valid JSON: {e}") from None


def find_docker_dirs(files: dict[str, bytes]) -> list[DockerDir]:
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
        dockerfile = files.get(prefix + "Dockerfile")
        config_bytes = files.get(prefix + "container.json")
        config = parse_container_json(config_bytes, where=prefix + "container.json")
        if dockerfile is None and not config.get("image"):
            continue  # a container.json alone, without `image`, is not an image (the CLI skips it too)
        image_json = _json_file(files, prefix + "image.json") if prefix + "image.json" in files else None
        if image_json is not None and not isinstance(image_json, dict):
            raise BadRequest(f"{prefix}image.json must be a JSON object")
        if image_json and image_json.get("image") is not None and not isinstance(image_json["image"], str):
            raise BadRequest(f"{prefix}image.json: 'image' must be a string or null")
        sub_image_jsons = {f"{x}/image.json" for x in candidates if d == "." and x != "."}
        dirs[d] = DockerDir(dir=d, dockerfile=dockerfile.decode("utf-8", "replace") if dockerfile else None,
                            config=config, image_json=image_json,
                            content_hash=folder_hash(files, prefix, {"image.json", *sub_image_jsons}))
    return list(dirs.values())


class PackageService:
    def __init__(self, store: Store, clock: Clock, root: Path, images: "ImageService", spawner: "Spawner"):
        self._store = store
        self._clock = clock
        self._root = root
        self._images = images
        self._spawner = spawner
        root.mkdir(parents=True, exist_ok=True)

    def files_dir(self, package_name: str) -> Path:
        return package_dir(self._root, package_name)

    def entities(self, package_name: str) -> list[dict[str, Any]]:
        """Entities of a package that container environment expressions may name (connections/*.json)."""
        folder = self.files_dir(package_name) / "connections"
        files = {f"connections/{p.name}": p.read_bytes() for p in folder.glob("*.json")} if folder.is_dir() else {}
        return entities_from_files(files)

    def find_package(self, ref: str) -> tuple[str, list[dict[str, Any]]] | None:
        """A published package by any of its names (`MolTrack`, `moltrack`, `@datagrok/moltrack`)."""
        for record in self._store.list_packages():
            if package_matches(record["name"], record.get("friendlyName"), ref):
                return record["name"], self.entities(record["name"])
        return None

    def timestamps(self, package_name: str) -> dict[str, str]:
        """The map the CLI compares mtimes against (R1). Unknown packages get {} (not 404, or the CLI retries the
        legacy URL)."""
        record = self._store.get_package(package_name)
        return dict(record.get("timestamps") or {}) if record else {}

    def _current_files(self, package_name: str) -> dict[str, bytes]:
        base = self.files_dir(package_name)
        if not base.is_dir():
            return {}
        return {p.relative_to(base).as_posix(): p.read_bytes() for p in base.rglob("*") if p.is_file()}

    def publish(self, package_name: str, body: bytes, *, debug: bool, rebuild: bool = False, drop_db: bool = False,
                suffix: str | None = None, login: str) -> PublishResult:
        uploaded = read_zip(body)
        files = {**self._current_files(package_name), **uploaded} if debug else dict(uploaded)

        if "package.json" not in files:
            raise BadRequest("Package has no package.json")
        meta = _json_file(files, "package.json")
        if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"].strip():
            raise BadRequest("package.json has no 'name'")
        if meta["name"] != package_name:
            raise BadRequest(f"package.json name '{meta['name']}' does not match the upload path '{package_name}'")
        version = str(meta.get("version") or "0.0.0")
        timestamps = _json_file(files, "timestamps.json") if "timestamps.json" in files else {}
        if not isinstance(timestamps, dict):
            raise BadRequest("timestamps.json must be a JSON object")
        docker_dirs = find_docker_dirs(files)

        staging = self._root / f".staging-{uuid.uuid4().hex}"
        try:
            for path, data in files.items():
                target = staging / path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            now = self._clock.now()
            with self._store.transaction():
                self._store.put_package({
                    "name": package_name, "version": version, "friendlyName": meta.get("friendlyName"),
                    "description": meta.get("description"), "timestamps": timestamps, "debug": debug,
                    "rebuild": rebuild, "dropDb": drop_db, "suffix": suffix, "publishedBy": login,
                    "updatedOn": now})
                images = self._sync_entities(package_name, meta, version, docker_dirs, login, now)
            self._swap_in(staging, self.files_dir(package_name))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self._images.wake()
        return PublishResult(package=package_name, version=version, files=len(files), uploaded=len(uploaded),
                             images=[{"id": i.id, "name": i.name, "version": i.version, "status": i.status.value}
                                     for i in images])

    def _swap_in(self, staging: Path, target: Path) -> None:
        old = target.with_name(target.name + f".old-{uuid.uuid4().hex}")
        if target.exists():
            target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)

    def _sync_entities(self, package_name: str, meta: dict, version: str, docker_dirs: list[DockerDir],
                       login: str, now: float) -> list[DockerImage]:
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
            self._store.put_image(image)
            result.append(image)

            container = existing_containers.pop(image.id, None) or DockerContainer(
                name=container_name(package_name, d.dir), package=package_name, image_id=image.id, created_on=now,
                status_since=now)
            container.friendly_name = friendly(container.name)
            container.config = d.config
            container.updated_on = now
            container.updated_by = login
            self._store.put_container(container)
            if d.config["unknown_keys"]:
                log.warning("%s%scontainer.json: keys Datagrok does not model, kept as given: %s", package_name,
                            f" {d.prefix}", ", ".join(d.config["unknown_keys"]))

        # Folders gone from the package: their images and containers go too (the spawner removes Docker leftovers).
        for image in existing_images.values():
            self._store.delete_image(image.id)
        for container in existing_containers.values():
            self._spawner.forget(container)
        return result
