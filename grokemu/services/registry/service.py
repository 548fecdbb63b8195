"""RegistryService: the one object the web layer (web/registry.py), image validation and the CLI talk to. It holds
the BlobStore it is given (create_app and `grokemu registry gc` pass the filesystem one) and hands each request to
the part that owns it: blobs and uploads (uploads.py), manifests, tags and listings (manifests.py), gc (gc.py)."""
from __future__ import annotations

import logging
from typing import IO

from grokemu.domain.clock import Clock
from grokemu.domain.ports import BlobStore
from grokemu.services.registry.gc import GC_GRACE, collect_garbage
from grokemu.services.registry.manifests import Manifest, Manifests, Page
from grokemu.services.registry.uploads import UPLOAD_TTL, BlobInfo, Blobs, UploadState

log = logging.getLogger("grokemu.services.registry")


class RegistryService:
    def __init__(self, store: BlobStore, clock: Clock, *, upload_ttl: float = UPLOAD_TTL, gc_grace: float = GC_GRACE):
        self.store = store
        self._clock = clock
        self.gc_grace = gc_grace
        self._blobs = Blobs(store, clock, upload_ttl=upload_ttl)
        self._manifests = Manifests(store, clock)

    @property
    def upload_ttl(self) -> float:
        return self._blobs.upload_ttl

    @upload_ttl.setter
    def upload_ttl(self, value: float) -> None:
        self._blobs.upload_ttl = value

    # -- blobs and uploads (uploads.py) -----------------------------------------------------------------------------

    def stat_blob(self, repo: str, digest: str) -> BlobInfo:
        return self._blobs.stat_blob(repo, digest)

    def delete_blob(self, repo: str, digest: str) -> None:
        self._blobs.delete_blob(repo, digest)

    def start_upload(self, repo: str, *, mount: str | None = None, from_repo: str | None = None,
                     digest: str | None = None, stream: IO[bytes] | None = None,
                     length: int | None = None) -> UploadState:
        return self._blobs.start_upload(repo, mount=mount, from_repo=from_repo, digest=digest, stream=stream,
                                        length=length)

    def upload_status(self, repo: str, upload_id: str) -> UploadState:
        return self._blobs.upload_status(repo, upload_id)

    def append_upload(self, repo: str, upload_id: str, stream: IO[bytes] | None, length: int | None = None,
                      content_range: str | None = None) -> UploadState:
        return self._blobs.append_upload(repo, upload_id, stream, length, content_range)

    def finish_upload(self, repo: str, upload_id: str, digest: str, stream: IO[bytes] | None = None,
                      length: int | None = None) -> UploadState:
        return self._blobs.finish_upload(repo, upload_id, digest, stream, length)

    def cancel_upload(self, repo: str, upload_id: str) -> None:
        self._blobs.cancel_upload(repo, upload_id)

    def purge_uploads(self) -> int:
        return self._blobs.purge_uploads()

    # -- manifests, tags, listings (manifests.py) -------------------------------------------------------------------

    def put_manifest(self, repo: str, reference: str, body: bytes, content_type: str | None) -> Manifest:
        return self._manifests.put_manifest(repo, reference, body, content_type)

    def get_manifest(self, repo: str, reference: str) -> Manifest:
        return self._manifests.get_manifest(repo, reference)

    def resolve_manifest(self, repo: str, reference: str) -> tuple[str, str, int] | None:
        return self._manifests.resolve_manifest(repo, reference)

    def delete_manifest(self, repo: str, reference: str) -> None:
        self._manifests.delete_manifest(repo, reference)

    def list_tags(self, repo: str, n: int | None = None, last: str | None = None) -> Page:
        return self._manifests.list_tags(repo, n, last)

    def catalog(self, n: int | None = None, last: str | None = None) -> Page:
        return self._manifests.catalog(n, last)

    # -- whole-registry maintenance ---------------------------------------------------------------------------------

    def sweep(self) -> int:
        """Startup sweep (create_app, before requests): debris of a killed upload or write goes; resumable upload
        sessions stay. A blob is only ever visible after the rename of a whole, verified, fsync'ed upload file, so a
        kill -9 mid-PATCH or mid-PUT leaves a session (or debris), never a partial blob."""
        removed = self.store.sweep_debris()
        if removed:
            log.info("registry: removed %d leftovers of interrupted uploads", removed)
        return removed

    def reset(self) -> None:
        """Forget every repository, blob and upload (the `/_grokemu/reset` control); signing keys are not ours."""
        with self._blobs.lock:
            self.store.clear()
            self._blobs.forget_all()

    def gc(self, *, delete_untagged: bool = False, dry_run: bool = False) -> dict:
        """Mark and sweep (gc.py): unreferenced manifests, layer links and blobs older than `gc_grace`, and
        expired upload sessions."""
        return collect_garbage(self.store, self._clock.now(), grace=self.gc_grace,
                               purge_uploads=self._blobs.purge_uploads, delete_untagged=delete_untagged,
                               dry_run=dry_run)
