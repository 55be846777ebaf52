"""Password hashing for the HTTP API's users: argon2id, a strength policy, no user enumeration.

Guarantees:
- Hashes are argon2id with the RFC 9106 "low memory" profile (64 MiB, 3 passes, 4 lanes,
  16-byte salt); the parameters live in the hash, so older hashes keep verifying after the
  profile changes, and `needs_rehash` tells the login path when to upgrade one.
- A new password is refused with `InvalidRequest` (field `password`) naming the rule it
  breaks: at least `MIN_LENGTH` and at most `MAX_LENGTH` characters, and a zxcvbn strength
  score of at least `MIN_STRENGTH` (of 0-4), estimated with the user's own inputs (username,
  tenant) as known words, so `aaaaaaaaaaaa` or `acme-admin-2026` for admin of acme is refused
  with zxcvbn's feedback. As NIST SP 800-63B suggests there are no composition rules.
  Passwords are NFKC-normalised before hashing and verifying, so the same password typed on
  different keyboards or input methods verifies.
- `verify_password(None, plain)` (no such user) does the same argon2 work against a dummy hash
  and returns False, so response time does not reveal whether a username exists.
- Nothing here logs or echoes a password or a hash.
"""

from __future__ import annotations

import functools
import secrets
import unicodedata
from collections.abc import Iterable

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from argon2.profiles import RFC_9106_LOW_MEMORY

from storage.errors import InvalidRequest

MIN_LENGTH = 12
MAX_LENGTH = 1024
MIN_STRENGTH = 3
ESTIMATED_PREFIX = 72  # zxcvbn's own bound; a prefix's strength is a lower bound of the whole

_HASHER = PasswordHasher.from_parameters(RFC_9106_LOW_MEMORY)


def check_password_policy(plain: object, user_inputs: Iterable[str] = ()) -> str:
    """`plain` normalised (NFKC) if it meets the policy; `InvalidRequest` naming the field and
    the rule if not. `user_inputs` (the username, the tenant) count as easily guessed words."""
    if not isinstance(plain, str):
        raise InvalidRequest("password must be a string", {"field": "password", "rule": "type"})
    normalised = unicodedata.normalize("NFKC", plain)
    if len(normalised) < MIN_LENGTH:
        raise InvalidRequest(f"password must be at least {MIN_LENGTH} characters",
                             {"field": "password", "rule": "min_length",
                              "min_length": MIN_LENGTH})
    if len(normalised) > MAX_LENGTH:
        raise InvalidRequest(f"password must be at most {MAX_LENGTH} characters",
                             {"field": "password", "rule": "max_length",
                              "max_length": MAX_LENGTH})
    _check_strength(normalised, user_inputs)
    return normalised


def _check_strength(normalised: str, user_inputs: Iterable[str]) -> None:
    from zxcvbn import zxcvbn  # its dictionaries load on first use, in processes that need them

    inputs = [word for value in user_inputs if isinstance(value, str) and value
              for word in (value, *value.replace("@", " ").replace(".", " ").split())]
    estimate = zxcvbn(normalised[:ESTIMATED_PREFIX], user_inputs=inputs)
    if estimate["score"] >= MIN_STRENGTH:
        return
    feedback = estimate["feedback"]
    advice = [text for text in (feedback.get("warning"), *feedback.get("suggestions", ()))
              if text]
    raise InvalidRequest(
        f"password is too easy to guess (strength {estimate['score']} of 4, at least "
        f"{MIN_STRENGTH} needed)" + (": " + " ".join(advice) if advice else ""),
        {"field": "password", "rule": "strength", "score": estimate["score"],
         "min_score": MIN_STRENGTH, "warning": feedback.get("warning") or None,
         "suggestions": list(feedback.get("suggestions", ()))})


def hash_password(plain: str, user_inputs: Iterable[str] = ()) -> str:
    """An argon2id hash of `plain` (a fresh random salt each call), after the policy check
    (`user_inputs`: the username and tenant the password is for)."""
    return _HASHER.hash(check_password_policy(plain, user_inputs))


def verify_password(password_hash: str | None, plain: str) -> bool:
    """Whether `plain` matches `password_hash`; False (never an exception) for any mismatch.

    `password_hash=None` means "no such user": the same work is done against a dummy hash, so
    an unknown user and a wrong password cost the same time. A malformed stored hash and a
    password outside the policy's length bounds also verify as False.
    """
    candidate = unicodedata.normalize("NFKC", plain) if isinstance(plain, str) else ""
    if password_hash is None or not MIN_LENGTH <= len(candidate) <= MAX_LENGTH:
        _burn(candidate[:MAX_LENGTH])
        return False
    try:
        return _HASHER.verify(password_hash, candidate)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """Whether `password_hash` was made with other parameters than today's: rehash on next login."""
    try:
        return _HASHER.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True


def _burn(candidate: str) -> None:
    try:
        _HASHER.verify(_dummy_hash(), candidate)
    except VerificationError:
        pass


@functools.cache
def _dummy_hash() -> str:
    """A hash of a random password nobody knows, made on first use with today's parameters.

    The one call that makes it costs a second hash; every later unknown-user check costs one.
    """
    return _HASHER.hash(secrets.token_urlsafe(32))
