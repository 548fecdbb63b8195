"""Registry tokens as Datagrok issues them: an RS256 JWT, 30 minutes, claim `lim=docker`, the granted scopes in an
`access` claim shaped like distribution's token server (docs/datagrok-api.md §4.5,
docs/registry.md §2).

The signing key lives in `<data dir>/keys/` (created on first start, mode 0600); `jwks()` publishes the public half
as Datagrok does at `GET /api/docker/keys`. Time comes from the injected clock, never from PyJWT's own `time.time()`,
so tests can expire a token by advancing a ManualClock.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import tempfile
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from grokemu.domain.clock import Clock
from grokemu.domain.errors import GrokemuError

ISSUER = "grokemu"
TOKEN_TTL = 1800  # Datagrok: 30 min
KEY_FILE = "registry-signing-key.pem"
# Actions a registry token can carry (distribution: pull, push, delete, and `*` for "everything").
KNOWN_ACTIONS = ("pull", "push", "delete", "*")
_CLOCK_SKEW = 60  # seconds of leeway for `nbf`/`iat` only; `exp` is exact so an expired token is refused


class InvalidToken(GrokemuError):
    """A token that is malformed, not signed by our key, not yet valid, or expired."""

    status = 401
    oci_code = "UNAUTHORIZED"

    def __init__(self, message: str, *, reason: str = "invalid_token"):
        super().__init__(message)
        self.reason = reason
        self.detail = None
        self.headers: dict[str, str] = {}

    def with_headers(self, headers: dict[str, str]) -> InvalidToken:
        self.headers = dict(headers)
        return self


class AuthRequired(InvalidToken):
    """No token on a request that needs one."""


class InsufficientScope(InvalidToken):
    """A valid token that does not grant this action on this repository. 403, as RFC 6750 §3.1 says for
    `insufficient_scope`, with the challenge naming the scope needed: oras-py fetches a new token on a 403 and
    retries (it reuses one token across repositories), docker just reports `denied: <message>`."""

    status = 403
    oci_code = "DENIED"


class BadCredentials(GrokemuError):
    """The token endpoint got Basic credentials whose password is not a dev key (docker login prints the message:
    `unauthorized: bad credentials`)."""

    status = 401
    oci_code = "UNAUTHORIZED"
    detail = None
    headers: dict[str, str] = {}


class TokenService:
    def __init__(self, keys_dir: Path, clock: Clock):
        self._dir = Path(keys_dir)
        self._clock = clock
        self._private = self._load_or_create_key()
        self._public = self._private.public_key()
        self.kid = _thumbprint(self._public)

    # -- keys -------------------------------------------------------------------------------------------------------

    def _load_or_create_key(self) -> rsa.RSAPrivateKey:
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self._dir / KEY_FILE
        created = None  # the key this process wrote, used as it is (loading checks it again: ~30 ms)
        if not path.exists():
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
            # Write a 0600 temp file and hard-link it into place: two processes starting on one data dir at once
            # both end up using whichever key won the link, and no reader ever sees a half-written key.
            fd, tmp = tempfile.mkstemp(dir=self._dir, prefix=".key-")
            try:
                os.fchmod(fd, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(pem)
                    f.flush()
                    os.fsync(f.fileno())
                try:
                    os.link(tmp, path)
                    created = key
                except FileExistsError:
                    pass
            finally:
                os.unlink(tmp)
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        if created is not None:
            return created
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(loaded, rsa.RSAPrivateKey):
            raise GrokemuError(f"{path} does not hold an RSA private key")
        return loaded

    def jwks(self) -> dict[str, Any]:
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self._public, as_dict=True)
        jwk.update({"kid": self.kid, "use": "sig", "alg": "RS256"})
        return {"keys": [jwk]}

    # -- tokens -----------------------------------------------------------------------------------------------------

    def issue(self, subject: str, access: list[dict], ttl: int = TOKEN_TTL, audience: str | None = None) -> str:
        now = int(self._clock.now())
        claims: dict[str, Any] = {
            "iss": ISSUER, "sub": subject or "", "iat": now, "nbf": now, "exp": now + int(ttl),
            "jti": secrets.token_hex(12), "lim": "docker", "access": access,
        }
        if audience:
            claims["aud"] = audience
        return jwt.encode(claims, self._private, algorithm="RS256", headers={"kid": self.kid})

    def verify(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
            if header.get("kid") not in (None, self.kid):
                raise InvalidToken("token signed by an unknown key")
            claims = jwt.decode(token, self._public, algorithms=["RS256"], issuer=ISSUER,
                                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                                         "verify_aud": False, "require": ["exp", "iat", "iss"]})
        except jwt.PyJWTError as e:
            raise InvalidToken(f"invalid token: {e}") from None
        now = self._clock.now()
        if now >= float(claims["exp"]):
            raise InvalidToken("token expired")
        if now + _CLOCK_SKEW < float(claims.get("nbf", claims["iat"])):
            raise InvalidToken("token not yet valid")
        if claims.get("lim") != "docker":
            raise InvalidToken("token is not a registry token")
        return claims

    def token_response(self, subject: str, access: list[dict], audience: str | None = None) -> dict[str, Any]:
        """The JSON body of the token endpoint. No `refresh_token`: docker would then drop the key and refresh by
        POST with no Basic auth (docs/registry.md trap T10)."""
        token = self.issue(subject, access, audience=audience)
        issued = datetime.fromtimestamp(int(self._clock.now()), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"token": token, "access_token": token, "expires_in": TOKEN_TTL, "issued_at": issued}

    def authorize(self, token: str | None, *, realm: str, service: str, repo: str | None = None,
                  action: str | None = None) -> dict[str, Any] | None:
        """The registry's access rule, as Datagrok's proxy applies it: `pull` (GET/HEAD) needs no token; `None`
        (the `GET /v2/` ping) needs any valid token, so docker discovers the realm and `docker login` really checks
        the key (trap T8); `push`/`delete` need a token granting that action on `repo`. A token that is present
        must be valid even on reads, so a client with an expired token is told to fetch a new one. Failures carry
        the `WWW-Authenticate: Bearer realm=...` challenge (trap T9: absolute realm)."""

        def challenge(error: str | None = None) -> dict[str, str]:
            parts = [f'realm="{realm}"', f'service="{service}"']
            if repo and action:
                parts.append(f'scope="repository:{repo}:{"pull,push" if action == "push" else action}"')
            if error:
                parts.append(f'error="{error}"')
            return {"WWW-Authenticate": "Bearer " + ",".join(parts)}

        if not token:
            if action == "pull":
                return None
            what = f"{action} on repository {repo}" if repo and action else "this registry"
            raise AuthRequired(f"authentication required: {what} needs a token; run `docker login` with a dev key")\
                .with_headers(challenge())
        try:
            claims = self.verify(token)
        except InvalidToken as e:
            raise e.with_headers(challenge("invalid_token")) from None
        if action in (None, "pull") or (repo and self.allows(claims, "repository", repo, action)):
            return claims
        raise InsufficientScope(f"requested access to the resource is denied: the token does not grant {action} on "
                                f"repository {repo} (docker login with a dev key)",
                                reason="insufficient_scope").with_headers(challenge("insufficient_scope"))

    # -- scopes -----------------------------------------------------------------------------------------------------

    @staticmethod
    def grant(scopes: Iterable[str], authenticated: bool, name_ok=lambda _name: True) -> list[dict]:
        """The `access` claim for requested scopes. Anyone may pull (Datagrok's proxy lets GET/HEAD through);
        only a dev-key holder gets push/delete. `registry:catalog:*` is granted to authenticated callers."""
        granted: dict[tuple[str, str], list[str]] = {}
        for scope in parse_scopes(scopes):
            rtype, name, actions = scope["type"], scope["name"], scope["actions"]
            if rtype == "repository":
                if not name_ok(name):
                    continue
                allowed = [a for a in actions if a in KNOWN_ACTIONS and (authenticated or a == "pull")]
            elif rtype == "registry" and name == "catalog":
                allowed = [a for a in actions if a == "*"] if authenticated else []
            else:
                allowed = []
            if allowed:
                have = granted.setdefault((rtype, name), [])
                have.extend(a for a in allowed if a not in have)
        return [{"type": t, "name": n, "actions": a} for (t, n), a in granted.items()]

    @staticmethod
    def allows(claims: dict[str, Any], rtype: str, name: str, action: str) -> bool:
        for entry in claims.get("access") or []:
            if entry.get("type") == rtype and entry.get("name") == name:
                actions = entry.get("actions") or []
                if action in actions or "*" in actions:
                    return True
        return False


def parse_scopes(scopes: Iterable[str]) -> list[dict]:
    """`repository:name:pull,push` (several per parameter, space-separated). Per scope.md the name may contain a
    `:` (a registry host with a port), so the type is split off the left and the actions off the right."""
    out = []
    for param in scopes:
        for scope in (param or "").split():
            rtype, sep, rest = scope.partition(":")
            name, sep2, actions = rest.rpartition(":")
            if not sep or not sep2 or not rtype or not name:
                continue
            rtype = rtype.split("(", 1)[0]  # `repository(plugin)` resource classes: the class does not matter here
            out.append({"type": rtype, "name": name, "actions": [a for a in actions.split(",") if a]})
    return out


def _thumbprint(public_key) -> str:
    """RFC 7638 JWK thumbprint: a stable `kid` for the key."""
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public_key))
    canonical = json.dumps({"e": jwk["e"], "kty": "RSA", "n": jwk["n"]}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()
