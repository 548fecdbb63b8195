"""The registry's failures. Each carries its HTTP status and OCI error code; web/errors.py renders every one as the
OCI error envelope `{"errors": [{"code", "message", "detail"}]}`."""
from __future__ import annotations

from grokemu.domain.errors import GrokemuError


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
