"""Datagrok's dev-key auth: a dev key logs in as a user and gets a session token; the token then comes raw in
`Authorization`, as `Bearer <token>`, or in the `auth` cookie (docs/datagrok-api.md §3.3)."""
from __future__ import annotations

import hmac
import secrets
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from grokemu.domain.clock import Clock
from grokemu.domain.errors import Unauthorized
from grokemu.domain.ports import SessionRecord, Store

DEFAULT_SESSION_TTL = 12 * 3600.0
EXPIRED_KEPT = 24 * 3600.0  # an expired row is kept this long (so its use says "expired", not "invalid"), then purged


@dataclass(frozen=True)
class Session:
    """A valid session. `expires` None: no time limit (a container's token, valid until its container stops).
    `owner`: the container id whose USER_API_KEY this is; None for a user's own login."""

    token: str
    login: str
    expires: float | None
    owner: str | None = None

    @property
    def is_container(self) -> bool:
        return self.owner is not None


class AuthService:
    """Sessions: a dev-key login (`login_with_dev_key`) lives `session_ttl` seconds by the injected clock; a
    container's token (`token_for(login, owner=<container id>)`) has no time limit and lives until `revoke_owner`
    (the spawner calls it whenever that container stops, fails, vanishes, is removed or restarted) or
    `revoke_all_containers` (reset). `revoke(token)` ends one session (logout).

    Every API request authenticates, so valid sessions are cached in memory (LRU, at most `cache_size`). An entry
    carries its expiry and owner, so expiry holds on a cache hit and a revoke drops the entry at once. A revocation
    counter keeps a lookup that raced a revoke from caching what was just revoked."""

    def __init__(self, dev_keys: Mapping[str, str], store: Store, clock: Clock,
                 session_ttl: float = DEFAULT_SESSION_TTL, cache_size: int = 10_000):
        self._dev_keys = dict(dev_keys)
        self._store = store
        self._clock = clock
        self.session_ttl = float(session_ttl)
        self._cache_size = max(0, int(cache_size))
        self._cache: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()  # guards the cache; never held while the store is called
        self._revocations = 0

    # -- logging in --------------------------------------------------------------------------------------------
    def login_for_dev_key(self, key: str | None) -> str | None:
        """The user a dev key belongs to, or None. Constant-time compare: the key is a password."""
        if not key:
            return None
        for known, login in self._dev_keys.items():
            if hmac.compare_digest(known.encode(), key.encode()):
                return login
        return None

    def login_with_dev_key(self, key: str | None) -> tuple[str, str]:
        """(token, login) for a valid dev key: a new session valid `session_ttl` seconds; Unauthorized otherwise."""
        login = self.login_for_dev_key(key)
        if login is None:
            raise Unauthorized("Invalid developer key")
        now = self._clock.now()
        self._store.purge_sessions(now - EXPIRED_KEPT)  # now and then: logins are rare next to requests
        token = secrets.token_urlsafe(32)
        self._store.put_session(token, login, now, expires=now + self.session_ttl)
        return token, login

    def token_for(self, login: str, owner: str | None = None, keep_earlier: bool = False) -> str:
        """A fresh token for `login`. With `owner` (a container id): that container's USER_API_KEY, no time limit,
        replacing (revoking) any earlier token of the same owner, unless `keep_earlier` (a live replacement: the
        container that serves keeps its key until the new one takes over, `hand_over`). Without: a user session of
        `session_ttl`."""
        now = self._clock.now()
        token = secrets.token_urlsafe(32)
        if owner is None:
            self._store.put_session(token, login, now, expires=now + self.session_ttl)
            return token
        if not keep_earlier:
            self.revoke_owner(owner)
        self._store.put_session(token, login, now, expires=None, owner=owner)
        return token

    def hand_over(self, owner: str, token: str, login: str) -> None:
        """Every token of `owner` but `token` is revoked (the replaced container's key dies, the new one's lives)."""
        with self._store.transaction():
            self.revoke_owner(owner)
            self._store.put_session(token, login, self._clock.now(), expires=None, owner=owner)

    # -- checking ----------------------------------------------------------------------------------------------
    def session(self, token: str | None) -> Session:
        """The valid session behind a token; Unauthorized when missing, unknown, revoked or expired."""
        if not token:
            raise Unauthorized("Not authenticated: send the session token in Authorization or the auth cookie")
        now = self._clock.now()
        with self._lock:
            found = self._cache.get(token)
            if found is not None:
                if found.expires is not None and now >= found.expires:
                    del self._cache[token]
                    raise Unauthorized("session expired: log in again")
                self._cache.move_to_end(token)
                return found
            seen = self._revocations
        record = self._store.get_session(token)
        if record is None:
            raise Unauthorized("Invalid session token (unknown or revoked): log in again")
        found = self._from_record(record)
        if found.expires is not None and now >= found.expires:
            raise Unauthorized("session expired: log in again")
        with self._lock:
            if self._revocations == seen and self._cache_size:
                self._cache[token] = found
                self._cache.move_to_end(token)
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return found

    def authenticate(self, token: str | None) -> str:
        """The login behind a session token; Unauthorized (401) when missing, unknown, revoked or expired."""
        return self.session(token).login

    def is_container_token(self, token: str | None) -> bool:
        """True for a valid token owned by a container (a USER_API_KEY); False otherwise, never raises."""
        try:
            return self.session(token).is_container
        except Unauthorized:
            return False

    def _from_record(self, record: SessionRecord) -> Session:
        expires = record.expires
        if expires is None and record.owner is None:  # a user session from before sessions expired
            expires = record.created + self.session_ttl
        return Session(record.token, record.login, expires, record.owner)

    # -- revoking ----------------------------------------------------------------------------------------------
    def revoke(self, token: str | None) -> bool:
        """End one session (logout). True when there was one."""
        if not token:
            return False
        deleted = self._store.delete_session(token)
        with self._lock:
            self._revocations += 1
            cached = self._cache.pop(token, None)
        return deleted or cached is not None

    def revoke_owner(self, owner: str) -> int:
        """Revoke every token owned by a container (it stopped, failed, vanished, was removed or restarts)."""
        deleted = self._store.delete_owner_sessions(owner)
        with self._lock:
            self._revocations += 1
            for token in [t for t, s in self._cache.items() if s.owner == owner]:
                del self._cache[token]
        return deleted

    def revoke_all_containers(self) -> int:
        """Revoke every container's token (reset). Users' own sessions are kept."""
        deleted = self._store.delete_container_sessions()
        with self._lock:
            self._revocations += 1
            for token in [t for t, s in self._cache.items() if s.owner is not None]:
                del self._cache[token]
        return deleted

    def reset(self) -> int:
        """Admin reset: the containers are gone, so are their USER_API_KEYs (store rows and cached entries); users'
        own sessions survive (the logged-in grok CLI and browser keep working) and still expire by time."""
        return self.revoke_all_containers()

    @property
    def cached(self) -> int:
        """How many sessions the in-memory cache holds (for tests and the dashboard)."""
        with self._lock:
            return len(self._cache)


def token_from_headers(authorization: str | None, cookie_auth: str | None) -> str | None:
    """Accept `Authorization: <token>`, `Authorization: Bearer <token>`, or the `auth` cookie."""
    if authorization:
        value = authorization.strip()
        scheme, _, rest = value.partition(" ")
        if scheme.lower() == "bearer" and rest:
            return rest.strip()
        if scheme.lower() in ("dev", "basic"):
            return None
        return value
    return cookie_auth or None
