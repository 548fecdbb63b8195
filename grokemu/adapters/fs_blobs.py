"""Filesystem storage for the registry, laid out like distribution's filesystem driver:

    <root>/blobs/<alg>/<hex[:2]>/<hex>                          content-addressed bytes (layers, configs, manifests)
    <root>/uploads/<uuid>/data, meta.json                         upload sessions in progress
    <root>/repositories/<name>/_layers/<alg>/<hex>                "this repo has this blob" (text: link time)
    <root>/repositories/<name>/_manifests/revisions/<alg>/<hex>   "this repo has this manifest" (JSON: media type)
    <root>/repositories/<name>/_manifests/tags/<tag>              tag -> digest

A blob only appears under its digest by `rename` of a fully written, fsync'ed, verified upload file, so a crash at
any point leaves either no blob or the right bytes. The adapter trusts its callers to pass validated names, digests
and tags (RegistryService checks them); `_safe_*` still refuse anything that could leave the root, with the same
patterns (domain/references.py). Implements the BlobStore port (domain/ports.py).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TypeVar

from grokemu.domain.ports import ShortRead
from grokemu.domain.references import NAME_COMPONENT, SUPPORTED_DIGEST, TAG, UPLOAD_ID

__all__ = ["CHUNK", "FsBlobStore", "ShortRead"]

_T = TypeVar("_T")
CHUNK = 1024 * 1024  # copy unit: memory stays flat however big the layer is


def _safe_digest(digest: str) -> tuple[str, str]:
    if not SUPPORTED_DIGEST.match(digest):
        raise ValueError(f"bad digest {digest!r}")
    alg, hexpart = digest.split(":", 1)
    return alg, hexpart


def _safe_repo(name: str) -> str:
    if not name or not all(NAME_COMPONENT.match(c) for c in name.split("/")):
        raise ValueError(f"bad repository name {name!r}")
    return name


def _atomic_write(path: Path, data: bytes, fsync: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


class FsBlobStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self._blobs = self.root / "blobs"
        self._uploads = self.root / "uploads"
        self._repos = self.root / "repositories"
        for d in (self._blobs, self._uploads, self._repos):
            d.mkdir(parents=True, exist_ok=True)

    def clear(self) -> None:
        for d in (self._blobs, self._uploads, self._repos):
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True, exist_ok=True)

    # -- blobs ------------------------------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        alg, hexpart = _safe_digest(digest)
        return self._blobs / alg / hexpart[:2] / hexpart

    def blob_size(self, digest: str) -> int | None:
        try:
            return self.blob_path(digest).stat().st_size
        except FileNotFoundError:
            return None

    def read_blob(self, digest: str) -> bytes | None:
        try:
            return self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            return None

    def put_blob_bytes(self, digest: str, data: bytes) -> None:
        """Store a small blob (a manifest) whose digest the caller has already computed from `data`."""
        path = self.blob_path(digest)
        if path.exists():
            return
        _atomic_write(path, data, fsync=True)

    def delete_blob(self, digest: str) -> int:
        path = self.blob_path(digest)
        try:
            size = path.stat().st_size
            path.unlink()
            return size
        except FileNotFoundError:
            return 0

    def iter_blobs(self) -> Iterator[tuple[str, int]]:
        for alg_dir in sorted(p for p in self._blobs.iterdir() if p.is_dir()):
            for sub in sorted(p for p in alg_dir.iterdir() if p.is_dir()):
                for f in sorted(sub.iterdir()):
                    digest = f"{alg_dir.name}:{f.name}"
                    if SUPPORTED_DIGEST.match(digest):
                        try:
                            yield digest, f.stat().st_size
                        except FileNotFoundError:
                            continue

    # -- uploads ----------------------------------------------------------------------------------------------------

    def _upload_dir(self, upload_id: str) -> Path:
        if not UPLOAD_ID.match(upload_id):
            raise ValueError(f"bad upload id {upload_id!r}")
        return self._uploads / upload_id

    def create_upload(self, repo: str, now: float) -> str:
        _safe_repo(repo)
        upload_id = uuidlib.uuid4().hex
        # Prepared under a temporary name and renamed into place: a session directory always has its metadata, so
        # a concurrent purge never mistakes a session being created for debris.
        tmp = self._uploads / f".tmp-{upload_id}"
        tmp.mkdir()
        try:
            (tmp / "data").touch()
            (tmp / "meta.json").write_text(json.dumps({"repo": repo, "started": now, "updated": now}))
            os.rename(tmp, self._upload_dir(upload_id))
        except BaseException:  # a full disk, mostly: no half-made session stays behind
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return upload_id

    def upload_info(self, upload_id: str) -> dict | None:
        """{"repo", "started", "updated", "size"} or None for an unknown session."""
        try:
            d = self._upload_dir(upload_id)
            meta = json.loads((d / "meta.json").read_bytes())
            meta["size"] = (d / "data").stat().st_size
            return meta
        except (ValueError, OSError):
            return None

    def touch_upload(self, upload_id: str, now: float) -> None:
        d = self._upload_dir(upload_id)
        meta = json.loads((d / "meta.json").read_bytes())
        meta["updated"] = now
        _atomic_write(d / "meta.json", json.dumps(meta).encode())

    def append_upload(self, upload_id: str, stream: IO[bytes], hasher, length: int | None = None) -> int:
        """Copy `stream` to the end of the upload file in CHUNK pieces, feeding `hasher` as it goes; returns the new
        size. If the body fails part way (client gone, short read), the file is cut back to where it was, so the
        session stays consistent with the caller's hash state (the caller passes a copy and keeps it on success)."""
        path = self._upload_dir(upload_id) / "data"
        with open(path, "r+b") as f:
            f.seek(0, os.SEEK_END)
            start = f.tell()
            copied = 0
            try:
                while True:
                    want = CHUNK if length is None else min(CHUNK, length - copied)
                    if want <= 0:
                        break
                    buf = stream.read(want)
                    if not buf:
                        break
                    f.write(buf)
                    hasher.update(buf)
                    copied += len(buf)
                if length is not None and copied != length:
                    raise ShortRead(f"body ended after {copied} of {length} bytes")
            except BaseException:
                f.truncate(start)
                raise
            return start + copied

    def hash_upload(self, upload_id: str, hasher) -> None:
        with open(self._upload_dir(upload_id) / "data", "rb") as f:
            while buf := f.read(CHUNK):
                hasher.update(buf)

    def commit_upload(self, upload_id: str, digest: str) -> None:
        """Move a verified upload under its digest: fsync, then rename (same filesystem, atomic). If the blob is
        already there the rename replaces it with identical bytes, so it exists afterwards whatever a concurrent gc
        did meanwhile."""
        src = self._upload_dir(upload_id) / "data"
        dst = self.blob_path(digest)
        with open(src, "rb") as f:
            os.fsync(f.fileno())
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
        self.delete_upload(upload_id)

    def delete_upload(self, upload_id: str) -> bool:
        d = self._upload_dir(upload_id)
        if not d.exists():
            return False
        shutil.rmtree(d, ignore_errors=True)
        return True

    def iter_uploads(self, debris_age: float = 3600.0) -> Iterator[tuple[str, dict | None]]:
        """(upload id, info) for each session; (name, None) for debris (a session or temporary directory without
        readable metadata, left by a crash) once it is `debris_age` seconds old by its mtime."""
        for d in self._uploads.iterdir():
            info = self.upload_info(d.name) if UPLOAD_ID.match(d.name) else None
            if info is not None:
                yield d.name, info
                continue
            try:
                age = time.time() - d.stat().st_mtime
            except FileNotFoundError:
                continue
            if age > debris_age:
                yield d.name, None

    def sweep_debris(self) -> int:
        """At startup, before any request: remove what a killed process left that is not resumable state.
        Upload session folders without readable metadata or data (a crash while creating one, or after its blob was
        committed and before the folder went) and `.tmp-*` files of interrupted atomic writes anywhere go, whatever
        their age; a session with metadata and data is a resumable upload and stays (purge_uploads expires it).
        Layer links whose blob is missing (a crash between linking and the rename that commits the blob) go too:
        no repository may claim a blob it never received. Returns how many entries were removed."""
        removed = 0
        for d in list(self._uploads.iterdir()):
            if UPLOAD_ID.match(d.name) and self.upload_info(d.name) is not None:
                continue
            self.remove_upload_entry(d.name)
            removed += 1
        for base in (self._blobs, self._repos, self._uploads):
            for dirpath, _, filenames in os.walk(base):
                for fn in filenames:
                    if fn.startswith(".tmp-"):
                        _unlink(Path(dirpath) / fn)
                        removed += 1
        for repo in self.repositories():
            for digest, _ in list(self.iter_layer_links(repo)):
                if self.blob_size(digest) is None:
                    self.unlink_layer(repo, digest)
                    removed += 1
        return removed

    def remove_upload_entry(self, name: str) -> None:
        p = self._uploads / name
        if p.parent == self._uploads:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)

    # -- repositories -----------------------------------------------------------------------------------------------

    def _repo_dir(self, repo: str) -> Path:
        return self._repos / _safe_repo(repo)

    def _layer_link(self, repo: str, digest: str) -> Path:
        alg, hexpart = _safe_digest(digest)
        return self._repo_dir(repo) / "_layers" / alg / hexpart

    def link_layer(self, repo: str, digest: str, now: float) -> None:
        _atomic_write(self._layer_link(repo, digest), repr(now).encode())

    def layer_linked(self, repo: str, digest: str) -> bool:
        return self._layer_link(repo, digest).is_file()

    def unlink_layer(self, repo: str, digest: str) -> bool:
        return _unlink(self._layer_link(repo, digest))

    def iter_layer_links(self, repo: str) -> Iterator[tuple[str, float]]:
        """(digest, time linked) for every blob linked into `repo`."""
        yield from self._iter_links(self._repo_dir(repo) / "_layers", lambda raw: float(raw or 0))

    def _manifest_link(self, repo: str, digest: str) -> Path:
        alg, hexpart = _safe_digest(digest)
        return self._repo_dir(repo) / "_manifests" / "revisions" / alg / hexpart

    def link_manifest(self, repo: str, digest: str, media_type: str, now: float) -> None:
        _atomic_write(self._manifest_link(repo, digest), json.dumps({"mediaType": media_type, "linked": now}).encode())

    def manifest_link(self, repo: str, digest: str) -> dict | None:
        try:
            return json.loads(self._manifest_link(repo, digest).read_bytes())
        except (FileNotFoundError, NotADirectoryError, ValueError):
            return None

    def unlink_manifest(self, repo: str, digest: str) -> bool:
        return _unlink(self._manifest_link(repo, digest))

    def iter_manifest_links(self, repo: str) -> Iterator[tuple[str, dict]]:
        yield from self._iter_links(self._repo_dir(repo) / "_manifests" / "revisions", json.loads)

    @staticmethod
    def _iter_links(base: Path, parse: Callable[[bytes], _T]) -> Iterator[tuple[str, _T]]:
        if not base.is_dir():
            return
        for alg_dir in sorted(p for p in base.iterdir() if p.is_dir()):
            for f in sorted(alg_dir.iterdir()):
                digest = f"{alg_dir.name}:{f.name}"
                if not SUPPORTED_DIGEST.match(digest):
                    continue
                try:
                    yield digest, parse(f.read_bytes())
                except (OSError, ValueError):
                    continue

    def _tag_path(self, repo: str, tag: str) -> Path:
        if not TAG.match(tag):
            raise ValueError(f"bad tag {tag!r}")
        return self._repo_dir(repo) / "_manifests" / "tags" / tag

    def set_tag(self, repo: str, tag: str, digest: str) -> None:
        _safe_digest(digest)
        _atomic_write(self._tag_path(repo, tag), digest.encode())

    def get_tag(self, repo: str, tag: str) -> str | None:
        try:
            return self._tag_path(repo, tag).read_text().strip() or None
        except (FileNotFoundError, NotADirectoryError):
            return None

    def delete_tag(self, repo: str, tag: str) -> bool:
        return _unlink(self._tag_path(repo, tag))

    def tags(self, repo: str) -> dict[str, str]:
        d = self._repo_dir(repo) / "_manifests" / "tags"
        if not d.is_dir():
            return {}
        out = {}
        for f in d.iterdir():
            if TAG.match(f.name):
                try:
                    out[f.name] = f.read_text().strip()
                except FileNotFoundError:
                    continue
        return out

    def linked_since(self, digest: str, since: float) -> bool:
        """Whether any repository linked `digest` (as a layer or manifest) at or after `since` (clock time)."""
        alg, hexpart = _safe_digest(digest)
        for repo in self.repositories():
            d = self._repos / repo
            try:
                if float((d / "_layers" / alg / hexpart).read_bytes() or 0) >= since:
                    return True
            except (OSError, ValueError):
                pass
            link = self.manifest_link(repo, digest)
            if link is not None and float(link.get("linked", 0)) >= since:
                return True
        return False

    def repo_exists(self, repo: str) -> bool:
        d = self._repo_dir(repo)
        return (d / "_manifests").is_dir() or (d / "_layers").is_dir()

    def repositories(self) -> list[str]:
        """Every repository with a `_manifests` or `_layers` directory, sorted."""
        out = []
        for dirpath, dirnames, _ in os.walk(self._repos):
            if "_manifests" in dirnames or "_layers" in dirnames:
                out.append(os.path.relpath(dirpath, self._repos).replace(os.sep, "/"))
            dirnames[:] = [d for d in dirnames if not d.startswith("_")]
        return sorted(out)

    def prune_empty_dirs(self) -> None:
        """Remove empty directories under repositories/ and blobs/ (after gc)."""
        for base in (self._repos, self._blobs):
            for dirpath, _, _ in sorted(os.walk(base), key=lambda t: -len(t[0])):
                if Path(dirpath) != base:
                    try:
                        os.rmdir(dirpath)
                    except OSError:
                        pass


def _unlink(path: Path) -> bool:
    """Remove a file; False when it was already gone (deletes race with gc and with each other)."""
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False
