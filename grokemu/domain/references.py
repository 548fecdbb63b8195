"""The reference grammar of the OCI distribution spec: repository names, tags, digests, and upload session ids.

One place for the patterns, shared by the registry service (services/registry/references.py, which turns a
mismatch into the OCI error) and the filesystem blob store (adapters/fs_blobs.py, which refuses anything that could
leave its root). Plain regular expressions, no I/O.
"""
from __future__ import annotations

import re

# A repository name is one or more path components separated by '/'.
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME_COMPONENT = re.compile(rf"^{_COMPONENT}$")
NAME = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
MAX_NAME_LENGTH = 255

TAG = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")

# `<algorithm>:<encoded>` in general; this registry stores only the two algorithms below (OCI lets it refuse others).
DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
DIGEST_HEX = {"sha256": re.compile(r"^[a-f0-9]{64}$"), "sha512": re.compile(r"^[a-f0-9]{128}$")}
SUPPORTED_DIGEST = re.compile(r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")

UPLOAD_ID = re.compile(r"^[a-f0-9]{32}$")  # a uuid4 in hex, as the blob store makes them
