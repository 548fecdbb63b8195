"""What a package name and a ZIP entry path may be, and the size limits of a package's small files.

Checked before anything is read or written (docs/grok-publish.md): a name becomes one folder name once quoted, an
entry path a relative POSIX path inside the package's folder.
"""
from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from grokemu.domain.errors import BadRequest

MiB = 1024 * 1024
NAME_MAX_LENGTH = 214  # npm's limit on a package name (validate-npm-package-name)
SEGMENT_MAX_BYTES = 255  # NAME_MAX of the usual filesystems: one path segment, quoted
ENTRY_PATH_MAX_BYTES = 4096  # PATH_MAX: a ZIP entry name longer than this cannot be a file we could write
METADATA_MAX_BYTES = 16 * MiB  # package.json, container.json, image.json, timestamps.json, Dockerfile, connections


def check_package_name(name: Any) -> str:
    """A package name that is one safe folder name once quoted: `name` or a scoped `@scope/name` (Datagrok's and
    npm's scoped names), no `.`/`..` or dot-leading segment, no control character, backslash or `%`, at most 214
    characters (npm). Raises BadRequest naming what is wrong; called before anything is read or written."""
    if not isinstance(name, str) or not name:
        raise BadRequest("Package name is empty")
    shown = json.dumps(name[:80] + ("…" if len(name) > 80 else ""))
    if len(name) > NAME_MAX_LENGTH:
        raise BadRequest(f"Package name is {len(name)} characters long; the limit is {NAME_MAX_LENGTH} (as npm's)")
    for ch in name:
        code = ord(ch)
        if code < 0x20 or 0x7F <= code < 0xA0 or 0xD800 <= code < 0xE000:
            raise BadRequest(f"Package name {shown} contains a control character (U+{code:04X})")
    if "\\" in name:
        raise BadRequest(f"Package name {shown} contains a backslash")
    if "%" in name:
        raise BadRequest(f"Package name {shown} contains '%' (a package name is URL-safe, as npm's)")
    if name != name.strip():
        raise BadRequest(f"Package name {shown} starts or ends with whitespace")
    if name.startswith("@"):
        scope, sep, rest = name[1:].partition("/")
        if not sep or not scope or not rest or "/" in rest:
            raise BadRequest(f"Package name {shown} is not a name or a scoped '@scope/name'")
        segments = [scope, rest]
    else:
        if "/" in name:
            raise BadRequest(f"Package name {shown} contains '/' (only a scoped '@scope/name' may)")
        segments = [name]
    for segment in segments:
        if segment in (".", "..") or segment.startswith("."):
            raise BadRequest(f"Package name {shown} has a segment that is or starts with '.'")
    if len(quote(name, safe="").encode()) > SEGMENT_MAX_BYTES:
        raise BadRequest(f"Package name {shown} is too long to be a folder name once quoted "
                         f"({SEGMENT_MAX_BYTES} bytes)")
    return name



def entry_path(filename: str) -> str:
    """The POSIX path a ZIP entry is stored at, or BadRequest. Native separators are accepted (the CLI zips with
    `\\` on Windows); `.` and empty segments are dropped; `..`, absolute paths, drive letters, NUL and segments
    too long for a filesystem are refused."""
    name = filename.replace("\\", "/")
    shown = json.dumps(filename[:200])
    if name.startswith("/") or "\x00" in name:
        raise BadRequest(f"Package ZIP entry has an unsafe path: {shown}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts) or ":" in parts[0]:
        raise BadRequest(f"Package ZIP entry has an unsafe path: {shown}")
    if any(len(p.encode("utf-8", "surrogateescape")) > SEGMENT_MAX_BYTES for p in parts):
        raise BadRequest(f"Package ZIP entry has a path segment longer than {SEGMENT_MAX_BYTES} bytes: {shown}")
    return "/".join(parts)

