from __future__ import annotations

import base64
import json
import secrets
from datetime import datetime, timedelta, timezone
from typing import Any

import jwt
import pytest

from serve_apps.errors import Unauthenticated
from serve_apps.tokens import (
    LEEWAY_S, REQUIRED_CLAIMS, Claims, TokenIssuer, check_signing_secret,
    generate_signing_secret)

SECRET = generate_signing_secret()
ISSUER = "ymera-test"
AUDIENCE = "ymera-api"


@pytest.fixture
def issuer() -> TokenIssuer:
    return TokenIssuer(SECRET, ISSUER, AUDIENCE, access_ttl_s=900, refresh_ttl_s=3600)


def payload(**changes: Any) -> dict[str, Any]:
    now = int(datetime.now(timezone.utc).timestamp())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user:1", "jti": "a" * 32, "iat": now,
              "exp": now + 600, "typ": "access", "tenant": "acme", "role": "viewer"}
    claims.update(changes)
    return claims


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def refused(issuer: TokenIssuer, token: str, message: str, *, refresh: bool = False) -> None:
    verify = issuer.verify_refresh if refresh else issuer.verify_access
    with pytest.raises(Unauthenticated) as caught:
        verify(token)
    assert caught.value.message == message
    if len(token) > 3:
        assert token not in str(caught.value) and token not in repr(caught.value.args)


def test_an_access_token_round_trips(issuer: TokenIssuer) -> None:
    issued = issuer.issue_access("user:7", "acme", "operator")
    claims = issuer.verify_access(issued.token)
    assert claims == issued.claims
    assert (claims.subject, claims.tenant, claims.role, claims.token_type) == (
        "user:7", "acme", "operator", "access")
    assert claims.expires_at - claims.issued_at == timedelta(seconds=900)
    assert len(claims.token_id) == 32
    assert jwt.get_unverified_header(issued.token)["alg"] == "HS256"


def test_a_refresh_token_round_trips_with_a_fresh_id(issuer: TokenIssuer) -> None:
    first = issuer.issue_refresh("user:7", "acme", "viewer")
    second = issuer.issue_refresh("user:7", "acme", "viewer")
    claims = issuer.verify_refresh(first.token)
    assert claims.token_type == "refresh" and first.claims.token_id != second.claims.token_id
    assert claims.expires_at - claims.issued_at == timedelta(seconds=3600)


def test_tokens_of_one_type_are_refused_as_the_other(issuer: TokenIssuer) -> None:
    access = issuer.issue_access("user:1", "acme", "viewer").token
    refresh = issuer.issue_refresh("user:1", "acme", "viewer").token
    refused(issuer, refresh, "refresh token used as access token")
    refused(issuer, access, "access token used as refresh token", refresh=True)


def test_an_unknown_token_type_is_refused(issuer: TokenIssuer) -> None:
    token = jwt.encode(payload(typ="id"), SECRET, algorithm="HS256")
    refused(issuer, token, "token typ claim is invalid")


def test_a_tampered_token_is_refused(issuer: TokenIssuer) -> None:
    header, body, signature = issuer.issue_access("user:1", "acme", "viewer").token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    forged = f"{header}.{b64({**claims, 'role': 'admin'})}.{signature}"
    refused(issuer, forged, "token signature is invalid")


def test_a_token_signed_with_another_secret_is_refused(issuer: TokenIssuer) -> None:
    token = jwt.encode(payload(), generate_signing_secret(), algorithm="HS256")
    refused(issuer, token, "token signature is invalid")


def test_an_expired_token_is_refused(issuer: TokenIssuer) -> None:
    long_ago = datetime.now(timezone.utc) - timedelta(seconds=900 + LEEWAY_S + 5)
    refused(issuer, issuer.issue_access("user:1", "acme", "viewer", now=long_ago).token,
            "token expired")


def test_clock_skew_within_the_leeway_is_tolerated(issuer: TokenIssuer) -> None:
    now = datetime.now(timezone.utc)
    just_expired = issuer.issue_access("user:1", "acme", "viewer",
                                       now=now - timedelta(seconds=900 + LEEWAY_S - 5))
    from_a_fast_clock = issuer.issue_access("user:1", "acme", "viewer",
                                            now=now + timedelta(seconds=LEEWAY_S - 5))
    issuer.verify_access(just_expired.token)
    issuer.verify_access(from_a_fast_clock.token)


def test_a_token_issued_in_the_future_is_refused(issuer: TokenIssuer) -> None:
    later = datetime.now(timezone.utc) + timedelta(seconds=LEEWAY_S + 60)
    refused(issuer, issuer.issue_access("user:1", "acme", "viewer", now=later).token,
            "token is not yet valid")


def test_the_wrong_audience_is_refused(issuer: TokenIssuer) -> None:
    other = TokenIssuer(SECRET, ISSUER, "another-api")
    refused(issuer, other.issue_access("user:1", "acme", "viewer").token, "wrong audience")
    listed = jwt.encode(payload(aud=[AUDIENCE]), SECRET, algorithm="HS256")
    refused(issuer, listed, "wrong audience")


def test_the_wrong_issuer_is_refused(issuer: TokenIssuer) -> None:
    other = TokenIssuer(SECRET, "someone-else", AUDIENCE)
    refused(issuer, other.issue_access("user:1", "acme", "viewer").token, "wrong issuer")


def test_alg_none_is_refused(issuer: TokenIssuer) -> None:
    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(payload())}."
    refused(issuer, unsigned, "token algorithm is not allowed")


@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
def test_other_hmac_algorithms_are_refused(issuer: TokenIssuer, algorithm: str) -> None:
    token = jwt.encode(payload(), SECRET, algorithm=algorithm)
    refused(issuer, token, "token algorithm is not allowed")


@pytest.mark.parametrize("claim", REQUIRED_CLAIMS)
def test_a_token_missing_a_claim_is_refused(issuer: TokenIssuer, claim: str) -> None:
    claims = payload()
    del claims[claim]
    refused(issuer, jwt.encode(claims, SECRET, algorithm="HS256"),
            f"token is missing the {claim} claim")


@pytest.mark.parametrize(("claim", "value"), [("tenant", ""), ("role", 3), ("sub", 7)])
def test_a_token_with_a_mistyped_claim_is_refused(issuer: TokenIssuer, claim: str,
                                                  value: Any) -> None:
    token = jwt.encode(payload(**{claim: value}), SECRET, algorithm="HS256")
    refused(issuer, token, f"token {claim} claim is invalid")


@pytest.mark.parametrize("token", ["", "abc", "a.b", "a.b.c", "x" * 9000])
def test_garbage_is_refused_as_malformed(issuer: TokenIssuer, token: str) -> None:
    refused(issuer, token, "malformed token")


@pytest.mark.parametrize("secret", [
    "changeme", "secret", "your-256-bit-secret", "a" * 64, b"\x00" * 32,
    "changeme" * 4, "your-256-bit-secret-your-256-bit-secret", "12345678" * 8,
    "0123456789abcdef" * 2, "ab" * 32, "my-super-secret-signing-key-2024!",
    "please-CHANGE-ME-in-production-0123456789", secrets.token_urlsafe(16),
])
def test_weak_secrets_are_refused(secret: bytes | str) -> None:
    with pytest.raises(ValueError) as caught:
        check_signing_secret(secret)
    text = secret if isinstance(secret, str) else secret.decode("latin-1")
    if len(text) >= 8:
        assert text not in str(caught.value)
    with pytest.raises(ValueError):
        TokenIssuer(secret, ISSUER, AUDIENCE)


def test_generated_and_random_secrets_are_accepted() -> None:
    generated = generate_signing_secret()
    assert len(generated) == 64 and generated != generate_signing_secret()
    assert check_signing_secret(generated) == generated.encode()
    raw = secrets.token_bytes(32)
    assert check_signing_secret(raw) == raw


@pytest.mark.parametrize("kwargs", [
    {"issuer": ""}, {"audience": ""}, {"access_ttl_s": 0}, {"refresh_ttl_s": -1},
    {"access_ttl_s": 1.5},
])
def test_the_issuer_refuses_bad_settings(kwargs: dict[str, Any]) -> None:
    settings = {"issuer": ISSUER, "audience": AUDIENCE, **kwargs}
    with pytest.raises(ValueError):
        TokenIssuer(SECRET, **settings)


def test_the_issuer_never_shows_its_secret(issuer: TokenIssuer) -> None:
    assert SECRET not in repr(issuer) and SECRET not in str(issuer)


def test_claims_are_frozen(issuer: TokenIssuer) -> None:
    claims = issuer.issue_access("user:1", "acme", "viewer").claims
    assert isinstance(claims, Claims)
    with pytest.raises(AttributeError):
        claims.role = "admin"  # type: ignore[misc]
