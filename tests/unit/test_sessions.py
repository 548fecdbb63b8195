"""Sessions: expiry by the injected clock, revocation (one token, a container's tokens, all container tokens), the
in-memory cache honouring both at once, the sessions table migration, and the cache bound. SQLite store, no app."""
from __future__ import annotations

import sqlite3

import pytest

from grokemu.adapters.sqlite_store import SqliteStore
from grokemu.domain.clock import ManualClock
from grokemu.domain.errors import Unauthorized
from grokemu.services.auth import EXPIRED_KEPT, AuthService

TTL = 3600.0


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def store():
    s = SqliteStore(":memory:")
    yield s
    s.close()


@pytest.fixture
def auth(store, clock):
    return AuthService({"admin": "admin", "k2": "alice"}, store, clock, session_ttl=TTL)


def refused(auth, token, message):
    with pytest.raises(Unauthorized) as e:
        auth.authenticate(token)
    assert message in e.value.message
    return e.value


# -- expiry ----------------------------------------------------------------------------------------------------------
def test_dev_key_session_works_until_ttl_then_is_refused_even_when_cached(auth, clock):
    token, login = auth.login_with_dev_key("k2")
    assert login == "alice"
    assert auth.authenticate(token) == "alice"  # now cached
    assert auth.cached == 1
    clock.advance(TTL - 1)
    assert auth.authenticate(token) == "alice"  # from the cache, still in time
    clock.advance(1)
    error = refused(auth, token, "session expired: log in again")
    assert error.status == 401
    assert auth.cached == 0  # the expired entry left the cache
    refused(auth, token, "session expired")  # and the store says the same


def test_expiry_holds_without_the_cache(store, clock, auth):
    token, _ = auth.login_with_dev_key("admin")
    fresh = AuthService({"admin": "admin"}, store, clock, session_ttl=TTL)  # e.g. after a restart: empty cache
    clock.advance(TTL + 5)
    refused(fresh, token, "session expired")
    assert store.get_session(token).expires == pytest.approx(clock.now() - 5)


def test_session_record_carries_expiry_and_no_owner(auth, clock, store):
    token, _ = auth.login_with_dev_key("admin")
    record = store.get_session(token)
    assert record.login == "admin" and record.owner is None
    assert record.expires == pytest.approx(record.created + TTL) and record.created == clock.now()
    session = auth.session(token)
    assert session.is_container is False and session.expires == record.expires


def test_plain_token_for_is_a_user_session_with_the_ttl(auth, clock):
    token = auth.token_for("alice")
    assert auth.authenticate(token) == "alice" and not auth.is_container_token(token)
    clock.advance(TTL)
    refused(auth, token, "session expired")


def test_bad_dev_key_and_missing_or_unknown_token(auth):
    with pytest.raises(Unauthorized):
        auth.login_with_dev_key("nope")
    with pytest.raises(Unauthorized):
        auth.login_with_dev_key("")
    refused(auth, None, "Not authenticated")
    refused(auth, "made-up-token", "unknown or revoked")


# -- revocation ------------------------------------------------------------------------------------------------------
def test_revoke_is_immediate_cached_or_not(auth):
    cached, _ = auth.login_with_dev_key("admin")
    uncached, _ = auth.login_with_dev_key("admin")
    other, _ = auth.login_with_dev_key("admin")
    assert auth.authenticate(cached) == "admin" and auth.authenticate(other) == "admin"
    assert auth.revoke(cached) is True
    assert auth.revoke(uncached) is True
    refused(auth, cached, "unknown or revoked")
    refused(auth, uncached, "unknown or revoked")
    assert auth.authenticate(other) == "admin"  # only the revoked ones
    assert auth.revoke(cached) is False and auth.revoke(None) is False


def test_container_token_has_no_time_limit_and_dies_with_its_owner(auth, clock, store):
    c1 = auth.token_for("admin", owner="c1")
    c2 = auth.token_for("alice", owner="c2")
    user, _ = auth.login_with_dev_key("admin")
    assert auth.is_container_token(c1) and not auth.is_container_token(user)
    assert store.get_session(c1).expires is None and store.get_session(c1).owner == "c1"
    clock.advance(TTL * 10)
    assert auth.authenticate(c1) == "admin"  # cached now, long past the ttl
    assert auth.authenticate(c2) == "alice"  # c2 never cached before this line... and now it is
    assert auth.revoke_owner("c1") == 1
    refused(auth, c1, "unknown or revoked")
    assert auth.authenticate(c2) == "alice"
    refused(auth, user, "session expired")  # the user session did expire meanwhile


def test_revoke_owner_of_a_never_cached_token(auth):
    token = auth.token_for("admin", owner="c1")
    auth.revoke_owner("c1")
    refused(auth, token, "unknown or revoked")
    assert not auth.is_container_token(token)


def test_a_new_token_for_the_same_owner_replaces_the_old_one(auth):
    first = auth.token_for("admin", owner="c1")
    assert auth.authenticate(first) == "admin"
    second = auth.token_for("admin", owner="c1")
    refused(auth, first, "unknown or revoked")
    assert auth.authenticate(second) == "admin"


def test_revoke_all_containers_keeps_user_sessions(auth, store):
    containers = [auth.token_for("admin", owner=f"c{i}") for i in range(3)]
    user, _ = auth.login_with_dev_key("admin")
    for token in containers[:2] + [user]:
        auth.authenticate(token)  # some cached, one not
    assert auth.revoke_all_containers() == 3
    for token in containers:
        refused(auth, token, "unknown or revoked")
    assert auth.authenticate(user) == "admin"


def test_store_reset_drops_container_tokens_but_not_user_sessions(auth, store):
    container = auth.token_for("admin", owner="c1")
    user, _ = auth.login_with_dev_key("admin")
    store.reset()
    assert store.get_session(container) is None
    assert store.get_session(user) is not None


def test_a_revoke_racing_a_lookup_does_not_leave_the_token_cached(auth, store):
    token = auth.token_for("admin", owner="c1")
    real_get = store.get_session

    def get_then_revoked(t):
        record = real_get(t)  # the lookup read a valid row...
        auth.revoke_owner("c1")  # ...and the container stopped before it could cache it
        return record

    store.get_session = get_then_revoked
    assert auth.authenticate(token) == "admin"  # that one request got through (it was valid when read)
    store.get_session = real_get
    assert auth.cached == 0
    refused(auth, token, "unknown or revoked")


# -- the cache bound -------------------------------------------------------------------------------------------------
def test_cache_is_bounded_and_evicted_sessions_still_work(store, clock):
    auth = AuthService({"admin": "admin"}, store, clock, session_ttl=TTL, cache_size=3)
    tokens = [auth.login_with_dev_key("admin")[0] for _ in range(5)]
    for token in tokens:
        assert auth.authenticate(token) == "admin"
    assert auth.cached == 3
    assert auth.authenticate(tokens[0]) == "admin"  # evicted, read again from the store
    assert auth.cached == 3
    auth.revoke(tokens[0])
    refused(auth, tokens[0], "unknown or revoked")


# -- the store: purge and migration ----------------------------------------------------------------------------------
def test_login_purges_rows_expired_long_ago(auth, store, clock):
    old, _ = auth.login_with_dev_key("admin")
    container = auth.token_for("admin", owner="c1")
    clock.advance(TTL + EXPIRED_KEPT - 1)
    auth.login_with_dev_key("admin")
    assert store.get_session(old) is not None  # expired, but kept a while so its use says "expired"
    clock.advance(2)
    auth.login_with_dev_key("admin")
    assert store.get_session(old) is None
    assert store.get_session(container) is not None  # no expiry: never purged by time


def test_old_schema_database_is_migrated(tmp_path, clock):
    path = tmp_path / "grokemu.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE sessions (token TEXT PRIMARY KEY, login TEXT NOT NULL, created REAL NOT NULL)")
    db.execute("INSERT INTO sessions VALUES (?, ?, ?)", ("old-token", "alice", clock.now() - 60))
    db.commit()
    db.close()

    store = SqliteStore(path)
    columns = [row[1] for row in store._db.execute("PRAGMA table_info(sessions)")]
    assert columns == ["token", "login", "created", "expires", "owner"]
    record = store.get_session("old-token")
    assert (record.login, record.expires, record.owner) == ("alice", None, None)
    auth = AuthService({"admin": "admin"}, store, clock, session_ttl=TTL)
    assert auth.authenticate("old-token") == "alice"
    assert not auth.is_container_token("old-token")
    new = auth.token_for("admin", owner="c1")  # the new columns work on the migrated table
    assert store.get_session(new).owner == "c1"
    store.close()

    store = SqliteStore(path)  # opening again: nothing left to migrate, nothing lost
    auth = AuthService({"admin": "admin"}, store, clock, session_ttl=TTL)
    assert auth.authenticate("old-token") == "alice" and auth.authenticate(new) == "admin"
    clock.advance(TTL - 60)  # a pre-expiry user session is dated from its creation, not kept forever
    refused(auth, "old-token", "session expired")
    assert auth.authenticate(new) == "admin"
    store.close()
