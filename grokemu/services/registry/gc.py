"""Garbage collection: mark and sweep over the blob store, like distribution's `garbage-collect`."""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable

from grokemu.domain.ports import BlobStore

log = logging.getLogger(__name__)

GC_GRACE = 3600.0  # blobs linked more recently than this survive gc: a push may be uploading layers right now


def collect_garbage(store: BlobStore, now: float, *, grace: float, purge_uploads: Callable[[], int],
                    delete_untagged: bool = False, dry_run: bool = False) -> dict:
    """Keep every manifest revision (or, with `delete_untagged`, only tagged ones and what tagged indexes name),
    every blob those manifests name, and any blob linked within the last `grace` seconds (a push in flight uploads
    layers before its manifest); delete the rest, plus expired upload sessions (`purge_uploads`). Returns counts
    and bytes.

    Safe beside a running server in all but a sub-millisecond window (a blob re-linked between the last check
    and its unlink); distribution asks for a read-only registry during gc, which is stricter still."""
    stats = {"uploads_removed": 0 if dry_run else purge_uploads(), "manifests_removed": 0,
             "layer_links_removed": 0, "blobs_removed": 0, "bytes_freed": 0, "blobs_kept": 0, "bytes_kept": 0}
    marked: set[str] = set()
    for repo in store.repositories():
        revisions = dict(store.iter_manifest_links(repo))
        keep = set(revisions)
        if delete_untagged:
            keep = {d for d in store.tags(repo).values() if d in revisions}
            frontier = list(keep)
            while frontier:  # what tagged indexes name stays too
                for child in _children(store.read_blob(frontier.pop())):
                    if child in revisions and child not in keep:
                        keep.add(child)
                        frontier.append(child)
            keep |= {d for d, link in revisions.items() if now - float(link.get("linked", 0)) < grace}
        repo_refs: set[str] = set()
        for digest in revisions:
            if digest not in keep:
                stats["manifests_removed"] += 1
                if not dry_run:
                    store.unlink_manifest(repo, digest)
                continue
            marked.add(digest)
            repo_refs |= _references(store.read_blob(digest))
        for digest, linked in store.iter_layer_links(repo):
            if digest in repo_refs or now - linked < grace:
                marked.add(digest)
            else:
                stats["layer_links_removed"] += 1
                if not dry_run:
                    store.unlink_layer(repo, digest)
    for digest, size in list(store.iter_blobs()):
        # linked_since: a push may have linked it since the mark phase (gc can run beside a live server)
        if digest in marked or (not dry_run and store.linked_since(digest, now - grace)):
            stats["blobs_kept"] += 1
            stats["bytes_kept"] += size
        else:
            stats["blobs_removed"] += 1
            stats["bytes_freed"] += size if dry_run else store.delete_blob(digest)
    if not dry_run:
        store.prune_empty_dirs()
    log.info("registry gc: %s", stats)
    return stats


def _descriptors(body: bytes | None) -> Iterable[dict]:
    if not body:
        return []
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
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
    except (ValueError, AttributeError, TypeError, RecursionError):
        return set()
