"""RegistryService over the filesystem blob store: uploads, digests, links, manifests, listings, expiry, gc.
No sockets, no daemon: the service is driven directly with byte streams and a ManualClock."""
from __future__ import annotations

import hashlib
import io
import json
import threading

import pytest

from grokemu.adapters.fs_blobs import FsBlobStore
from grokemu.domain.clock import ManualClock
from grokemu.services import registry as reg
from grokemu.services.registry import RegistryService


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def svc(tmp_path, clock):
    return RegistryService(FsBlobStore(tmp_path / "registry"), clock)


def blob_files(svc) -> list[str]:
    return [d for d, _ in svc.store.iter_blobs()]


def push_blob(svc, repo: str, data: bytes) -> str:
    state = svc.start_upload(repo)
    svc.append_upload(repo, state.upload_id, io.BytesIO(data), len(data))
    return svc.finish_upload(repo, state.upload_id, sha(data)).digest


def image_manifest(config: bytes, layers: list[bytes], media_type=reg.DOCKER_MANIFEST) -> bytes:
    layer_type = ("application/vnd.docker.image.rootfs.diff.tar.gzip" if media_type == reg.DOCKER_MANIFEST
                  else "application/vnd.oci.image.layer.v1.tar+gzip")
    doc = {"schemaVersion": 2, "mediaType": media_type,
           "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": len(config),
                      "digest": sha(config)},
           "layers": [{"mediaType": layer_type, "size": len(x), "digest": sha(x)} for x in layers]}
    return json.dumps(doc, indent=3).encode()  # odd indentation on purpose: the exact bytes must survive


def push_image(svc, repo: str, tag: str, layers=(b"layer-1", b"layer-2"), config=b'{"architecture":"amd64"}',
               media_type=reg.DOCKER_MANIFEST):
    for b in (config, *layers):
        push_blob(svc, repo, b)
    body = image_manifest(config, list(layers), media_type)
    return svc.put_manifest(repo, tag, body, media_type), body


class ExplodingStream(io.RawIOBase):
    """A body that delivers `good` bytes and then fails, like a client that vanished mid-upload."""

    def __init__(self, good: bytes):
        self._buf = io.BytesIO(good)

    def read(self, n=-1):
        data = self._buf.read(n)
        if not data:
            raise ConnectionResetError("client went away")
        return data


# -- uploads ----------------------------------------------------------------------------------------------------------

def test_chunked_upload_commits_under_its_digest(svc):
    data = b"a" * 3_000_000 + b"b" * 1234
    state = svc.start_upload("team/app")
    assert state.upload_id and state.offset == 0 and state.range == "0-0"
    mid = svc.append_upload("team/app", state.upload_id, io.BytesIO(data[:1_000_000]), 1_000_000)
    assert mid.offset == 1_000_000 and mid.range == "0-999999"
    end = svc.append_upload("team/app", state.upload_id, io.BytesIO(data[1_000_000:]), None)  # chunked: no length
    assert end.range == f"0-{len(data) - 1}"  # trap T2: docker uses end+1 as the layer size
    done = svc.finish_upload("team/app", state.upload_id, sha(data))
    assert done.digest == sha(data) and done.location == f"/v2/team/app/blobs/{sha(data)}"
    info = svc.stat_blob("team/app", sha(data))
    assert info.size == len(data) and info.path.read_bytes() == data
    assert svc.store.upload_info(state.upload_id) is None  # session gone


def test_content_range_chunks_must_be_in_order(svc):
    state = svc.start_upload("r")
    svc.append_upload("r", state.upload_id, io.BytesIO(b"0123"), 4, "0-3")
    with pytest.raises(reg.RangeInvalid) as e:
        svc.append_upload("r", state.upload_id, io.BytesIO(b"89"), 2, "8-9")
    assert e.value.status == 416 and e.value.headers["Range"] == "0-3"
    with pytest.raises(reg.RangeInvalid):
        svc.append_upload("r", state.upload_id, io.BytesIO(b"456"), 3, "4-7")  # length disagrees with range
    svc.append_upload("r", state.upload_id, io.BytesIO(b"4567"), 4, "4-7")
    assert svc.upload_status("r", state.upload_id).offset == 8


def test_digest_mismatch_stores_nothing(svc):
    state = svc.start_upload("r")
    svc.append_upload("r", state.upload_id, io.BytesIO(b"real bytes"), 10)
    wrong = sha(b"other bytes")
    with pytest.raises(reg.DigestInvalid) as e:
        svc.finish_upload("r", state.upload_id, wrong)
    assert e.value.status == 400 and e.value.oci_code == "DIGEST_INVALID"
    assert blob_files(svc) == []
    with pytest.raises(reg.BlobUnknown):
        svc.stat_blob("r", wrong)
    with pytest.raises(reg.BlobUnknown):
        svc.stat_blob("r", sha(b"real bytes"))
    with pytest.raises(reg.BlobUploadUnknown):
        svc.upload_status("r", state.upload_id)


def test_killed_body_leaves_session_as_it_was(svc):
    data = b"x" * (3 * 1024 * 1024)
    state = svc.start_upload("r")
    svc.append_upload("r", state.upload_id, io.BytesIO(data[:100]), 100)
    with pytest.raises(ConnectionResetError):
        svc.append_upload("r", state.upload_id, ExplodingStream(data[100:2_500_000]), None)
    assert svc.upload_status("r", state.upload_id).offset == 100  # cut back, not half a chunk
    with pytest.raises(reg.BlobUploadInvalid):  # announced more than it sent
        svc.append_upload("r", state.upload_id, io.BytesIO(data[100:200]), 5000)
    assert svc.upload_status("r", state.upload_id).offset == 100
    assert blob_files(svc) == []
    svc.append_upload("r", state.upload_id, io.BytesIO(data[100:]), len(data) - 100)
    assert svc.finish_upload("r", state.upload_id, sha(data)).digest == sha(data)


def test_upload_written_but_not_committed_is_invisible(svc, tmp_path, clock):
    """A crash between writing and committing leaves bytes only in uploads/, never under a digest."""
    data = b"y" * 5000
    state = svc.start_upload("r")
    svc.append_upload("r", state.upload_id, io.BytesIO(data), len(data))
    restarted = RegistryService(FsBlobStore(tmp_path / "registry"), clock)  # the process died here
    assert blob_files(restarted) == []
    with pytest.raises(reg.BlobUnknown):
        restarted.stat_blob("r", sha(data))
    # ...and the session can still be finished after a restart (hash state rebuilt from the file)
    assert restarted.finish_upload("r", state.upload_id, sha(data)).digest == sha(data)


def test_monolithic_single_post_and_sha512(svc):
    data = b"mono"
    state = svc.start_upload("r", digest=sha(data), stream=io.BytesIO(data), length=4)
    assert state.digest == sha(data) and state.upload_id is None
    d512 = "sha512:" + hashlib.sha512(b"five12").hexdigest()
    s = svc.start_upload("r")
    assert svc.finish_upload("r", s.upload_id, d512, io.BytesIO(b"five12"), 6).digest == d512
    assert svc.stat_blob("r", d512).size == 6


def test_empty_blob(svc):
    s = svc.start_upload("r")
    assert svc.finish_upload("r", s.upload_id, sha(b""), io.BytesIO(b""), 0).digest == sha(b"")
    assert svc.stat_blob("r", sha(b"")).size == 0


def test_upload_belongs_to_its_repository(svc):
    s = svc.start_upload("a")
    with pytest.raises(reg.BlobUploadUnknown):
        svc.upload_status("b", s.upload_id)
    with pytest.raises(reg.BlobUploadUnknown):
        svc.upload_status("a", "not-a-uuid")


def test_cancel(svc):
    s = svc.start_upload("a")
    svc.cancel_upload("a", s.upload_id)
    with pytest.raises(reg.BlobUploadUnknown):
        svc.cancel_upload("a", s.upload_id)


def test_abandoned_uploads_expire(svc, clock):
    old = svc.start_upload("a")
    svc.append_upload("a", old.upload_id, io.BytesIO(b"partial"), 7)
    clock.advance(reg.UPLOAD_TTL - 10)
    fresh = svc.start_upload("a")
    clock.advance(20)
    with pytest.raises(reg.BlobUploadUnknown):
        svc.append_upload("a", old.upload_id, io.BytesIO(b"more"), 4)
    assert svc.upload_status("a", fresh.upload_id).offset == 0
    clock.advance(reg.UPLOAD_TTL)
    assert svc.purge_uploads() == 1
    assert list(svc.store.iter_uploads()) == []


def test_same_blob_uploaded_concurrently(svc):
    data = b"shared layer" * 10000
    errors = []

    def upload(repo):
        try:
            push_blob(svc, repo, data)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=upload, args=(f"r{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert blob_files(svc) == [sha(data)]
    assert all(svc.stat_blob(f"r{i}", sha(data)).size == len(data) for i in range(6))


# -- links and mounts -------------------------------------------------------------------------------------------------

def test_blobs_are_per_repository(svc):
    d = push_blob(svc, "a", b"only in a")
    assert svc.stat_blob("a", d)
    with pytest.raises(reg.BlobUnknown):
        svc.stat_blob("b", d)  # trap T16: the reference registry answers 404 here, which makes docker mount


def test_mount(svc):
    d = push_blob(svc, "a", b"layer")
    state = svc.start_upload("b", mount=d, from_repo="a")
    assert state.mounted and state.digest == d and svc.stat_blob("b", d)
    fallback = svc.start_upload("c", mount=d, from_repo="nowhere")  # not in `from`: plain session (202)
    assert fallback.upload_id and not fallback.mounted
    unknown = svc.start_upload("c", mount=sha(b"never pushed"), from_repo="a")
    assert unknown.upload_id
    anonymous = svc.start_upload("c", mount=d)  # OCI 1.1: no `from`, the registry may mount what it has
    assert anonymous.mounted


def test_delete_blob_unlinks_from_repository_only(svc):
    d = push_blob(svc, "a", b"z")
    push_blob(svc, "b", b"z")
    svc.delete_blob("a", d)
    with pytest.raises(reg.BlobUnknown):
        svc.stat_blob("a", d)
    assert svc.stat_blob("b", d)
    with pytest.raises(reg.BlobUnknown):
        svc.delete_blob("a", d)


# -- manifests --------------------------------------------------------------------------------------------------------

def test_manifest_exact_bytes_by_tag_and_digest(svc):
    m, body = push_image(svc, "team/app", "v1")
    assert m.digest == sha(body) and m.media_type == reg.DOCKER_MANIFEST
    by_tag = svc.get_manifest("team/app", "v1")
    by_digest = svc.get_manifest("team/app", m.digest)
    assert by_tag.body == body == by_digest.body
    assert by_tag.media_type == reg.DOCKER_MANIFEST and by_tag.size == len(body)
    assert svc.resolve_manifest("team/app", "v1") == (m.digest, reg.DOCKER_MANIFEST, len(body))
    assert svc.resolve_manifest("team/app", "nope") is None
    assert svc.resolve_manifest("Bad..Name", "v1") is None
    with pytest.raises(reg.ManifestUnknown):
        svc.get_manifest("other", m.digest)  # per repository


def test_manifest_put_by_digest_must_match(svc):
    _, body = push_image(svc, "r", "v1")
    assert svc.put_manifest("r", sha(body), body, reg.DOCKER_MANIFEST).digest == sha(body)
    with pytest.raises(reg.DigestInvalid):
        svc.put_manifest("r", sha(b"something else"), body, reg.DOCKER_MANIFEST)


def test_manifest_with_unknown_blob_is_refused(svc):
    push_blob(svc, "r", b"cfg")
    body = image_manifest(b"cfg", [b"never uploaded"])
    with pytest.raises(reg.ManifestBlobUnknown) as e:
        svc.put_manifest("r", "v1", body, reg.DOCKER_MANIFEST)
    assert e.value.detail == {"digest": sha(b"never uploaded")}
    assert svc.resolve_manifest("r", "v1") is None


def test_manifest_validation(svc):
    push_blob(svc, "r", b"cfg")
    with pytest.raises(reg.ManifestInvalid):
        svc.put_manifest("r", "v1", b"not json", reg.DOCKER_MANIFEST)
    with pytest.raises(reg.ManifestInvalid):
        svc.put_manifest("r", "v1", b'{"schemaVersion": 1, "fsLayers": []}', "application/json")
    with pytest.raises(reg.ManifestInvalid):  # declared type disagrees with Content-Type
        svc.put_manifest("r", "v1", image_manifest(b"cfg", [], reg.OCI_MANIFEST), reg.DOCKER_MANIFEST)
    with pytest.raises(reg.ManifestTooBig):
        svc.put_manifest("r", "v1", b" " * (reg.MAX_MANIFEST_BYTES + 1), reg.DOCKER_MANIFEST)
    with pytest.raises(reg.TagInvalid):
        svc.put_manifest("r", "-bad", image_manifest(b"cfg", []), reg.DOCKER_MANIFEST)
    # no Content-Type and no mediaType: the shape says OCI manifest
    doc = json.loads(image_manifest(b"cfg", []))
    del doc["mediaType"]
    assert svc.put_manifest("r", "v2", json.dumps(doc).encode(), None).media_type == reg.OCI_MANIFEST


def test_index_needs_its_manifests(svc):
    child, _ = push_image(svc, "r", "amd64", media_type=reg.OCI_MANIFEST)
    index = json.dumps({"schemaVersion": 2, "mediaType": reg.OCI_INDEX, "manifests": [
        {"mediaType": reg.OCI_MANIFEST, "digest": child.digest, "size": child.size,
         "platform": {"architecture": "amd64", "os": "linux"}}]}).encode()
    assert svc.put_manifest("r", "multi", index, reg.OCI_INDEX).media_type == reg.OCI_INDEX
    missing = index.replace(child.digest.encode(), sha(b"absent").encode())
    with pytest.raises(reg.ManifestBlobUnknown):
        svc.put_manifest("r", "broken", missing, reg.OCI_INDEX)
    listed = json.dumps({"schemaVersion": 2, "mediaType": reg.DOCKER_MANIFEST_LIST, "manifests": [
        {"mediaType": reg.OCI_MANIFEST, "digest": child.digest, "size": child.size}]}).encode()
    assert svc.get_manifest("r", svc.put_manifest("r", "list", listed, reg.DOCKER_MANIFEST_LIST).digest).body == listed


def test_delete_manifest(svc):
    m, _ = push_image(svc, "r", "v1")
    svc.store.set_tag("r", "latest", m.digest)
    svc.delete_manifest("r", "latest")  # by tag: the tag only
    assert svc.get_manifest("r", "v1").digest == m.digest
    svc.delete_manifest("r", m.digest)  # by digest: revision and its tags
    for ref in ("v1", m.digest):
        with pytest.raises(reg.ManifestUnknown):
            svc.get_manifest("r", ref)
    with pytest.raises(reg.ManifestUnknown):
        svc.delete_manifest("r", m.digest)


# -- listings ---------------------------------------------------------------------------------------------------------

def test_tags_and_catalog_pagination(svc):
    m, _ = push_image(svc, "r", "v1")
    for t in ("b", "a", "c", "v2"):
        svc.store.set_tag("r", t, m.digest)
    assert svc.list_tags("r").items == ["a", "b", "c", "v1", "v2"]
    page = svc.list_tags("r", n=2)
    assert page.items == ["a", "b"] and page.next_last == "b"
    page = svc.list_tags("r", n=2, last="b")
    assert page.items == ["c", "v1"] and page.next_last == "v1"
    assert svc.list_tags("r", n=2, last="v1").items == ["v2"]
    assert svc.list_tags("r", n=2, last="v1").next_last is None
    assert svc.list_tags("r", n=0).items == []
    with pytest.raises(reg.NameUnknown):
        svc.list_tags("nothing/here")
    with pytest.raises(reg.PaginationInvalid):
        svc.list_tags("r", n=-1)
    push_image(svc, "a/b", "v1")
    push_image(svc, "a", "v1")
    assert svc.catalog().items == ["a", "a/b", "r"]
    assert svc.catalog(n=1, last="a").items == ["a/b"]


# -- validation -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["..", "a/..", "../etc", "a/../b", "a..b", "A", "a//b", "/a", "a/", "_a", "a_",
                                  "a b", "a%2fb", "a" * 256, "a/./b", "a\x00b", ""])
def test_invalid_names(svc, name):
    with pytest.raises(reg.NameInvalid):
        svc.start_upload(name)
    with pytest.raises(reg.NameInvalid):
        svc.stat_blob(name, sha(b"x"))


@pytest.mark.parametrize("name", ["a", "a/b/c", "a.b", "a__b", "a---b", "grokemu/plugin-1.2", "x" * 255])
def test_valid_names(svc, name):
    assert svc.start_upload(name).upload_id


@pytest.mark.parametrize("digest", ["sha256:..", "sha256:../../../etc/passwd", "sha256:abc", "md5:" + "0" * 32,
                                    "sha256:" + "A" * 64, "sha256:" + "g" * 64, "sha256" + "0" * 64, "",
                                    "sha512:" + "0" * 64, "sha256:" + "0" * 63 + "/"])
def test_invalid_digests(svc, digest):
    with pytest.raises(reg.DigestInvalid):
        svc.stat_blob("r", digest)
    s = svc.start_upload("r")
    with pytest.raises(reg.DigestInvalid):
        svc.finish_upload("r", s.upload_id, digest, io.BytesIO(b""), 0)


def test_nothing_escapes_the_root(svc, tmp_path):
    for name in ("../x", "a/../../x"):
        with pytest.raises(reg.NameInvalid):
            svc.start_upload(name)
    assert not (tmp_path / "x").exists() and not (tmp_path / "registry" / "x").exists()


# -- gc ---------------------------------------------------------------------------------------------------------------

def test_gc_removes_unreferenced_blobs(svc, clock):
    m, body = push_image(svc, "r", "v1", layers=(b"kept-1", b"kept-2"))
    orphan = push_blob(svc, "r", b"orphan" * 100)  # uploaded, never named by a manifest
    nothing = svc.gc()
    assert nothing["blobs_removed"] == 0  # within the grace period: a push may still be in flight
    clock.advance(reg.GC_GRACE + 1)
    stats = svc.gc()
    assert stats["blobs_removed"] == 1 and stats["bytes_freed"] == 600 and stats["layer_links_removed"] == 1
    assert orphan not in blob_files(svc)
    assert svc.get_manifest("r", "v1").body == body
    for layer in (b"kept-1", b"kept-2"):
        assert svc.stat_blob("r", sha(layer))
    # deleting the manifest makes its layers garbage (the manifest blob too)
    svc.delete_manifest("r", m.digest)
    clock.advance(1)
    stats = svc.gc()
    assert stats["blobs_removed"] == 4 and stats["manifests_removed"] == 0
    assert blob_files(svc) == []


def test_gc_untagged(svc, clock):
    old, _ = push_image(svc, "r", "v1", layers=(b"old",))
    new, _ = push_image(svc, "r", "v1", layers=(b"new",))  # v1 moved: `old` is untagged now
    clock.advance(reg.GC_GRACE + 1)
    assert svc.gc()["blobs_removed"] == 0  # default: untagged revisions are kept
    dry = svc.gc(delete_untagged=True, dry_run=True)
    assert dry["manifests_removed"] == 1 and sha(b"old") in blob_files(svc)
    stats = svc.gc(delete_untagged=True)
    assert stats["manifests_removed"] == 1 and stats["blobs_removed"] == 2  # old manifest + old layer
    with pytest.raises(reg.ManifestUnknown):
        svc.get_manifest("r", old.digest)
    assert svc.get_manifest("r", "v1").digest == new.digest


def test_gc_purges_expired_uploads(svc, clock):
    s = svc.start_upload("r")
    svc.append_upload("r", s.upload_id, io.BytesIO(b"abandoned"), 9)
    clock.advance(reg.UPLOAD_TTL + 1)
    assert svc.gc()["uploads_removed"] == 1


def test_crash_debris_in_uploads_is_purged_once_old(svc):
    import os
    uploads = svc.store.root / "uploads"
    debris = uploads / ".tmp-0123"
    debris.mkdir()
    (uploads / ("f" * 32)).mkdir()  # a session directory whose metadata never got written
    assert svc.purge_uploads() == 0  # young: maybe a session being created right now
    for p in (debris, uploads / ("f" * 32)):
        os.utime(p, (1, 1))
    assert svc.purge_uploads() == 2
    assert list(uploads.iterdir()) == []


def test_reset_forgets_everything(svc):
    push_image(svc, "r", "v1")
    s = svc.start_upload("r")
    svc.reset()
    assert blob_files(svc) == [] and svc.catalog().items == [] and list(svc.store.iter_uploads()) == []
    with pytest.raises(reg.BlobUploadUnknown):
        svc.upload_status("r", s.upload_id)
    push_image(svc, "r", "v1")  # and works afterwards


def test_gc_keeps_a_blob_linked_while_it_runs(svc, clock):
    """gc may run beside a live server: a blob linked after the mark phase must survive the sweep."""
    orphan = push_blob(svc, "r", b"about to be pushed again")
    clock.advance(reg.GC_GRACE + 1)
    real_iter = svc.store.iter_blobs

    def iter_and_push():
        svc.store.link_layer("other", orphan, clock.now())  # a push/mount lands between mark and sweep
        yield from real_iter()

    svc.store.iter_blobs = iter_and_push
    stats = svc.gc()
    assert stats["blobs_removed"] == 0 and svc.stat_blob("other", orphan)
