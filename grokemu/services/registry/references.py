"""Checks of what a request names (repository, digest, tag) and the media types the registry knows. The patterns
are the domain's (domain/references.py); here a mismatch becomes the OCI error a client expects."""
from __future__ import annotations

import hashlib

from grokemu.domain.references import DIGEST, DIGEST_HEX, MAX_NAME_LENGTH, NAME, TAG
from grokemu.services.registry.errors import DigestInvalid, NameInvalid, TagInvalid

# -- media types (docs/registry.md §1) ----------------------------------------------------------------------------------------
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


# -- validation -------------------------------------------------------------------------------------------------------

def valid_name(name: str) -> bool:
    return bool(name) and len(name) <= MAX_NAME_LENGTH and bool(NAME.match(name))


def check_name(name: str) -> str:
    if not valid_name(name):
        raise NameInvalid(f"invalid repository name: {name!r}", detail={"name": name})
    return name


def check_digest(digest: str) -> str:
    """`sha256:<64 hex>` or `sha512:<128 hex>`; anything else is DIGEST_INVALID (OCI lets a registry refuse other
    algorithms)."""
    if not digest or not DIGEST.match(digest):
        raise DigestInvalid(f"invalid digest: {digest!r}", detail={"digest": digest})
    alg, _, hexpart = digest.partition(":")
    pattern = DIGEST_HEX.get(alg)
    if pattern is None:
        raise DigestInvalid(f"unsupported digest algorithm: {alg}", detail={"digest": digest})
    if not pattern.match(hexpart):
        raise DigestInvalid(f"invalid digest: {digest!r}", detail={"digest": digest})
    return digest


def is_digest_reference(reference: str) -> bool:
    return ":" in reference  # a tag can never contain ':'


def check_tag(tag: str) -> str:
    if not TAG.match(tag or ""):
        raise TagInvalid(f"invalid tag: {tag!r}", detail={"tag": tag})
    return tag


def hasher_for(alg: str) -> hashlib._Hash:
    return hashlib.sha512() if alg == "sha512" else hashlib.sha256()


def digest_of(data: bytes, alg: str = "sha256") -> str:
    return f"{alg}:{hashlib.new(alg, data).hexdigest()}"
