"""API keys for programs: `ymk_<key_id>_<secret>`, shown once, stored only as a hash.

`key_id` is the 32-hex-digit id of the key's storage row, so a presented key is found with one
indexed lookup; `secret` is `secrets.token_urlsafe(32)` (32 random bytes, 43 characters).
Storage keeps `secret_hash(secret)`, never the plaintext, and the plaintext is returned to its
owner exactly once, by `new_api_key`.

The hash is plain SHA-256, not argon2: a slow hash protects guessable human passwords, whereas a
256-bit random secret cannot be brute-forced whatever the hash's speed, and a fast hash keeps
every API request cheap. Comparison is constant-time (`hmac.compare_digest`).

Errors are `Unauthenticated` with a message that never contains the key: "malformed API key",
"API key revoked", "API key expired". The caller answers the same way for an unknown `key_id`
and a wrong secret, so a caller cannot learn which key ids exist.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime
from typing import Final

from serve_apps.errors import Unauthenticated
from storage.messages import as_utc

PREFIX: Final = "ymk_"
SECRET_BYTES: Final = 32
MAX_KEY_LENGTH: Final = 256

_KEY_ID = re.compile(r"[0-9a-f]{32}")
_API_KEY = re.compile(r"ymk_(?P<key_id>[0-9a-f]{32})_(?P<secret>[A-Za-z0-9_-]{43,})")


def new_api_key(key_id: str) -> tuple[str, str]:
    """A new key for the row `key_id`: `(plaintext, secret_hash)`. Show the plaintext once only."""
    if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
        raise ValueError("key_id must be 32 lowercase hexadecimal digits")
    secret, hashed = new_key_secret()
    return key_text(key_id, secret), hashed


def new_key_secret() -> tuple[str, str]:
    """`(secret, secret_hash)` for a key whose id storage picks when the hash is stored; the
    plaintext to show once is then `key_text(key_id, secret)`."""
    secret = secrets.token_urlsafe(SECRET_BYTES)
    return secret, secret_hash(secret)


def key_text(key_id: str, secret: str) -> str:
    """The plaintext of the key `key_id` with `secret`."""
    if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
        raise ValueError("key_id must be 32 lowercase hexadecimal digits")
    return f"{PREFIX}{key_id}_{secret}"


def parse_api_key(text: str) -> tuple[str, str]:
    """`(key_id, secret)` of a presented key; `Unauthenticated("malformed API key")` otherwise."""
    if not isinstance(text, str) or len(text) > MAX_KEY_LENGTH:
        raise Unauthenticated("malformed API key")
    match = _API_KEY.fullmatch(text)
    if match is None:
        raise Unauthenticated("malformed API key")
    return match["key_id"], match["secret"]


def secret_hash(secret: str) -> str:
    """The hex SHA-256 of `secret`: what storage keeps instead of the secret (64 characters)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(stored_hash: str, secret: str) -> bool:
    """Whether `secret` hashes to `stored_hash`, compared in constant time."""
    return hmac.compare_digest(stored_hash.encode(), secret_hash(secret).encode())


def check_key_usable(record_expires_at: datetime | None, record_revoked_at: datetime | None,
                     now: datetime) -> None:
    """Nothing if the key may be used at `now`; `Unauthenticated` if it is revoked or expired.

    A revocation wins over an expiry. Naive datetimes are read as UTC (SQLite keeps no offset).
    A key expires at `record_expires_at` exactly; `None` means never.
    """
    if record_revoked_at is not None:
        raise Unauthenticated("API key revoked")
    if record_expires_at is not None and as_utc(now) >= as_utc(record_expires_at):
        raise Unauthenticated("API key expired")


