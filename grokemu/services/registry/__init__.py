"""The registry: Docker Registry HTTP API v2 / OCI distribution semantics over a BlobStore (domain/ports.py).

Split by concern like distribution's storage package: errors.py (the OCI error codes), references.py (names,
digests, tags, media types), uploads.py (blobs and upload sessions), manifests.py (manifests, tags, listings),
gc.py (mark and sweep) and service.py (RegistryService, the facade callers use).

Wire facts are in docs/registry.md (every trap there was reproduced with the real docker client);
trap numbers (T1..T17) are cited where they shape the code. The web layer (web/registry.py) only parses requests
and serializes what this returns; every failure is raised as a RegistryError, which web/errors.py renders as the
OCI error envelope `{"errors": [{"code", "message", "detail"}]}`.
"""
from grokemu.domain.references import MAX_NAME_LENGTH
from grokemu.services.registry.errors import (
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestTooBig,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    PaginationInvalid,
    RangeInvalid,
    RegistryDenied,
    RegistryError,
    RegistryUnauthorized,
    SizeInvalid,
    TagInvalid,
)
from grokemu.services.registry.gc import GC_GRACE
from grokemu.services.registry.manifests import Manifest, Page
from grokemu.services.registry.references import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_SCHEMA1,
    FOREIGN_LAYERS,
    IMAGE_MANIFESTS,
    INDEXES,
    MANIFEST_TYPES,
    MAX_MANIFEST_BYTES,
    OCI_INDEX,
    OCI_MANIFEST,
    check_digest,
    check_name,
    check_tag,
    digest_of,
    is_digest_reference,
    valid_name,
)
from grokemu.services.registry.service import RegistryService
from grokemu.services.registry.uploads import UPLOAD_TTL, BlobInfo, UploadState

__all__ = [
    "RegistryService", "UploadState", "BlobInfo", "Manifest", "Page",
    "check_name", "valid_name", "check_digest", "check_tag", "is_digest_reference", "digest_of",
    "MAX_MANIFEST_BYTES", "MAX_NAME_LENGTH", "UPLOAD_TTL", "GC_GRACE",
    "DOCKER_MANIFEST", "DOCKER_MANIFEST_LIST", "DOCKER_SCHEMA1", "OCI_MANIFEST", "OCI_INDEX", "IMAGE_MANIFESTS",
    "INDEXES", "MANIFEST_TYPES", "FOREIGN_LAYERS",
    "RegistryError", "BlobUnknown", "BlobUploadUnknown", "BlobUploadInvalid", "RangeInvalid", "DigestInvalid",
    "SizeInvalid", "ManifestInvalid", "ManifestTooBig", "ManifestBlobUnknown", "ManifestUnknown", "NameInvalid",
    "NameUnknown", "TagInvalid", "RegistryUnauthorized", "RegistryDenied", "PaginationInvalid",
]
