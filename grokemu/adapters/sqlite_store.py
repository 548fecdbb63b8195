"""The Store port on SQLite (standard library): one file in the data directory, WAL mode, one connection guarded by
a lock (grokemu's write rate is tiny; a lock keeps every multi-step change atomic without retry loops)."""
from __future__ import annotations

import json
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from grokemu.domain.model import DockerContainer, DockerImage, container_from_record, image_from_record, to_record
from grokemu.domain.ports import SessionRecord

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS containers (id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS packages (name TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (token TEXT PRIMARY KEY, login TEXT NOT NULL, created REAL NOT NULL,
                                     expires REAL, owner TEXT);
"""


class SqliteStore:
    def __init__(self, path: str | Path = ":memory:"):
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.RLock()
        self._depth = 0
        if str(path) != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._migrate_sessions()

    def _migrate_sessions(self) -> None:
        """A database from before sessions expired has `sessions (token, login, created)`: add the new columns
        (NULL: AuthService dates such a user session from `created`; it has no owner)."""
        with self.transaction():
            have = {row[1] for row in self._db.execute("PRAGMA table_info(sessions)")}
            for column, kind in (("expires", "REAL"), ("owner", "TEXT")):
                if column not in have:
                    self._db.execute(f"ALTER TABLE sessions ADD COLUMN {column} {kind}")
            self._db.execute("CREATE INDEX IF NOT EXISTS sessions_owner ON sessions (owner)")

    @contextmanager
    def transaction(self):
        with self._lock:
            outer = self._depth == 0
            if outer:
                self._db.execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield self
            except BaseException:
                self._depth -= 1
                if outer:
                    self._rollback()
                raise
            self._depth -= 1
            if outer:
                try:
                    self._db.execute("COMMIT")
                except BaseException:  # a full disk at commit: the transaction must not stay open
                    self._rollback()
                    raise

    def _rollback(self) -> None:
        # SQLite may have rolled back by itself (SQLITE_FULL, SQLITE_IOERR: sqlite.org/lang_transaction.html); a
        # ROLLBACK then fails with "no transaction is active" and would hide the error that matters.
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def _one(self, sql: str, args: tuple) -> Any:
        with self._lock:
            row = self._db.execute(sql, args).fetchone()
        return row[0] if row else None

    def _all(self, sql: str) -> list[Any]:
        with self._lock:
            return [r[0] for r in self._db.execute(sql).fetchall()]

    def _exec(self, sql: str, args: tuple) -> None:
        with self.transaction():
            self._db.execute(sql, args)

    # images
    def get_image(self, image_id: str) -> DockerImage | None:
        data = self._one("SELECT data FROM images WHERE id = ?", (image_id,))
        return image_from_record(json.loads(data)) if data else None

    def list_images(self) -> list[DockerImage]:
        return [image_from_record(json.loads(d)) for d in self._all("SELECT data FROM images")]

    def put_image(self, image: DockerImage) -> None:
        self._exec("INSERT OR REPLACE INTO images (id, data) VALUES (?, ?)", (image.id, json.dumps(to_record(image))))

    def delete_image(self, image_id: str) -> None:
        self._exec("DELETE FROM images WHERE id = ?", (image_id,))

    # containers
    def get_container(self, container_id: str) -> DockerContainer | None:
        data = self._one("SELECT data FROM containers WHERE id = ?", (container_id,))
        return container_from_record(json.loads(data)) if data else None

    def list_containers(self) -> list[DockerContainer]:
        return [container_from_record(json.loads(d)) for d in self._all("SELECT data FROM containers")]

    def put_container(self, container: DockerContainer) -> None:
        self._exec("INSERT OR REPLACE INTO containers (id, data) VALUES (?, ?)",
                   (container.id, json.dumps(to_record(container))))

    def delete_container(self, container_id: str) -> None:
        self._exec("DELETE FROM containers WHERE id = ?", (container_id,))

    # packages
    def get_package(self, name: str) -> dict[str, Any] | None:
        data = self._one("SELECT data FROM packages WHERE name = ?", (name,))
        return json.loads(data) if data else None

    def list_packages(self) -> list[dict[str, Any]]:
        return [json.loads(d) for d in self._all("SELECT data FROM packages")]

    def put_package(self, record: dict[str, Any]) -> None:
        self._exec("INSERT OR REPLACE INTO packages (name, data) VALUES (?, ?)", (record["name"], json.dumps(record)))

    # sessions
    def put_session(self, token: str, login: str, created: float, expires: float | None = None,
                    owner: str | None = None) -> None:
        self._exec("INSERT OR REPLACE INTO sessions (token, login, created, expires, owner) VALUES (?, ?, ?, ?, ?)",
                   (token, login, created, expires, owner))

    def get_session(self, token: str) -> SessionRecord | None:
        with self._lock:
            row = self._db.execute("SELECT token, login, created, expires, owner FROM sessions WHERE token = ?",
                                   (token,)).fetchone()
        return SessionRecord(*row) if row else None

    def _delete_sessions(self, where: str, args: tuple) -> int:
        with self.transaction():
            return self._db.execute(f"DELETE FROM sessions WHERE {where}", args).rowcount

    def delete_session(self, token: str) -> bool:
        return self._delete_sessions("token = ?", (token,)) > 0

    def delete_owner_sessions(self, owner: str) -> int:
        return self._delete_sessions("owner = ?", (owner,))

    def delete_container_sessions(self) -> int:
        return self._delete_sessions("owner IS NOT NULL", ())

    def purge_sessions(self, expired_before: float) -> int:
        return self._delete_sessions("expires IS NOT NULL AND expires < ?", (expired_before,))

    def reset(self) -> None:
        with self.transaction():
            # user sessions survive a reset (the logged-in grok CLI and browser keep working); the USER_API_KEYs
            # of containers do not: the containers are gone
            for table in ("images", "containers", "packages"):
                self._db.execute(f"DELETE FROM {table}")
            self._db.execute("DELETE FROM sessions WHERE owner IS NOT NULL")

    def close(self) -> None:
        with self._lock:
            self._db.close()
