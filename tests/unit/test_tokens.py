"""TokenService: the signing key on disk, RS256 JWTs with Datagrok's claims, expiry by the injected clock, scopes."""
from __future__ import annotations

import json
import stat

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from grokemu.domain.clock import ManualClock
from grokemu.services.tokens import (KEY_FILE, AuthRequired, InsufficientScope, InvalidToken, TokenService,
                                     parse_scopes)

PUSH_A = [{"type": "repository", "name": "team/a", "actions": ["pull", "push"]}]


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def tokens(tmp_path, clock):
    return TokenService(tmp_path / "keys", clock)


def test_key_is_created_once_with_mode_0600(tmp_path, clock, tokens):
    path = tmp_path / "keys" / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = TokenService(tmp_path / "keys", clock)
    assert again.kid == tokens.kid
    assert again.verify(tokens.issue("admin", PUSH_A))["sub"] == "admin"  # a restart keeps tokens valid


def test_claims(tokens, clock):
    token = tokens.issue("admin", PUSH_A)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256" and header["kid"] == tokens.kid
    claims = tokens.verify(token)
    assert claims["lim"] == "docker" and claims["sub"] == "admin" and claims["access"] == PUSH_A
    assert claims["exp"] - claims["iat"] == 1800 and claims["iat"] == int(clock.now())


def test_expiry_follows_the_injected_clock(tokens, clock):
    token = tokens.issue("admin", PUSH_A)
    clock.advance(1799)
    tokens.verify(token)
    clock.advance(1)
    with pytest.raises(InvalidToken) as e:
        tokens.verify(token)
    assert e.value.status == 401 and "expired" in e.value.message


def test_foreign_and_tampered_tokens_are_refused(tokens, tmp_path, clock):
    other = TokenService(tmp_path / "other-keys", clock)
    with pytest.raises(InvalidToken):
        tokens.verify(other.issue("admin", PUSH_A))
    head, body, sig = tokens.issue("anon", []).split(".")
    claims = json.loads(jwt.utils.base64url_decode(body))
    claims["access"] = PUSH_A
    forged = f"{head}.{jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()}.{sig}"
    with pytest.raises(InvalidToken):
        tokens.verify(forged)
    unsigned = jwt.encode({"iss": "grokemu", "exp": 2e9, "iat": 1, "lim": "docker", "access": PUSH_A}, None,
                          algorithm="none")
    with pytest.raises(InvalidToken):
        tokens.verify(unsigned)
    with pytest.raises(InvalidToken):
        tokens.verify("not a token")


def test_jwks_verifies_issued_tokens(tokens):
    jwks = tokens.jwks()
    (key,) = jwks["keys"]
    assert key["kty"] == "RSA" and key["alg"] == "RS256" and key["kid"] == tokens.kid and "d" not in key
    public = jwt.PyJWK(key).key
    assert isinstance(public, rsa.RSAPublicKey)
    claims = jwt.decode(tokens.issue("admin", PUSH_A), public, algorithms=["RS256"], options={"verify_exp": False, "verify_iat": False, "verify_nbf": False})
    assert claims["lim"] == "docker"


def test_parse_scopes():
    assert parse_scopes(["repository:team/a:push,pull repository:localhost:5000/x:pull", "registry:catalog:*"]) == [
        {"type": "repository", "name": "team/a", "actions": ["push", "pull"]},
        {"type": "repository", "name": "localhost:5000/x", "actions": ["pull"]},  # scope.md: the name may hold a `:`
        {"type": "registry", "name": "catalog", "actions": ["*"]},
    ]
    assert parse_scopes(["garbage", "repository::pull", ""]) == []


def test_grant():
    scopes = ["repository:team/a:push,pull", "repository:Bad..Name:push", "registry:catalog:*",
              "repository:team/b:delete,frobnicate"]
    from grokemu.services.registry import valid_name
    anonymous = TokenService.grant(scopes, authenticated=False, name_ok=valid_name)
    assert anonymous == [{"type": "repository", "name": "team/a", "actions": ["pull"]}]
    user = TokenService.grant(scopes, authenticated=True, name_ok=valid_name)
    assert user == [{"type": "repository", "name": "team/a", "actions": ["push", "pull"]},
                    {"type": "registry", "name": "catalog", "actions": ["*"]},
                    {"type": "repository", "name": "team/b", "actions": ["delete"]}]
    assert TokenService.grant([], authenticated=True) == []  # docker login asks for no scope


def test_authorize(tokens, clock):
    kw = {"realm": "http://localhost:5000/token", "service": "localhost:5000"}
    assert tokens.authorize(None, repo="team/a", action="pull", **kw) is None  # anonymous reads
    with pytest.raises(AuthRequired) as e:
        tokens.authorize(None, **kw)  # the /v2/ ping needs a token (trap T8)
    assert e.value.headers["WWW-Authenticate"] == 'Bearer realm="http://localhost:5000/token",service="localhost:5000"'
    with pytest.raises(AuthRequired) as e:
        tokens.authorize(None, repo="team/a", action="push", **kw)
    assert 'scope="repository:team/a:pull,push"' in e.value.headers["WWW-Authenticate"]
    token = tokens.issue("admin", PUSH_A)
    assert tokens.authorize(token, repo="team/a", action="push", **kw)["sub"] == "admin"
    assert tokens.authorize(token, **kw)
    with pytest.raises(InsufficientScope) as e:
        tokens.authorize(token, repo="team/b", action="push", **kw)
    assert 'error="insufficient_scope"' in e.value.headers["WWW-Authenticate"]
    with pytest.raises(InsufficientScope):
        tokens.authorize(token, repo="team/a", action="delete", **kw)
    star = tokens.issue("admin", [{"type": "repository", "name": "team/a", "actions": ["*"]}])
    assert tokens.authorize(star, repo="team/a", action="delete", **kw)
    clock.advance(1800)
    with pytest.raises(InvalidToken) as e:
        tokens.authorize(token, repo="team/a", action="pull", **kw)  # a token that is sent must be valid
    assert 'error="invalid_token"' in e.value.headers["WWW-Authenticate"]
