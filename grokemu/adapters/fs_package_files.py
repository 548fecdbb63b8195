"""The package files on disk, rooted once at `<data>/packages` (docs/design.md decision 3).

    <data>/packages/.staging-<hex>/              an upload being unpacked and checked (debris after a crash)
    <data>/packages/<quoted name>/<version id>/  the package's files; the package's database row names the
                                                 current version id (`filesVersion`)

Every reader resolves the current folder through the database row it is given, so it sees the old files or the
new ones, never a mix. Symlinks and anything that is not a regular file are never followed or read.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from grokemu.domain.container_config import load_json
from grokemu.domain.errors import BadRequest, PayloadTooLarge
from grokemu.domain.package_rules import METADATA_MAX_BYTES, check_package_name

log = logging.getLogger(__name__)

VERSION_ID = re.compile(r"^v[0-9a-f]{32}$")
_OLD_SWAP = re.compile(r"\.old-[0-9a-f]{32}$")  # left by the swap-in of grokemu before versioned folders


def package_dir(root: Path, package_name: str) -> Path:
    """The package's own folder; the name is quoted so `@acme/pkg` is one safe folder name."""
    return root / quote(check_package_name(package_name), safe="")


def current_files_dir(root: Path, record: Mapping[str, Any] | None) -> Path | None:
    """Where the current files of a package live, from its database row; None for no (or a bad) row."""
    if not record:
        return None
    try:
        base = package_dir(root, check_package_name(record.get("name")))
    except BadRequest:
        return None  # a row written by an older grokemu under a name that is not a safe folder name
    if os.path.islink(base):
        return None  # grokemu never makes one: a symlink here is not the package's own folder
    version = record.get("filesVersion")
    if version is None:
        return base  # published before versioned folders: the files are in the package's folder itself
    if not isinstance(version, str) or not VERSION_ID.match(version):
        return None
    return base / version


def _is_real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def regular_files(base: Path, *, skip_top: re.Pattern | None = None) -> dict[str, Path]:
    """Regular files under `base` by POSIX relative path. Symlinks (to files or folders) and anything that is not
    a regular file are ignored, so nothing outside `base` is ever read."""
    out: dict[str, Path] = {}
    if not _is_real_dir(base):
        return out
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        if skip_top is not None and Path(dirpath) == base:
            dirnames[:] = [d for d in dirnames if not skip_top.match(d) and not d.startswith(".staging-")]
        dirnames[:] = [d for d in dirnames if _is_real_dir(Path(dirpath) / d)]
        for fn in filenames:
            p = Path(dirpath) / fn
            try:
                if not stat.S_ISREG(os.lstat(p).st_mode):
                    continue
            except OSError:
                continue
            out[p.relative_to(base).as_posix()] = p
    return out



def _remove(path: Path) -> None:
    try:
        if _is_real_dir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        log.warning("could not remove %s", path, exc_info=True)


class FsPackageFiles:
    """Every package's files under one root; the service layer passes the package's database row in."""

    def __init__(self, root: Path):
        self._root = Path(root)
        self._root.mkdir(parents=True, exist_ok=True)

    @property
    def root(self) -> Path:
        return self._root

    # -- reading -------------------------------------------------------------------------------------------------
    def package_dir(self, package_name: str) -> Path:
        return package_dir(self._root, package_name)

    def current_dir(self, record: Mapping[str, Any] | None) -> Path | None:
        """Where the current files of the package of `record` (its database row) live; None for no or a bad row."""
        return current_files_dir(self._root, record)

    def files_dir(self, package_name: str, record: Mapping[str, Any] | None) -> Path:
        """The folder of the package's current files; for a package never published, the folder it would get."""
        found = current_files_dir(self._root, record)
        return found if found is not None else package_dir(self._root, package_name)

    def current_files(self, record: Mapping[str, Any] | None) -> dict[str, Path]:
        base = current_files_dir(self._root, record)
        if base is None:
            return {}
        legacy = not VERSION_ID.match(base.name)
        if not legacy and not _is_real_dir(base.parent):
            return {}  # the package's folder is a symlink: not ours, never followed
        return regular_files(base, skip_top=VERSION_ID if legacy else None)

    def connection_files(self, record: Mapping[str, Any] | None) -> dict[str, bytes]:
        """`connections/*.json` of the package, each valid JSON of at most METADATA_MAX_BYTES (the entities that
        container environment expressions may name); a file that is not is skipped, never a crash."""
        files: dict[str, bytes] = {}
        for path, p in self.current_files(record).items():
            if path.startswith("connections/") and path.endswith(".json") and path.count("/") == 1:
                try:
                    with open(p, "rb") as f:
                        data = f.read(METADATA_MAX_BYTES + 1)
                    if len(data) > METADATA_MAX_BYTES:
                        continue
                    load_json(data, path)
                except (BadRequest, PayloadTooLarge, OSError):
                    continue
                files[path] = data
        return files

    # -- writing -------------------------------------------------------------------------------------------------
    def staging_dir(self) -> Path:
        """A fresh name for an upload's staging folder (not created)."""
        return self._root / f".staging-{uuid.uuid4().hex}"

    @contextmanager
    def new_version(self, package_name: str, tree: Path) -> Iterator[str]:
        """Rename the checked `tree` to a new version folder of the package and yield its id, for the caller to
        commit the rows that point to it. An exception before the commit removes the new folder (the previous
        state is kept); after it, every other entry of the package's folder (previous versions, a legacy
        layout's files) is removed."""
        home = package_dir(self._root, package_name)
        created_home = not _is_real_dir(home)
        if created_home:
            home.mkdir()
        version_id = f"v{uuid.uuid4().hex}"
        target = home / version_id
        committed = False
        try:
            os.rename(tree, target)
            yield version_id
            committed = True
        finally:
            if not committed:
                shutil.rmtree(target, ignore_errors=True)
                if created_home:
                    try:
                        home.rmdir()
                    except OSError:
                        pass
        for entry in list(home.iterdir()):
            if entry.name != version_id:
                _remove(entry)

    def sweep(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Remove what an interrupted publish left: staging folders, version folders no row of `records` points to
        (a crash between rename and commit, or between commit and removing the previous version), old swap
        leftovers. Returns how many entries were removed."""
        referenced: dict[str, str | None] = {}
        for record in records:
            try:
                referenced[quote(check_package_name(record.get("name")), safe="")] = record.get("filesVersion")
            except BadRequest:
                continue
        removed = 0
        for entry in list(self._root.iterdir()):
            if entry.name.startswith(".staging-") or _OLD_SWAP.search(entry.name):
                _remove(entry)
                removed += 1
                continue
            if not _is_real_dir(entry):
                continue
            keep = referenced.get(entry.name)
            if keep is not None:
                if not (entry / keep).is_dir():
                    log.warning("package folder %s has no version %s (its database row points there)", entry, keep)
                for child in list(entry.iterdir()):
                    if child.name != keep:
                        _remove(child)
                        removed += 1
                continue
            # a legacy layout (files in the folder itself) or a folder no row points to: only version folders go
            for child in list(entry.iterdir()):
                if VERSION_ID.match(child.name):
                    _remove(child)
                    removed += 1
            if entry.name not in referenced:
                try:
                    entry.rmdir()  # only when empty: anything else is not ours to delete
                except OSError:
                    pass
        if removed:
            log.info("removed %d leftovers of interrupted publishes from %s", removed, self._root)
        return removed

    def reset(self) -> None:
        """Every package's files go (admin reset)."""
        shutil.rmtree(self._root, ignore_errors=True)
        self._root.mkdir(parents=True, exist_ok=True)
