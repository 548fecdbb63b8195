"""A repository's blobs and the upload sessions that add them: stat, delete, mount, monolithic and chunked uploads,
digest verification, expiry of abandoned sessions.

Wire facts are in docs/registry.md; trap numbers (T1..T17) are cited where they shape the code.
"""
from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from grokemu.domain.clock import Clock
from grokemu.domain.errors import disk_full
from grokemu.domain.ports import BlobStore, ShortRead
from grokemu.domain.references import UPLOAD_ID
from grokemu.services.registry.errors import (
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    RangeInvalid,
)
from grokemu.services.registry.references import check_digest, check_name, hasher_for, valid_name

UPLOAD_TTL = 24 * 3600.0  # an upload session untouched this long is abandoned (distribution purges after 168 h)
_CONTENT_RANGE = re.compile(r"^(?:bytes[ =])?(\d+)-(\d+)(?:/(?:\d+|\*))?$")


@dataclass(frozen=True)
class BlobInfo:
    digest: str
    size: int
    path: Path


@dataclass(frozen=True)
class UploadState:
    """An open session (`digest` is None) or, after a mount / monolithic upload, a committed blob."""

    repo: str
    upload_id: str | None
    offset: int = 0
    digest: str | None = None
    mounted: bool = False

    @property
    def location(self) -> str:
        if self.digest:
            return f"/v2/{self.repo}/blobs/{self.digest}"
        return f"/v2/{self.repo}/blobs/uploads/{self.upload_id}"

    @property
    def range(self) -> str:
        # Trap T1/T2: no `bytes=` prefix, end = last byte offset (docker takes end+1 as the layer size);
        # an empty upload answers `0-0` as distribution does.
        return f"0-{max(self.offset - 1, 0)}"


class Blobs:
    """Blobs as one repository sees them, and the sessions that upload them. `lock` guards the session table; the
    registry holds it while it clears the store (RegistryService.reset)."""

    def __init__(self, store: BlobStore, clock: Clock, *, upload_ttl: float = UPLOAD_TTL):
        self.store = store
        self._clock = clock
        self.upload_ttl = upload_ttl
        self.lock = threading.Lock()
        self._upload_locks: dict[str, threading.Lock] = {}
        # Streaming hash state per open session: (offset it covers, sha256 object). Lost on restart; then the
        # upload file is re-hashed at commit.
        self._hash_state: dict[str, tuple[int, hashlib._Hash]] = {}  # sha256 so far, by upload
        self._last_purge = float("-inf")

    # -- blobs ------------------------------------------------------------------------------------------------------

    def stat_blob(self, repo: str, digest: str) -> BlobInfo:
        """A blob visible in `repo`: linked there (trap T16: per-repository, like the reference registry)."""
        check_name(repo)
        check_digest(digest)
        if self.store.layer_linked(repo, digest):
            size = self.store.blob_size(digest)
            if size is not None:
                return BlobInfo(digest, size, self.store.blob_path(digest))
        raise BlobUnknown(f"blob unknown to registry: {digest}", detail={"digest": digest})

    def delete_blob(self, repo: str, digest: str) -> None:
        """Unlink the blob from `repo`; the bytes go at the next gc if nothing else references them."""
        check_name(repo)
        check_digest(digest)
        if not self.store.unlink_layer(repo, digest):
            raise BlobUnknown(f"blob unknown to registry: {digest}", detail={"digest": digest})

    # -- uploads ----------------------------------------------------------------------------------------------------

    def start_upload(self, repo: str, *, mount: str | None = None, from_repo: str | None = None,
                     digest: str | None = None, stream: IO[bytes] | None = None,
                     length: int | None = None) -> UploadState:
        """POST /blobs/uploads/: a cross-repo mount (`mount`+`from`; without `from`, any blob this registry has,
        as OCI 1.1 allows), a single-POST monolithic upload (`digest` + body), or a new session (202)."""
        check_name(repo)
        self._maybe_purge()
        if mount:
            check_digest(mount)
            mounted = self._mount(repo, mount, from_repo)
            if mounted:
                return mounted
        # Mount impossible: OCI and docker (trap: stale candidate -> 202 -> PATCH) expect a normal session.
        upload_id = self.store.create_upload(repo, self._clock.now())
        self._hash_state[upload_id] = (0, hashlib.sha256())
        if digest:
            return self.finish_upload(repo, upload_id, digest, stream, length)
        return UploadState(repo, upload_id, 0)

    def _mount(self, repo: str, digest: str, from_repo: str | None) -> UploadState | None:
        if from_repo is not None:
            if not valid_name(from_repo) or not self.store.layer_linked(from_repo, digest):
                return None
        if self.store.blob_size(digest) is None:
            return None
        self.store.link_layer(repo, digest, self._clock.now())
        if self.store.blob_size(digest) is None:  # a gc removed it meanwhile: upload it after all
            self.store.unlink_layer(repo, digest)
            return None
        return UploadState(repo, None, digest=digest, mounted=True)

    def _session(self, repo: str, upload_id: str) -> dict:
        check_name(repo)
        if not UPLOAD_ID.match(upload_id or ""):
            raise BlobUploadUnknown("blob upload unknown to registry", detail={"uuid": upload_id})
        info = self.store.upload_info(upload_id)
        if info is None:
            self._forget(upload_id)
        if info is None or info.get("repo") != repo:
            raise BlobUploadUnknown("blob upload unknown to registry", detail={"uuid": upload_id})
        if self._clock.now() - float(info.get("updated", 0)) > self.upload_ttl:
            self._drop_upload(upload_id)
            raise BlobUploadUnknown("blob upload expired; restart the upload", detail={"uuid": upload_id})
        return info

    def _upload_lock(self, upload_id: str) -> threading.Lock:
        if not UPLOAD_ID.match(upload_id or ""):
            raise BlobUploadUnknown("blob upload unknown to registry", detail={"uuid": upload_id})
        with self.lock:
            return self._upload_locks.setdefault(upload_id, threading.Lock())

    def upload_status(self, repo: str, upload_id: str) -> UploadState:
        info = self._session(repo, upload_id)
        return UploadState(repo, upload_id, info["size"])

    def append_upload(self, repo: str, upload_id: str, stream: IO[bytes] | None, length: int | None = None,
                      content_range: str | None = None) -> UploadState:
        """PATCH: add a chunk. Docker sends the whole layer as one chunked PATCH with no Content-Range (trap T4);
        OCI chunked clients send `Content-Range: <start>-<end>`, which must start where the upload ends."""
        with self._upload_lock(upload_id):
            info = self._session(repo, upload_id)
            offset = info["size"]
            if content_range:
                m = _CONTENT_RANGE.match(content_range.strip())
                if not m:
                    raise RangeInvalid(f"invalid Content-Range: {content_range!r}", headers=self._range_headers(
                        repo, upload_id, offset))
                start, end = int(m.group(1)), int(m.group(2))
                if start != offset or end < start or (length is not None and end - start + 1 != length):
                    raise RangeInvalid(f"chunk {start}-{end} does not continue the upload at {offset}",
                                       headers=self._range_headers(repo, upload_id, offset))
                if length is None:
                    length = end - start + 1
            with self._dropped_when_disk_full(upload_id):
                offset = self._append(upload_id, offset, stream, length)
                self.store.touch_upload(upload_id, self._clock.now())
            return UploadState(repo, upload_id, offset)

    @contextmanager
    def _dropped_when_disk_full(self, upload_id: str) -> Iterator[None]:
        """A full disk ends the session: its bytes go at once (they are what the disk lacks), the client gets 507
        and starts the upload over once there is room, as docker does (docs/faults.md §3)."""
        try:
            yield
        except OSError as e:
            full = disk_full(e)
            if full is None:
                raise
            self._drop_upload(upload_id)
            raise full from e

    @staticmethod
    def _range_headers(repo: str, upload_id: str, offset: int) -> dict[str, str]:
        state = UploadState(repo, upload_id, offset)
        return {"Location": state.location, "Range": state.range, "Docker-Upload-UUID": upload_id}

    def _append(self, upload_id: str, offset: int, stream: IO[bytes] | None, length: int | None) -> int:
        if stream is None or length == 0:
            return offset
        state = self._hash_state.get(upload_id)
        hasher = state[1].copy() if state and state[0] == offset else None
        try:
            new_size = self.store.append_upload(upload_id, stream, hasher or _NullHasher(), length)
        except ShortRead as e:
            raise BlobUploadInvalid(f"upload body incomplete: {e}") from None
        if hasher is not None:
            self._hash_state[upload_id] = (new_size, hasher)
        else:
            self._hash_state.pop(upload_id, None)
        return new_size

    def finish_upload(self, repo: str, upload_id: str, digest: str, stream: IO[bytes] | None = None,
                      length: int | None = None) -> UploadState:
        """PUT ?digest=: take the last chunk (maybe empty), verify the digest of the WHOLE upload (trap T12) and
        commit by rename. On mismatch the session is dropped and nothing is stored."""
        check_digest(digest)
        with self._upload_lock(upload_id):
            info = self._session(repo, upload_id)
            with self._dropped_when_disk_full(upload_id):
                return self._finish(repo, upload_id, digest, info, stream, length)

    def _finish(self, repo: str, upload_id: str, digest: str, info: dict, stream: IO[bytes] | None,
                length: int | None) -> UploadState:
        """finish_upload under the session's lock: the last chunk, the digest check, link and commit."""
        size = self._append(upload_id, info["size"], stream, length)
        alg = digest.split(":", 1)[0]
        state = self._hash_state.get(upload_id)
        if alg == "sha256" and state and state[0] == size:
            actual = f"sha256:{state[1].hexdigest()}"
        else:
            hasher = hasher_for(alg)
            self.store.hash_upload(upload_id, hasher)
            actual = f"{alg}:{hasher.hexdigest()}"
        if actual != digest:
            self._drop_upload(upload_id)
            raise DigestInvalid(f"digest {digest} does not match the uploaded content ({actual})",
                                detail={"digest": digest, "actual": actual})
        # Link first, then rename: a concurrent gc sees a fresh link and keeps the blob; a HEAD in between
        # finds the link without bytes and answers 404, which is right until this PUT returns.
        self.store.link_layer(repo, digest, self._clock.now())
        try:
            self.store.commit_upload(upload_id, digest)
        except BaseException:
            self.store.unlink_layer(repo, digest)
            raise
        self._forget(upload_id)
        return UploadState(repo, None, size, digest=digest)

    def cancel_upload(self, repo: str, upload_id: str) -> None:
        with self._upload_lock(upload_id):
            self._session(repo, upload_id)
            self._drop_upload(upload_id)

    def _drop_upload(self, upload_id: str) -> None:
        self.store.delete_upload(upload_id)
        self._forget(upload_id)

    def _forget(self, upload_id: str) -> None:
        self._hash_state.pop(upload_id, None)
        with self.lock:
            self._upload_locks.pop(upload_id, None)

    def forget_all(self) -> None:
        """Drop every session's in-memory state (the caller holds `lock` and clears the store)."""
        self._hash_state.clear()
        self._upload_locks.clear()

    def _maybe_purge(self) -> None:
        now = self._clock.now()
        if now - self._last_purge >= min(600.0, self.upload_ttl):
            self._last_purge = now
            self.purge_uploads()

    def purge_uploads(self) -> int:
        """Delete sessions untouched for `upload_ttl` seconds (and debris without metadata)."""
        now, removed = self._clock.now(), 0
        for upload_id, info in list(self.store.iter_uploads()):
            if info is None:
                self.store.remove_upload_entry(upload_id)
                removed += 1
            elif now - float(info.get("updated", 0)) > self.upload_ttl:
                lock = self._upload_lock(upload_id)
                if lock.acquire(blocking=False):  # a request busy with it right now wins
                    try:
                        self.store.remove_upload_entry(upload_id)
                        self._forget(upload_id)
                        removed += 1
                    finally:
                        lock.release()
        return removed


class _NullHasher:
    def update(self, _data) -> None:
        pass
