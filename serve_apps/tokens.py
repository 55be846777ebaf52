"""Signed access and refresh tokens (JWT, HS256) for the HTTP API, and the rules for their secret.

Guarantees:
- Tokens are signed and verified with HS256 only: `alg: none`, HS384/HS512, RS*/ES* and every
  other algorithm named in a token's header are refused, whatever the token claims.
- Every token carries `exp`, `iat`, `iss`, `aud`, `sub`, `jti`, `typ` ("access" or "refresh"),
  `tenant` and `role`; a token without any one of them is refused. `aud` must equal the
  issuer's audience exactly (a list of audiences is refused).
- An access token is never accepted where a refresh token is expected, nor the reverse.
- Expiry and "issued in the future" are checked with `LEEWAY_S` seconds of tolerance, for
  clocks of different machines that disagree slightly; nothing else is relaxed.
- Every verification failure raises `Unauthenticated` with a specific message ("token expired",
  "token signature is invalid", "wrong audience", ...). No message contains the token.
- The signing secret is at least 32 bytes and not a known placeholder (`check_signing_secret`);
  a `TokenIssuer` cannot be built with a weak one. Its repr never shows the secret.

Refresh tokens are only as revocable as storage makes them: the caller records each refresh
token's `jti` and checks it on use (rotation); this module only proves a token was issued here.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import uuid
from datetime import datetime, timezone
from typing import Any, Final, Literal

import jwt
from jwt.exceptions import InvalidJTIError, InvalidSubjectError

from serve_apps.errors import Unauthenticated

ALGORITHM: Final = "HS256"
LEEWAY_S: Final = 10
MIN_SECRET_BYTES: Final = 32
MAX_TOKEN_LENGTH: Final = 8192
ACCESS: Final = "access"
REFRESH: Final = "refresh"
REQUIRED_CLAIMS: Final = ("exp", "iat", "iss", "aud", "sub", "jti", "typ", "tenant", "role")

TokenType = Literal["access", "refresh"]

# Lowercased, letters and digits only: "your-256-bit-secret" is "your256bitsecret".
_PLACEHOLDERS: Final = (
    "changeme", "changethis", "replaceme", "yoursecret", "your256bitsecret", "secretkey",
    "jwtsecret", "mysecret", "supersecret", "notasecret", "placeholder", "insertsecret",
    "example", "default", "password",
)

_FAILURES: Final[tuple[tuple[type[jwt.InvalidTokenError], str], ...]] = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.InvalidSignatureError, "token signature is invalid"),
    (jwt.InvalidAlgorithmError, "token algorithm is not allowed"),
    (jwt.InvalidAudienceError, "wrong audience"),
    (jwt.InvalidIssuerError, "wrong issuer"),
    (jwt.ImmatureSignatureError, "token is not yet valid"),
    (jwt.InvalidIssuedAtError, "token iat claim is invalid"),
    (InvalidSubjectError, "token sub claim is invalid"),
    (InvalidJTIError, "token jti claim is invalid"),
    (jwt.DecodeError, "malformed token"),
)


@dataclasses.dataclass(frozen=True)
class Claims:
    """What a verified token says: who (`subject`), in which tenant, with which role."""

    subject: str
    tenant: str
    role: str
    token_type: TokenType
    token_id: str
    issued_at: datetime
    expires_at: datetime


@dataclasses.dataclass(frozen=True)
class IssuedToken:
    """A freshly signed token and the claims it carries (record `claims.token_id` for refresh)."""

    token: str
    claims: Claims


def check_signing_secret(secret: bytes | str) -> bytes:
    """The secret as key bytes, or `ValueError` if it is too short or a well-known weak value.

    Refused: fewer than `MIN_SECRET_BYTES` bytes (UTF-8), one shorter string repeated ("aaaa...",
    "changemechangeme..."), fewer than 8 distinct characters, or anything containing a known
    placeholder ("changeme", "your-256-bit-secret", "secret-key", ...). The message never
    contains the secret.
    """
    key = secret.encode() if isinstance(secret, str) else bytes(secret)
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(
            f"signing secret must be at least {MIN_SECRET_BYTES} bytes, got {len(key)}")
    if len(set(key)) < 8 or _is_repetition(key):
        raise ValueError("signing secret is too repetitive; use generate_signing_secret()")
    letters = re.sub(rb"[^a-z0-9]", b"", key.lower()).decode("ascii")
    if any(marker in letters for marker in _PLACEHOLDERS):
        raise ValueError("signing secret looks like a placeholder; use generate_signing_secret()")
    return key


def generate_signing_secret() -> str:
    """A new random signing secret: 64 URL-safe characters (384 bits) from `secrets`."""
    return secrets.token_urlsafe(48)


class TokenIssuer:
    """Issues and verifies the API's tokens for one `issuer` and `audience`."""

    def __init__(self, secret: bytes | str, issuer: str, audience: str,
                 access_ttl_s: int = 900, refresh_ttl_s: int = 14 * 86400) -> None:
        self._key = check_signing_secret(secret)
        for name, value in (("issuer", issuer), ("audience", audience)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string")
        for name, ttl in (("access_ttl_s", access_ttl_s), ("refresh_ttl_s", refresh_ttl_s)):
            if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl <= 0:
                raise ValueError(f"{name} must be a positive whole number of seconds")
        self.issuer = issuer
        self.audience = audience
        self.access_ttl_s = access_ttl_s
        self.refresh_ttl_s = refresh_ttl_s

    def __repr__(self) -> str:
        return f"TokenIssuer(issuer={self.issuer!r}, audience={self.audience!r})"

    def issue_access(self, subject: str, tenant: str, role: str,
                     *, now: datetime | None = None) -> IssuedToken:
        """A signed access token valid for `access_ttl_s` from `now` (default: the current time)."""
        return self._issue(ACCESS, subject, tenant, role, now)

    def issue_refresh(self, subject: str, tenant: str, role: str,
                      *, now: datetime | None = None) -> IssuedToken:
        """A signed refresh token valid for `refresh_ttl_s`, with a fresh `jti` to record."""
        return self._issue(REFRESH, subject, tenant, role, now)

    def verify_access(self, token: str) -> Claims:
        """The claims of a valid access token; `Unauthenticated` saying why otherwise."""
        return self._verify(token, ACCESS)

    def verify_refresh(self, token: str) -> Claims:
        """The claims of a valid refresh token; `Unauthenticated` saying why otherwise."""
        return self._verify(token, REFRESH)

    def _issue(self, token_type: TokenType, subject: str, tenant: str, role: str,
               now: datetime | None) -> IssuedToken:
        for name, value in (("subject", subject), ("tenant", tenant), ("role", role)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string")
        issued = int((now or datetime.now(timezone.utc)).timestamp())
        ttl = self.access_ttl_s if token_type == ACCESS else self.refresh_ttl_s
        payload = {
            "iss": self.issuer, "aud": self.audience, "sub": subject, "jti": uuid.uuid4().hex,
            "iat": issued, "exp": issued + ttl, "typ": token_type, "tenant": tenant, "role": role,
        }
        token = jwt.encode(payload, self._key, algorithm=ALGORITHM)
        return IssuedToken(token=token, claims=_claims(payload))

    def _verify(self, token: str, expected: TokenType) -> Claims:
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
            raise Unauthenticated("malformed token")
        try:
            payload = jwt.decode(
                token, self._key, algorithms=[ALGORITHM], audience=self.audience,
                issuer=self.issuer, leeway=LEEWAY_S,
                options={"require": list(REQUIRED_CLAIMS), "strict_aud": True,
                         "enforce_minimum_key_length": True})
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(f"token is missing the {exc.claim} claim") from exc
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(_failure_message(exc)) from exc
        for name in ("tenant", "role", "typ"):
            if not isinstance(payload[name], str) or not payload[name]:
                raise Unauthenticated(f"token {name} claim is invalid")
        if payload["typ"] != expected:
            if payload["typ"] in (ACCESS, REFRESH):
                raise Unauthenticated(f"{payload['typ']} token used as {expected} token")
            raise Unauthenticated("token typ claim is invalid")
        return _claims(payload)


def _failure_message(exc: jwt.InvalidTokenError) -> str:
    for kind, message in _FAILURES:
        if isinstance(exc, kind):
            return message
    return "invalid token"


def _claims(payload: dict[str, Any]) -> Claims:
    return Claims(
        subject=payload["sub"], tenant=payload["tenant"], role=payload["role"],
        token_type=payload["typ"], token_id=payload["jti"],
        issued_at=datetime.fromtimestamp(int(payload["iat"]), timezone.utc),
        expires_at=datetime.fromtimestamp(int(payload["exp"]), timezone.utc))


def _is_repetition(key: bytes) -> bool:
    """Whether `key` is one shorter byte string repeated (a period dividing its length)."""
    return any(len(key) % period == 0 and key == key[:period] * (len(key) // period)
               for period in range(1, len(key) // 2 + 1))
