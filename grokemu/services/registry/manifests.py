"""Manifests and tags of a repository, and the listings (tags, catalog).

A manifest is stored as its exact bytes in the blob store and linked into the repository with its media type; a
tag is a name pointing at a manifest digest. Trap numbers (T1..T17) refer to docs/registry.md.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from grokemu.domain.clock import Clock
from grokemu.domain.errors import disk_full
from grokemu.domain.ports import BlobStore
from grokemu.services.registry.errors import (
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestTooBig,
    ManifestUnknown,
    NameUnknown,
    PaginationInvalid,
    RegistryError,
)
from grokemu.services.registry.references import (
    DOCKER_SCHEMA1,
    FOREIGN_LAYERS,
    IMAGE_MANIFESTS,
    MANIFEST_TYPES,
    MAX_MANIFEST_BYTES,
    OCI_INDEX,
    OCI_MANIFEST,
    check_digest,
    check_name,
    check_tag,
    digest_of,
    is_digest_reference,
)


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


class Manifests:
    def __init__(self, store: BlobStore, clock: Clock):
        self.store = store
        self._clock = clock

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
        except RecursionError:
            raise ManifestInvalid("manifest is not valid JSON: nested too deeply") from None
        except ValueError as e:
            raise ManifestInvalid(f"manifest is not valid JSON: {e}") from None
        if not isinstance(doc, dict):
            raise ManifestInvalid("manifest is not a JSON object")
        media_type = _media_type(doc, content_type)
        self._check_references(repo, doc, media_type)
        now = self._clock.now()
        new_blob = self.store.blob_size(digest) is None
        new_link = self.store.manifest_link(repo, digest) is None
        try:
            self.store.put_blob_bytes(digest, body)
            self.store.link_manifest(repo, digest, media_type, now)
            if tag:
                self.store.set_tag(repo, tag, digest)
        except OSError as e:
            full = disk_full(e)
            if full is None:
                raise
            # A full disk keeps nothing of this PUT (docs/faults.md §3): the link and the bytes it added go, the
            # bytes only if no other repository linked them meanwhile.
            if new_link:
                self.store.unlink_manifest(repo, digest)
            if new_blob and not self.store.linked_since(digest, now):
                self.store.delete_blob(digest)
            raise full from e
        return Manifest(digest, media_type, body)

    def _check_references(self, repo: str, doc: dict, media_type: str) -> None:
        """Every blob an image manifest names must be in this repository, and every manifest an index names
        (distribution does both: MANIFEST_BLOB_UNKNOWN with the digest as detail)."""
        if media_type in IMAGE_MANIFESTS:
            config = doc.get("config")
            layers = doc.get("layers")
            if not isinstance(config, dict) or not isinstance(layers, list):
                raise ManifestInvalid("image manifest needs a config descriptor and a layers list")
            for desc in [config, *layers]:
                d = _descriptor_digest(desc)
                if desc is not config and (desc.get("urls") or desc.get("mediaType") in FOREIGN_LAYERS):
                    continue  # foreign layers live elsewhere
                if not self.store.layer_linked(repo, d) or self.store.blob_size(d) is None:
                    raise ManifestBlobUnknown(f"blob unknown to registry: {d}", detail={"digest": d})
        else:
            children = doc.get("manifests")
            if not isinstance(children, list):
                raise ManifestInvalid("index needs a manifests list")
            for desc in children:
                d = _descriptor_digest(desc)
                if self.store.manifest_link(repo, d) is None:
                    raise ManifestBlobUnknown(f"manifest unknown to registry: {d}", detail={"digest": d})

    def _resolve(self, repo: str, reference: str) -> tuple[str, dict] | None:
        if is_digest_reference(reference):
            check_digest(reference)
            digest = reference
        else:
            check_tag(reference)
            tagged = self.store.get_tag(repo, reference)
            if tagged is None:
                return None
            digest = tagged
        link = self.store.manifest_link(repo, digest)
        return (digest, link) if link is not None else None

    def get_manifest(self, repo: str, reference: str) -> Manifest:
        check_name(repo)
        found = self._resolve(repo, reference)
        body = self.store.read_blob(found[0]) if found else None
        if found is None or body is None:
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


def _descriptor_digest(desc) -> str:
    if not isinstance(desc, dict) or not isinstance(desc.get("digest"), str):
        raise ManifestInvalid("descriptor without a digest")
    try:
        return check_digest(desc["digest"])
    except DigestInvalid as e:
        raise ManifestInvalid(e.message, detail=e.detail) from None


def _guess_type(body: bytes) -> str:
    try:
        doc = json.loads(body)
        return doc.get("mediaType") or (OCI_INDEX if "manifests" in doc else OCI_MANIFEST)
    except (ValueError, AttributeError, RecursionError):
        return OCI_MANIFEST


def _paginate(items: list[str], n: int | None, last: str | None) -> Page:
    if n is not None and n < 0:
        raise PaginationInvalid(f"invalid page size n={n}")
    if last:
        items = [i for i in items if i > last]
    if n is None or n >= len(items):
        return Page(items, None)
    page = items[:n]
    return Page(page, page[-1] if page else None)
