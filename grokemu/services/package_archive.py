"""Reading a package upload: the request body spooled to disk, the ZIP unpacked under its limits.

Every limit is counted while decompressing, never taken from the headers alone; every breach is a 413 naming its
setting (config.py). Entry paths are checked by domain/package_rules.py before anything is written.
"""
from __future__ import annotations

import io
import json
import struct
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from grokemu.domain.errors import BadRequest, PayloadTooLarge, disk_full
from grokemu.domain.package_rules import ENTRY_PATH_MAX_BYTES, METADATA_MAX_BYTES, MiB, entry_path

CHUNK = 256 * 1024  # decompression / copy unit: memory stays flat however big an entry is
RATIO_FLOOR = MiB  # the compression ratio is checked for entries bigger than this (small files compress a lot)
# zipfile's end-of-central-directory reader and its record offsets: private (not in typeshed), stable since Python 2
_ZIP: Any = zipfile
_SPOOL_IN_MEMORY = 8 * MiB  # an upload bigger than this is spooled to an unnamed file under <data>/packages

FileSource = bytes | Path  # a file's bytes (tests, small data) or where it lies in a staging/version folder


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
    def from_settings(cls, settings: Any) -> ZipLimits:
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
        endrec = _ZIP._EndRecData(fp)  # the same reader zipfile uses; private but stable since Python 2
    except (OSError, struct.error, ValueError) as e:
        raise _not_a_zip(e) from None
    if not endrec:
        raise _not_a_zip("no end of central directory record")
    declared = endrec[_ZIP._ECD_ENTRIES_TOTAL]
    if declared > limits.max_package_entries:
        raise PayloadTooLarge(f"Package ZIP has {declared} entries; the limit is {limits.max_package_entries} "
                              "(setting max_package_entries)")
    size_cd, offset_cd = endrec[_ZIP._ECD_SIZE], endrec[_ZIP._ECD_OFFSET]
    start = endrec[_ZIP._ECD_LOCATION] - size_cd
    if endrec[_ZIP._ECD_SIGNATURE] == _ZIP.stringEndArchive64:
        start -= _ZIP.sizeEndCentDir64 + _ZIP.sizeEndCentDir64Locator
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
            full = disk_full(e)
            if full is not None:  # our disk, not the archive: 507, and the caller removes the staging folder
                raise full from e
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


def spool_body(stream: IO[bytes], limit: int, directory: Path) -> IO[bytes]:
    """Copy a request body into a temporary file (memory up to 8 MiB, then an unnamed file in `directory`, gone
    whatever happens to the process), refusing more than `limit` bytes whatever Content-Length said."""
    directory.mkdir(parents=True, exist_ok=True)
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY, dir=str(directory))
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

