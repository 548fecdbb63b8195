"""grokemu's content hash must equal datagrok-tools 6.7.5 calculateFolderHash (publish.js:203-246), or
`latest-compatible` never reports hashMatch. The vector below was computed by that very function (evaluated from
the installed CLI's publish.js in Node) over these files; tests/e2e/test_publish_grok_cli.py checks it live."""
from __future__ import annotations

from grokemu.services.packages import folder_hash

FILES = {
    "dockerfiles/hello/Dockerfile": b"FROM scratch\r\nEXPOSE 1\r\n",  # CRLF → LF (text: a CR and no NUL)
    "dockerfiles/hello/bin.dat": b"a\x00\r\nb",  # binary (has NUL): bytes kept as they are
    "dockerfiles/hello/sub/x.txt": b"hi\n",
    "dockerfiles/hello/sub/B.txt": b"Z",  # sorted by code unit: 'B' < 'x', 'Dockerfile' < 'bin.dat'
    "dockerfiles/hello/image.json": b'{"image": null}',  # appended by the CLI after hashing: left out
    "package.json": b"{}",
}
CLI_HASH = "d5a434f5d7477c44d8ca7d5d2b74a0693276c0d0174770fc18f9a37aadb236d7"


def test_same_as_the_cli():
    assert folder_hash(FILES, "dockerfiles/hello/", {"image.json"}) == CLI_HASH


def test_changes_with_content():
    changed = {**FILES, "dockerfiles/hello/sub/x.txt": b"ho\n"}
    assert folder_hash(changed, "dockerfiles/hello/", {"image.json"}) != CLI_HASH
