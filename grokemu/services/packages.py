"""Package publish, wire-exact for datagrok-tools 6.7.5 (research/grok-cli-protocol.md §1).

An upload is a raw ZIP. Debug uploads are deltas: the CLI leaves out every file whose mtime matches the
timestamps map the server returned, so the server merges the upload onto the files it kept. Release uploads
replace the package's files.

Publish is all-or-nothing, whatever fails and whenever the process is killed:

    <data>/packages/.staging-<hex>/              an upload being unpacked and checked (debris after a crash)
    <data>/packages/<quoted name>/<version id>/  the package's files; the package's database row names the
                                                 current version id (`filesVersion`)

A publish checks the name, unpacks the ZIP into a staging folder under the ZIP limits (counted while
decompressing), checks every file, renames the staging folder to a new version folder, commits the database rows
that point to it, and only then removes the previous version. Every reader resolves the current folder through the
database row, so it sees the old files or the new ones, never a mix. A crash at any instant leaves a staging folder
or an unreferenced version folder at worst; `sweep()` (called once at startup) removes them.
"""
from __future__ import annotations

import codecs
import hashlib
import io
import json
import logging
import os
import re
import shutil
import stat
import struct
import tempfile
import threading
import uuid
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Mapping, Union
from urllib.parse import quote

from grokemu.domain.clock import Clock
from grokemu.domain.container_config import load_json, parse_container_json
from grokemu.domain.errors import BadRequest, PayloadTooLarge
from grokemu.domain.lifecycle import ImageStatus
from grokemu.domain.model import (DockerContainer, DockerImage, container_name, friendly, image_docker_name)
from grokemu.domain.ports import Store
from grokemu.services.environment import entities_from_files, package_matches

if TYPE_CHECKING:
    from grokemu.services.images import ImageService
    from grokemu.services.spawner import Spawner

log = logging.getLogger(__name__)

MiB = 1024 * 1024
CHUNK = 256 * 1024  # decompression / copy unit: memory stays flat however big an entry is
NAME_MAX_LENGTH = 214  # npm's limit on a package name (validate-npm-package-name)
SEGMENT_MAX_BYTES = 255  # NAME_MAX of the usual filesystems: one path segment, quoted
ENTRY_PATH_MAX_BYTES = 4096  # PATH_MAX: a ZIP entry name longer than this cannot be a file we could write
METADATA_MAX_BYTES = 16 * MiB  # package.json, container.json, image.json, timestamps.json, Dockerfile, connections
RATIO_FLOOR = MiB  # the compression ratio is checked for entries bigger than this (small files compress a lot)
VERSION_ID = re.compile(r"^v[0-9a-f]{32}$")
_OLD_SWAP = re.compile(r"\.old-[0-9a-f]{32}$")  # left by the swap-in of grokemu before versioned folders
_SPOOL_IN_MEMORY = 8 * MiB  # an upload bigger than this is spooled to an unnamed file under <data>/packages

FileSource = Union[bytes, Path]  # a file's bytes (tests, small data) or where it lies in a staging/version folder


# -- names and folders --------------------------------------------------------------------------------------------

def check_package_name(name: Any) -> str:
    """A package name that is one safe folder name once quoted: `name` or a scoped `@scope/name` (Datagrok's and
    npm's scoped names), no `.`/`..` or dot-leading segment, no control character, backslash or `%`, at most 214
    characters (npm). Raises BadRequest naming what is wrong; called before anything is read or written."""
    if not isinstance(name, str) or not name:
        raise BadRequest("Package name is empty")
    shown = json.dumps(name[:80] + ("…" if len(name) > 80 else ""))
    if len(name) > NAME_MAX_LENGTH:
        raise BadRequest(f"Package name is {len(name)} characters long; the limit is {NAME_MAX_LENGTH} (as npm's)")
    for ch in name:
        code = ord(ch)
        if code < 0x20 or 0x7F <= code < 0xA0 or 0xD800 <= code < 0xE000:
            raise BadRequest(f"Package name {shown} contains a control character (U+{code:04X})")
    if "\\" in name:
        raise BadRequest(f"Package name {shown} contains a backslash")
    if "%" in name:
        raise BadRequest(f"Package name {shown} contains '%' (a package name is URL-safe, as npm's)")
    if name != name.strip():
        raise BadRequest(f"Package name {shown} starts or ends with whitespace")
    if name.startswith("@"):
        scope, sep, rest = name[1:].partition("/")
        if not sep or not scope or not rest or "/" in rest:
            raise BadRequest(f"Package name {shown} is not a name or a scoped '@scope/name'")
        segments = [scope, rest]
    else:
        if "/" in name:
            raise BadRequest(f"Package name {shown} contains '/' (only a scoped '@scope/name' may)")
        segments = [name]
    for segment in segments:
        if segment in (".", "..") or segment.startswith("."):
            raise BadRequest(f"Package name {shown} has a segment that is or starts with '.'")
    if len(quote(name, safe="").encode()) > SEGMENT_MAX_BYTES:
        raise BadRequest(f"Package name {shown} is too long to be a folder name once quoted "
                         f"({SEGMENT_MAX_BYTES} bytes)")
    return name


def package_dir(root: Path, package_name: str) -> Path:
    """The package's own folder; the name is quoted so `@acme/pkg` is one safe folder name."""
    return root / quote(check_package_name(package_name), safe="")


def current_files_dir(root: Path, record: Mapping[str, Any] | None) -> Path | None:
    """Where the current files of a package live, from its database row; None for no (or a bad) row."""
    if not record:
        return None
    try:
        base = package_dir(root, record.get("name"))
    except BadRequest:
        return None  # a row written by an older grokemu under a name that is not a safe folder name
    if os.path.islink(base):
        return None  # grokemu never makes one: a symlink here is not the package's own folder
    version = record.get("filesVersion")
    if version is None:
        return base  # published before versioned folders: the files are in the package's folder itself
    if not isinstance(version, str) or not VERSION_ID.match(version):
        return None
    return base / version


def _is_real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def regular_files(base: Path, *, skip_top: re.Pattern | None = None) -> dict[str, Path]:
    """Regular files under `base` by POSIX relative path. Symlinks (to files or folders) and anything that is not
    a regular file are ignored, so nothing outside `base` is ever read."""
    out: dict[str, Path] = {}
    if not _is_real_dir(base):
        return out
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        if skip_top is not None and Path(dirpath) == base:
            dirnames[:] = [d for d in dirnames if not skip_top.match(d) and not d.startswith(".staging-")]
        dirnames[:] = [d for d in dirnames if _is_real_dir(Path(dirpath) / d)]
        for fn in filenames:
            p = Path(dirpath) / fn
            try:
                if not stat.S_ISREG(os.lstat(p).st_mode):
                    continue
            except OSError:
                continue
            out[p.relative_to(base).as_posix()] = p
    return out


# -- JSON and file contents ---------------------------------------------------------------------------------------

def read_small(source: FileSource, where: str, limit: int = METADATA_MAX_BYTES) -> bytes:
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    else:
        with open(source, "rb") as f:
            data = f.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"{where} is bigger than {limit // MiB} MiB")
    return data


def _chunks(source: FileSource):
    if isinstance(source, (bytes, bytearray)):
        yield bytes(source)
        return
    with open(source, "rb") as f:
        while buf := f.read(CHUNK):
            yield buf


# -- the ZIP ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ZipLimits:
    """The settings of the same names (config.py); every breach is a 413 naming its setting."""

    max_package_unpacked_bytes: int = 1024**3
    max_package_entries: int = 20_000
    max_compression_ratio: float = 200.0

    @classmethod
    def from_settings(cls, settings: Any) -> "ZipLimits":
        if settings is None:
            return cls()
        return cls(max_package_unpacked_bytes=int(settings.max_package_unpacked_bytes),
                   max_package_entries=int(settings.max_package_entries),
                   max_compression_ratio=float(settings.max_compression_ratio))


def _not_a_zip(e: BaseException | str) -> BadRequest:
    return BadRequest("Package upload is not a ZIP archive", str(e))


def _count_entries(fp: IO[bytes], limits: ZipLimits) -> None:
    """Walk the central directory (46-byte headers and the lengths they give) counting entries, before zipfile
    builds one object per entry: a many-entries bomb is refused with flat memory."""
    try:
        endrec = zipfile._EndRecData(fp)  # the same reader zipfile uses; private but stable since Python 2
    except (OSError, struct.error, ValueError) as e:
        raise _not_a_zip(e) from None
    if not endrec:
        raise _not_a_zip("no end of central directory record")
    declared = endrec[zipfile._ECD_ENTRIES_TOTAL]
    if declared > limits.max_package_entries:
        raise PayloadTooLarge(f"Package ZIP has {declared} entries; the limit is {limits.max_package_entries} "
                              "(setting max_package_entries)")
    size_cd, offset_cd = endrec[zipfile._ECD_SIZE], endrec[zipfile._ECD_OFFSET]
    start = endrec[zipfile._ECD_LOCATION] - size_cd
    if endrec[zipfile._ECD_SIGNATURE] == zipfile.stringEndArchive64:
        start -= zipfile.sizeEndCentDir64 + zipfile.sizeEndCentDir64Locator
    if start < 0 or offset_cd < 0:
        raise _not_a_zip("bad central directory offset")
    fp.seek(start)
    total = count = 0
    while total < size_cd:
        header = fp.read(46)
        if len(header) < 46 or header[:4] != b"PK\x01\x02":
            return  # malformed: zipfile says so in its own words
        n, m, k = struct.unpack("<HHH", header[28:34])
        if n > ENTRY_PATH_MAX_BYTES:
            raise BadRequest(f"Package ZIP has an entry name of {n} bytes; the limit is {ENTRY_PATH_MAX_BYTES}")
        fp.seek(n + m + k, io.SEEK_CUR)
        total += 46 + n + m + k
        count += 1
        if count > limits.max_package_entries:
            raise PayloadTooLarge(f"Package ZIP has more than {limits.max_package_entries} entries "
                                  "(setting max_package_entries)")


def entry_path(filename: str) -> str:
    """The POSIX path a ZIP entry is stored at, or BadRequest. Native separators are accepted (the CLI zips with
    `\\` on Windows); `.` and empty segments are dropped; `..`, absolute paths, drive letters, NUL and segments
    too long for a filesystem are refused."""
    name = filename.replace("\\", "/")
    shown = json.dumps(filename[:200])
    if name.startswith("/") or "\x00" in name:
        raise BadRequest(f"Package ZIP entry has an unsafe path: {shown}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts) or ":" in parts[0]:
        raise BadRequest(f"Package ZIP entry has an unsafe path: {shown}")
    if any(len(p.encode("utf-8", "surrogateescape")) > SEGMENT_MAX_BYTES for p in parts):
        raise BadRequest(f"Package ZIP entry has a path segment longer than {SEGMENT_MAX_BYTES} bytes: {shown}")
    return "/".join(parts)


class _Tree:
    """Paths of files written so far, to refuse a file that is also a folder (`a` and `a/b`)."""

    def __init__(self):
        self.files: dict[str, Path] = {}
        self.dirs: set[str] = set()

    def clash(self, path: str) -> str | None:
        if path in self.dirs:
            return path
        parts = path.split("/")
        for i in range(1, len(parts)):
            prefix = "/".join(parts[:i])
            if prefix in self.files:
                return prefix
        return None

    def add(self, path: str, where: Path) -> None:
        parts = path.split("/")
        for i in range(1, len(parts)):
            self.dirs.add("/".join(parts[:i]))
        self.files[path] = where


def extract_zip(source: IO[bytes], dest: Path, limits: ZipLimits) -> dict[str, Path]:
    """Unpack a package ZIP into `dest` (an empty folder of ours); entries by POSIX path, duplicates last-wins
    (the CLI zips dist/package.js twice). Every byte is counted as it is decompressed, in CHUNK pieces: the sizes
    in the headers are only used to refuse early, never to accept."""
    _count_entries(source, limits)
    try:
        archive = zipfile.ZipFile(source)
        infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError, struct.error, RuntimeError,
            NotImplementedError, OverflowError) as e:
        raise _not_a_zip(e) from None
    if len(infos) > limits.max_package_entries:
        raise PayloadTooLarge(f"Package ZIP has {len(infos)} entries; the limit is {limits.max_package_entries} "
                              "(setting max_package_entries)")
    unpacked_limit, ratio = limits.max_package_unpacked_bytes, limits.max_compression_ratio
    if any(not i.filename for i in infos):
        raise BadRequest("Package ZIP has an entry with an empty name")
    declared = sum(i.file_size for i in infos if not i.is_dir())
    if declared > unpacked_limit:
        raise PayloadTooLarge(f"Package ZIP unpacks to {declared} bytes; the limit is {unpacked_limit} "
                              "(setting max_package_unpacked_bytes)")
    tree = _Tree()
    planned = []
    for info in infos:
        if info.is_dir():
            continue  # folders come from the files' paths
        path = entry_path(info.filename)
        clash = tree.clash(path)
        if clash is not None:
            raise BadRequest(f"Package ZIP entry {json.dumps(info.filename[:200])} clashes with {json.dumps(clash)}: "
                             "one path cannot be both a file and a folder")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            # bzip2/lzma entries are decompressed by zipfile without an output bound: refused, the CLI deflates
            raise BadRequest(f"Package ZIP entry {json.dumps(info.filename[:200])} uses compression method "
                             f"{info.compress_type}; only stored and deflated entries are accepted")
        if info.file_size > RATIO_FLOOR and info.file_size > ratio * max(info.compress_size, 1):
            raise _ratio_error(info.filename, info.file_size, info.compress_size, ratio)
        tree.add(path, dest / path)
        planned.append((info, path))

    total = 0
    for info, path in planned:
        target = dest / path
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with archive.open(info) as src, open(target, "wb") as out:
                written = 0
                while True:
                    chunk = src.read(CHUNK)
                    if not chunk:
                        break
                    written += len(chunk)
                    total += len(chunk)
                    if total > unpacked_limit:
                        raise PayloadTooLarge(f"Package ZIP unpacks to more than {unpacked_limit} bytes "
                                              "(setting max_package_unpacked_bytes)")
                    if written > RATIO_FLOOR:
                        # compressed bytes really consumed so far (the header's compress_size may lie)
                        consumed = _compressed_used(src, info)
                        if written > ratio * max(consumed, 1):
                            raise _ratio_error(info.filename, written, consumed, ratio)
                    out.write(chunk)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, RuntimeError, EOFError, ValueError,
                NotImplementedError, struct.error, OverflowError, zlib.error) as e:
            raise BadRequest(f"Package ZIP entry {json.dumps(info.filename[:200])} cannot be read", str(e)) from None
    return tree.files


def _compressed_used(src: Any, info: zipfile.ZipInfo) -> int:
    """Compressed bytes the decompressor has really used so far: read from the file minus the unconsumed tail
    (ZipExtFile internals, stable since 3.3; without them, the header's size)."""
    left = getattr(src, "_compress_left", None)
    if not isinstance(left, int):
        return info.compress_size
    tail = getattr(getattr(src, "_decompressor", None), "unconsumed_tail", b"") or b""
    return max(info.compress_size - left - len(tail), 0)


def _ratio_error(name: str, unpacked: int, packed: int, ratio: float) -> PayloadTooLarge:
    return PayloadTooLarge(f"Package ZIP entry {json.dumps(name[:200])} unpacks to {unpacked} bytes from {packed}: "
                           f"more than {ratio:g} times (setting max_compression_ratio)")


def read_zip(body: bytes, limits: ZipLimits | None = None) -> dict[str, bytes]:
    """Entries by POSIX path, in memory (for tools and tests; publish unpacks to disk)."""
    with tempfile.TemporaryDirectory(prefix="grokemu-zip-") as tmp:
        files = extract_zip(io.BytesIO(body), Path(tmp), limits or ZipLimits())
        return {path: p.read_bytes() for path, p in files.items()}


def spool_body(stream: IO[bytes], limit: int, directory: Path) -> IO[bytes]:
    """Copy a request body into a temporary file (memory up to 8 MiB, then an unnamed file in `directory`, gone
    whatever happens to the process), refusing more than `limit` bytes whatever Content-Length said."""
    directory.mkdir(parents=True, exist_ok=True)
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY, dir=directory)
    size = 0
    try:
        while True:
            buf = stream.read(CHUNK)
            if not buf:
                break
            size += len(buf)
            if size > limit:
                raise PayloadTooLarge(f"Package upload is bigger than {limit} bytes (setting max_package_bytes)")
            spool.write(buf)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool


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
        data = entries[rel]
        if data is None:
            digest.update(f"dir:{rel}:".encode())
            continue
        digest.update(f"file:{rel}:".encode())
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
        dirs[d] = DockerDir(dir=d, dockerfile=dockerfile.decode("utf-8", "replace") if dockerfile else None,
                            config=config, image_json=image_json,
                            content_hash=folder_hash(files, prefix, {"image.json", *sub_image_jsons}))
    return list(dirs.values())


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
    def __init__(self, store: Store, clock: Clock, root: Path, images: "ImageService", spawner: "Spawner",
                 settings: Any = None):
        self._store = store
        self._clock = clock
        self._root = root
        self._images = images
        self._spawner = spawner
        self._settings = settings  # read at each publish: the limits are settings
        # One publish at a time: its read-merge-rename-commit-remove sequence is never interleaved with another's.
        self._publish_lock = threading.Lock()
        root.mkdir(parents=True, exist_ok=True)

    @property
    def root(self) -> Path:
        return self._root

    # -- reading ---------------------------------------------------------------------------------------------------
    @staticmethod
    def check_name(package_name: Any) -> str:
        return check_package_name(package_name)

    def files_dir(self, package_name: str) -> Path:
        """The folder of the package's current files (resolved through its database row); for a package never
        published, the folder it would get."""
        found = current_files_dir(self._root, self._store.get_package(check_package_name(package_name)))
        return found if found is not None else package_dir(self._root, package_name)

    def _current_dir(self, package_name: str) -> Path | None:
        try:
            check_package_name(package_name)
        except BadRequest:
            return None
        return current_files_dir(self._root, self._store.get_package(package_name))

    def current_files(self, package_name: str) -> dict[str, Path]:
        base = self._current_dir(package_name)
        if base is None:
            return {}
        legacy = not VERSION_ID.match(base.name)
        if not legacy and not _is_real_dir(base.parent):
            return {}  # the package's folder is a symlink: not ours, never followed
        return regular_files(base, skip_top=VERSION_ID if legacy else None)

    def entities(self, package_name: str) -> list[dict[str, Any]]:
        """Entities of a package that container environment expressions may name (connections/*.json)."""
        files: dict[str, bytes] = {}
        for path, p in self.current_files(package_name).items():
            if path.startswith("connections/") and path.endswith(".json") and path.count("/") == 1:
                try:
                    data = read_small(p, path)
                    load_json(data, path)
                except (BadRequest, PayloadTooLarge, OSError):
                    continue  # a connection that is not valid JSON names nothing (as before), never a crash
                files[path] = data
        return entities_from_files(files)

    def find_package(self, ref: str) -> tuple[str, list[dict[str, Any]]] | None:
        """A published package by any of its names (`MolTrack`, `moltrack`, `@datagrok/moltrack`)."""
        for record in self._store.list_packages():
            friendly_name = record.get("friendlyName")
            if package_matches(record["name"], friendly_name if isinstance(friendly_name, str) else None, ref):
                return record["name"], self.entities(record["name"])
        return None

    def timestamps(self, package_name: str) -> dict[str, str]:
        """The map the CLI compares mtimes against (R1). Unknown packages get {} (not 404, or the CLI retries the
        legacy URL)."""
        record = self._store.get_package(check_package_name(package_name))
        return dict(record.get("timestamps") or {}) if record else {}

    # -- publish ---------------------------------------------------------------------------------------------------
    def spool(self, stream: IO[bytes]) -> IO[bytes]:
        """The request body in a temporary file under the packages folder, at most max_package_bytes."""
        return spool_body(stream, int(getattr(self._settings, "max_package_bytes", 256 * MiB)), self._root)

    def publish(self, package_name: str, body: bytes | IO[bytes], *, debug: bool, rebuild: bool = False,
                drop_db: bool = False, suffix: str | None = None, login: str) -> PublishResult:
        check_package_name(package_name)
        source = io.BytesIO(body) if isinstance(body, (bytes, bytearray, memoryview)) else body
        staging = self._root / f".staging-{uuid.uuid4().hex}"
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
        home = package_dir(self._root, package_name)
        created_home = not _is_real_dir(home)
        if created_home:
            home.mkdir()
        version_id = f"v{uuid.uuid4().hex}"
        target = home / version_id
        committed = False
        try:
            os.rename(tree, target)
            now = self._clock.now()
            with self._store.transaction():
                self._store.put_package({
                    "name": package_name, "version": version, "friendlyName": meta.get("friendlyName"),
                    "description": meta.get("description"), "timestamps": timestamps, "debug": flags["debug"],
                    "rebuild": flags["rebuild"], "dropDb": flags["drop_db"], "suffix": flags["suffix"],
                    "publishedBy": flags["login"], "updatedOn": now, "filesVersion": version_id})
                images = self._sync_entities(package_name, meta, version, docker_dirs, flags["login"], now)
            committed = True
        finally:
            if not committed:
                shutil.rmtree(target, ignore_errors=True)
                if created_home:
                    try:
                        home.rmdir()
                    except OSError:
                        pass
        # Committed: everything else in the package's folder is a previous version (or a legacy layout's files).
        for entry in list(home.iterdir()):
            if entry.name != version_id:
                _remove(entry)
        return images

    # -- startup -----------------------------------------------------------------------------------------------
    def sweep(self) -> int:
        """Remove what an interrupted publish left: staging folders, version folders no row points to (a crash
        between rename and commit, or between commit and removing the previous version), old swap leftovers.
        Called once at startup, before requests are served. Returns how many entries were removed."""
        referenced: dict[str, str | None] = {}
        for record in self._store.list_packages():
            try:
                referenced[quote(check_package_name(record.get("name")), safe="")] = record.get("filesVersion")
            except BadRequest:
                continue
        removed = 0
        for entry in list(self._root.iterdir()):
            if entry.name.startswith(".staging-") or _OLD_SWAP.search(entry.name):
                _remove(entry)
                removed += 1
                continue
            if not _is_real_dir(entry):
                continue
            if entry.name in referenced and referenced[entry.name] is not None:
                keep = referenced[entry.name]
                if not (entry / keep).is_dir():
                    log.warning("package folder %s has no version %s (its database row points there)", entry, keep)
                for child in list(entry.iterdir()):
                    if child.name != keep:
                        _remove(child)
                        removed += 1
                continue
            # a legacy layout (files in the folder itself) or a folder no row points to: only version folders go
            for child in list(entry.iterdir()):
                if VERSION_ID.match(child.name):
                    _remove(child)
                    removed += 1
            if entry.name not in referenced:
                try:
                    entry.rmdir()  # only when empty: anything else is not ours to delete
                except OSError:
                    pass
        if removed:
            log.info("removed %d leftovers of interrupted publishes from %s", removed, self._root)
        return removed

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


def _remove(path: Path) -> None:
    try:
        if _is_real_dir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        log.warning("could not remove %s", path, exc_info=True)
