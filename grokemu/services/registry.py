"""The registry: Docker Registry HTTP API v2 / OCI distribution semantics over the filesystem blob store.

Wire facts are in research/registry-protocol.md (every trap there was reproduced with the real docker client);
trap numbers (T1..T17) are cited where they shape the code. The web layer (web/registry.py) only parses requests
and serializes what this returns; every failure is raised as a RegistryError, which web/errors.py renders as the
OCI error envelope `{"errors": [{"code", "message", "detail"}]}`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable

from grokemu.adapters.fs_blobs import FsBlobStore, ShortRead
from grokemu.domain.clock import Clock
from grokemu.domain.errors import GrokemuError

log = logging.getLogger(__name__)

# -- media types (research §1) ----------------------------------------------------------------------------------------
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v1+prettyjws")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
IMAGE_MANIFESTS = (DOCKER_MANIFEST, OCI_MANIFEST)
INDEXES = (DOCKER_MANIFEST_LIST, OCI_INDEX)
MANIFEST_TYPES = IMAGE_MANIFESTS + INDEXES
FOREIGN_LAYERS = ("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                  "application/vnd.docker.image.rootfs.foreign.diff.tar",
                  "application/vnd.oci.image.layer.nondistributable.v1.tar",
                  "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                  "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd")

MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # distribution's default limit
UPLOAD_TTL = 24 * 3600.0  # an upload session untouched this long is abandoned (distribution purges after 168 h)
GC_GRACE = 3600.0  # blobs linked more recently than this survive gc: a push may be uploading layers right now

# -- names (OCI distribution-spec) ------------------------------------------------------------------------------------
_NAME = re.compile(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$")
_TAG = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")
_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
_HEX = {"sha256": re.compile(r"^[a-f0-9]{64}$"), "sha512": re.compile(r"^[a-f0-9]{128}$")}
_UPLOAD_ID = re.compile(r"^[a-f0-9]{32}$")
_CONTENT_RANGE = re.compile(r"^(?:bytes[ =])?(\d+)-(\d+)(?:/(?:\d+|\*))?$")
MAX_NAME_LENGTH = 255


# -- errors -----------------------------------------------------------------------------------------------------------

class RegistryError(GrokemuError):
    status = 400
    oci_code = "UNKNOWN"

    def __init__(self, message: str, *, detail=None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.detail = detail
        self.headers = dict(headers or {})


class BlobUnknown(RegistryError):
    status, oci_code = 404, "BLOB_UNKNOWN"


class BlobUploadUnknown(RegistryError):
    status, oci_code = 404, "BLOB_UPLOAD_UNKNOWN"


class BlobUploadInvalid(RegistryError):
    status, oci_code = 400, "BLOB_UPLOAD_INVALID"


class RangeInvalid(RegistryError):
    """A chunk that does not start where the upload ends (OCI: 416)."""

    status, oci_code = 416, "BLOB_UPLOAD_INVALID"


class DigestInvalid(RegistryError):
    status, oci_code = 400, "DIGEST_INVALID"


class SizeInvalid(RegistryError):
    status, oci_code = 400, "SIZE_INVALID"


class ManifestInvalid(RegistryError):
    status, oci_code = 400, "MANIFEST_INVALID"


class ManifestTooBig(RegistryError):
    status, oci_code = 413, "SIZE_INVALID"


class ManifestBlobUnknown(RegistryError):
    status, oci_code = 400, "MANIFEST_BLOB_UNKNOWN"


class ManifestUnknown(RegistryError):
    status, oci_code = 404, "MANIFEST_UNKNOWN"


class NameInvalid(RegistryError):
    status, oci_code = 400, "NAME_INVALID"


class NameUnknown(RegistryError):
    status, oci_code = 404, "NAME_UNKNOWN"


class TagInvalid(RegistryError):
    # distribution's code for a bad tag; the OCI list has none, clients show the message
    status, oci_code = 400, "TAG_INVALID"


class RegistryUnauthorized(RegistryError):
    status, oci_code = 401, "UNAUTHORIZED"


class RegistryDenied(RegistryError):
    status, oci_code = 403, "DENIED"


class PaginationInvalid(RegistryError):
    status, oci_code = 400, "PAGINATION_NUMBER_INVALID"


# -- validation -------------------------------------------------------------------------------------------------------

def valid_name(name: str) -> bool:
    return bool(name) and len(name) <= MAX_NAME_LENGTH and bool(_NAME.match(name))


def check_name(name: str) -> str:
    if not valid_name(name):
        raise NameInvalid(f"invalid repository name: {name!r}", detail={"name": name})
    return name


def check_digest(digest: str) -> str:
    """`sha256:<64 hex>` or `sha512:<128 hex>`; anything else is DIGEST_INVALID (OCI lets a registry refuse other
    algorithms)."""
    if not digest or not _DIGEST.match(digest):
        raise DigestInvalid(f"invalid digest: {digest!r}", detail={"digest": digest})
    alg, _, hexpart = digest.partition(":")
    pattern = _HEX.get(alg)
    if pattern is None:
        raise DigestInvalid(f"unsupported digest algorithm: {alg}", detail={"digest": digest})
    if not pattern.match(hexpart):
        raise DigestInvalid(f"invalid digest: {digest!r}", detail={"digest": digest})
    return digest


def is_digest_reference(reference: str) -> bool:
    return ":" in reference  # a tag can never contain ':'


def check_tag(tag: str) -> str:
    if not _TAG.match(tag or ""):
        raise TagInvalid(f"invalid tag: {tag!r}", detail={"tag": tag})
    return tag


def _hasher(alg: str):
    return hashlib.sha512() if alg == "sha512" else hashlib.sha256()


def digest_of(data: bytes, alg: str = "sha256") -> str:
    return f"{alg}:{hashlib.new(alg, data).hexdigest()}"


# -- results ----------------------------------------------------------------------------------------------------------

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


@dataclass(frozen=True)
class Manifest:
    digest: str
    media_type: str
    body: bytes

    @property
    def size(self) -> int:
        return len(self.body)


@dataclass(frozen=True)
class Page:
    items: list[str]
    next_last: str | None  # set when there are more: the `last` value for the next page


# -- the service ------------------------------------------------------------------------------------------------------

class RegistryService:
    def __init__(self, root: Path, clock: Clock, *, upload_ttl: float = UPLOAD_TTL, gc_grace: float = GC_GRACE):
        self.store = FsBlobStore(root)
        self._clock = clock
        self.upload_ttl = upload_ttl
        self.gc_grace = gc_grace
        self._lock = threading.Lock()
        self._upload_locks: dict[str, threading.Lock] = {}
        # Streaming hash state per open session: (offset it covers, sha256 object). Lost on restart; then the
        # upload file is re-hashed at commit.
        self._hash_state: dict[str, tuple[int, object]] = {}
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
                     digest: str | None = None, stream: BinaryIO | None = None,
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
        if not _UPLOAD_ID.match(upload_id or ""):
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
        if not _UPLOAD_ID.match(upload_id or ""):
            raise BlobUploadUnknown("blob upload unknown to registry", detail={"uuid": upload_id})
        with self._lock:
            return self._upload_locks.setdefault(upload_id, threading.Lock())

    def upload_status(self, repo: str, upload_id: str) -> UploadState:
        info = self._session(repo, upload_id)
        return UploadState(repo, upload_id, info["size"])

    def append_upload(self, repo: str, upload_id: str, stream: BinaryIO | None, length: int | None = None,
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
            offset = self._append(upload_id, offset, stream, length)
            self.store.touch_upload(upload_id, self._clock.now())
            return UploadState(repo, upload_id, offset)

    @staticmethod
    def _range_headers(repo: str, upload_id: str, offset: int) -> dict[str, str]:
        state = UploadState(repo, upload_id, offset)
        return {"Location": state.location, "Range": state.range, "Docker-Upload-UUID": upload_id}

    def _append(self, upload_id: str, offset: int, stream: BinaryIO | None, length: int | None) -> int:
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

    def finish_upload(self, repo: str, upload_id: str, digest: str, stream: BinaryIO | None = None,
                      length: int | None = None) -> UploadState:
        """PUT ?digest=: take the last chunk (maybe empty), verify the digest of the WHOLE upload (trap T12) and
        commit by rename. On mismatch the session is dropped and nothing is stored."""
        check_digest(digest)
        with self._upload_lock(upload_id):
            info = self._session(repo, upload_id)
            size = self._append(upload_id, info["size"], stream, length)
            alg = digest.split(":", 1)[0]
            state = self._hash_state.get(upload_id)
            if alg == "sha256" and state and state[0] == size:
                actual = f"sha256:{state[1].hexdigest()}"
            else:
                hasher = _hasher(alg)
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
        with self._lock:
            self._upload_locks.pop(upload_id, None)

    def _maybe_purge(self) -> None:
        now = self._clock.now()
        if now - self._last_purge >= min(600.0, self.upload_ttl):
            self._last_purge = now
            self.purge_uploads()

    def sweep(self) -> int:
        """Startup sweep (create_app, before requests): debris of a killed upload or write goes; resumable upload
        sessions stay. A blob is only ever visible after the rename of a whole, verified, fsync'ed upload file, so a
        kill -9 mid-PATCH or mid-PUT leaves a session (or debris), never a partial blob."""
        removed = self.store.sweep_debris()
        if removed:
            log.info("registry: removed %d leftovers of interrupted uploads", removed)
        return removed

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

    # -- manifests --------------------------------------------------------------------------------------------------

    def put_manifest(self, repo: str, reference: str, body: bytes, content_type: str | None) -> Manifest:
        """Store the exact bytes (OCI MUST; trap T3: the digest is sha256 of the raw body, never re-serialized)."""
        check_name(repo)
        if len(body) > MAX_MANIFEST_BYTES:
            raise ManifestTooBig(f"manifest larger than {MAX_MANIFEST_BYTES} bytes")
        tag = None
        if is_digest_reference(reference):
            check_digest(reference)
            digest = digest_of(body, reference.split(":", 1)[0])
            if digest != reference:
                raise DigestInvalid(f"manifest digest {digest} does not match the reference {reference}",
                                    detail={"digest": reference, "actual": digest})
        else:
            tag = check_tag(reference)
            digest = digest_of(body)
        try:
            doc = json.loads(body)
        except ValueError as e:
            raise ManifestInvalid(f"manifest is not valid JSON: {e}") from None
        if not isinstance(doc, dict):
            raise ManifestInvalid("manifest is not a JSON object")
        media_type = self._media_type(doc, content_type)
        self._check_references(repo, doc, media_type)
        now = self._clock.now()
        self.store.put_blob_bytes(digest, body)
        self.store.link_manifest(repo, digest, media_type, now)
        if tag:
            self.store.set_tag(repo, tag, digest)
        return Manifest(digest, media_type, body)

    @staticmethod
    def _media_type(doc: dict, content_type: str | None) -> str:
        header = (content_type or "").split(";", 1)[0].strip().lower()
        declared = doc.get("mediaType")
        if declared is not None and not isinstance(declared, str):
            raise ManifestInvalid("manifest mediaType is not a string")
        if header in DOCKER_SCHEMA1 or declared in DOCKER_SCHEMA1 or doc.get("schemaVersion") == 1:
            raise ManifestInvalid("schema1 manifests are not supported; push a schema2 or OCI manifest")
        if header in MANIFEST_TYPES:
            if declared and declared != header:
                raise ManifestInvalid(f"manifest mediaType {declared} does not match Content-Type {header}")
            media_type = header
        elif declared in MANIFEST_TYPES:
            media_type = declared
        elif declared:
            raise ManifestInvalid(f"unsupported manifest media type {declared}")
        elif "manifests" in doc:
            media_type = OCI_INDEX  # OCI makes mediaType optional; the shape tells index from manifest
        elif "config" in doc or "layers" in doc:
            media_type = OCI_MANIFEST
        else:
            raise ManifestInvalid(f"cannot tell the manifest type (Content-Type {header or 'missing'})")
        if doc.get("schemaVersion") != 2:
            raise ManifestInvalid("manifest schemaVersion must be 2")
        return media_type

    def _check_references(self, repo: str, doc: dict, media_type: str) -> None:
        """Every blob an image manifest names must be in this repository, and every manifest an index names
        (distribution does both: MANIFEST_BLOB_UNKNOWN with the digest as detail)."""
        if media_type in IMAGE_MANIFESTS:
            config = doc.get("config")
            layers = doc.get("layers")
            if not isinstance(config, dict) or not isinstance(layers, list):
                raise ManifestInvalid("image manifest needs a config descriptor and a layers list")
            for desc in [config, *layers]:
                d = self._descriptor_digest(desc)
                if desc is not config and (desc.get("urls") or desc.get("mediaType") in FOREIGN_LAYERS):
                    continue  # foreign layers live elsewhere
                if not self.store.layer_linked(repo, d) or self.store.blob_size(d) is None:
                    raise ManifestBlobUnknown(f"blob unknown to registry: {d}", detail={"digest": d})
        else:
            children = doc.get("manifests")
            if not isinstance(children, list):
                raise ManifestInvalid("index needs a manifests list")
            for desc in children:
                d = self._descriptor_digest(desc)
                if self.store.manifest_link(repo, d) is None:
                    raise ManifestBlobUnknown(f"manifest unknown to registry: {d}", detail={"digest": d})

    @staticmethod
    def _descriptor_digest(desc) -> str:
        if not isinstance(desc, dict) or not isinstance(desc.get("digest"), str):
            raise ManifestInvalid("descriptor without a digest")
        try:
            return check_digest(desc["digest"])
        except DigestInvalid as e:
            raise ManifestInvalid(e.message, detail=e.detail) from None

    def _resolve(self, repo: str, reference: str) -> tuple[str, dict] | None:
        if is_digest_reference(reference):
            check_digest(reference)
            digest = reference
        else:
            check_tag(reference)
            digest = self.store.get_tag(repo, reference)
            if digest is None:
                return None
        link = self.store.manifest_link(repo, digest)
        return (digest, link) if link is not None else None

    def get_manifest(self, repo: str, reference: str) -> Manifest:
        check_name(repo)
        found = self._resolve(repo, reference)
        body = self.store.read_blob(found[0]) if found else None
        if body is None:
            raise ManifestUnknown(f"manifest unknown: {repo}:{reference}" if not is_digest_reference(reference)
                                  else f"manifest unknown: {repo}@{reference}", detail={"reference": reference})
        return Manifest(found[0], found[1].get("mediaType") or _guess_type(body), body)

    def resolve_manifest(self, repo: str, reference: str) -> tuple[str, str, int] | None:
        """(digest, media type, size) of a manifest, or None when the name, reference or manifest is unknown or
        invalid. For the publish/validation path (services/images.py)."""
        try:
            m = self.get_manifest(repo, reference)
        except RegistryError:
            return None
        return m.digest, m.media_type, m.size

    def delete_manifest(self, repo: str, reference: str) -> None:
        """By digest: the revision and every tag pointing at it. By tag: just the tag (OCI 1.1 tag deletion)."""
        check_name(repo)
        if is_digest_reference(reference):
            check_digest(reference)
            if not self.store.unlink_manifest(repo, reference):
                raise ManifestUnknown(f"manifest unknown: {repo}@{reference}", detail={"reference": reference})
            for tag, digest in self.store.tags(repo).items():
                if digest == reference:
                    self.store.delete_tag(repo, tag)
        else:
            check_tag(reference)
            if not self.store.delete_tag(repo, reference):
                raise ManifestUnknown(f"manifest unknown: {repo}:{reference}", detail={"reference": reference})

    # -- listings ---------------------------------------------------------------------------------------------------

    def list_tags(self, repo: str, n: int | None = None, last: str | None = None) -> Page:
        check_name(repo)
        if not self.store.repo_exists(repo):
            raise NameUnknown(f"repository name not known to registry: {repo}", detail={"name": repo})
        return _paginate(sorted(self.store.tags(repo)), n, last)

    def catalog(self, n: int | None = None, last: str | None = None) -> Page:
        return _paginate(self.store.repositories(), n, last)

    def reset(self) -> None:
        """Forget every repository, blob and upload (the `/_grokemu/reset` control); signing keys are not ours."""
        with self._lock:
            self.store.clear()
            self._hash_state.clear()
            self._upload_locks.clear()

    # -- garbage collection -----------------------------------------------------------------------------------------

    def gc(self, *, delete_untagged: bool = False, dry_run: bool = False) -> dict:
        """Mark and sweep, like distribution's `garbage-collect`: keep every manifest revision (or, with
        `delete_untagged`, only tagged ones and what tagged indexes name), every blob those manifests name, and any
        blob linked within the last `gc_grace` seconds (a push in flight uploads layers before its manifest);
        delete the rest, plus expired upload sessions. Returns counts and bytes.

        Safe beside a running server in all but a sub-millisecond window (a blob re-linked between the last check
        and its unlink); distribution asks for a read-only registry during gc, which is stricter still."""
        now = self._clock.now()
        stats = {"uploads_removed": 0 if dry_run else self.purge_uploads(), "manifests_removed": 0,
                 "layer_links_removed": 0, "blobs_removed": 0, "bytes_freed": 0, "blobs_kept": 0, "bytes_kept": 0}
        marked: set[str] = set()
        for repo in self.store.repositories():
            revisions = dict(self.store.iter_manifest_links(repo))
            keep = set(revisions)
            if delete_untagged:
                keep = {d for d in self.store.tags(repo).values() if d in revisions}
                frontier = list(keep)
                while frontier:  # what tagged indexes name stays too
                    for child in _children(self.store.read_blob(frontier.pop())):
                        if child in revisions and child not in keep:
                            keep.add(child)
                            frontier.append(child)
                keep |= {d for d, link in revisions.items() if now - float(link.get("linked", 0)) < self.gc_grace}
            repo_refs: set[str] = set()
            for digest in revisions:
                if digest not in keep:
                    stats["manifests_removed"] += 1
                    if not dry_run:
                        self.store.unlink_manifest(repo, digest)
                    continue
                marked.add(digest)
                repo_refs |= _references(self.store.read_blob(digest))
            for digest, linked in self.store.iter_layer_links(repo):
                if digest in repo_refs or now - linked < self.gc_grace:
                    marked.add(digest)
                else:
                    stats["layer_links_removed"] += 1
                    if not dry_run:
                        self.store.unlink_layer(repo, digest)
        for digest, size in list(self.store.iter_blobs()):
            # linked_since: a push may have linked it since the mark phase (gc can run beside a live server)
            if digest in marked or (not dry_run and self.store.linked_since(digest, now - self.gc_grace)):
                stats["blobs_kept"] += 1
                stats["bytes_kept"] += size
            else:
                stats["blobs_removed"] += 1
                stats["bytes_freed"] += size if dry_run else self.store.delete_blob(digest)
        if not dry_run:
            self.store.prune_empty_dirs()
        log.info("registry gc: %s", stats)
        return stats


class _NullHasher:
    def update(self, _data) -> None:
        pass


def _guess_type(body: bytes) -> str:
    try:
        doc = json.loads(body)
        return doc.get("mediaType") or (OCI_INDEX if "manifests" in doc else OCI_MANIFEST)
    except (ValueError, AttributeError):
        return OCI_MANIFEST


def _descriptors(body: bytes | None) -> Iterable[dict]:
    if not body:
        return []
    try:
        doc = json.loads(body)
    except ValueError:
        return []
    if not isinstance(doc, dict):
        return []
    out = []
    for key in ("config", "subject"):
        if isinstance(doc.get(key), dict):
            out.append(doc[key])
    for key in ("layers", "manifests", "blobs"):
        if isinstance(doc.get(key), list):
            out.extend(d for d in doc[key] if isinstance(d, dict))
    return out


def _references(body: bytes | None) -> set[str]:
    return {d["digest"] for d in _descriptors(body) if isinstance(d.get("digest"), str)}


def _children(body: bytes | None) -> set[str]:
    try:
        doc = json.loads(body or b"{}")
        return {d["digest"] for d in doc.get("manifests") or [] if isinstance(d, dict) and "digest" in d}
    except (ValueError, AttributeError, TypeError):
        return set()


def _paginate(items: list[str], n: int | None, last: str | None) -> Page:
    if n is not None and n < 0:
        raise PaginationInvalid(f"invalid page size n={n}")
    if last:
        items = [i for i in items if i > last]
    if n is None or n >= len(items):
        return Page(items, None)
    page = items[:n]
    return Page(page, page[-1] if page else None)
