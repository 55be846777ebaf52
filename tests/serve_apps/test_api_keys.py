from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from serve_apps.api_keys import (
    check_key_usable, new_api_key, parse_api_key, secret_hash, secret_matches)
from serve_apps.errors import Unauthenticated

KEY_ID = uuid.uuid4().hex
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)


def test_a_new_key_round_trips() -> None:
    plaintext, stored_hash = new_api_key(KEY_ID)
    assert re.fullmatch(r"ymk_[0-9a-f]{32}_[A-Za-z0-9_-]{43,}", plaintext)
    key_id, secret = parse_api_key(plaintext)
    assert key_id == KEY_ID and len(secret) >= 43
    assert stored_hash == secret_hash(secret) and re.fullmatch(r"[0-9a-f]{64}", stored_hash)
    assert secret not in stored_hash
    assert secret_matches(stored_hash, secret)


def test_every_key_has_its_own_secret() -> None:
    assert len({new_api_key(KEY_ID)[0] for _ in range(50)}) == 50


def test_a_wrong_secret_does_not_match() -> None:
    plaintext, stored_hash = new_api_key(KEY_ID)
    _, secret = parse_api_key(plaintext)
    _, other = parse_api_key(new_api_key(KEY_ID)[0])
    assert not secret_matches(stored_hash, other)
    assert not secret_matches(stored_hash, secret[:-1])
    assert not secret_matches("not a hash", secret)


@pytest.mark.parametrize("key_id", ["", "abc", KEY_ID.upper(), KEY_ID + "0", "g" * 32, None])
def test_a_key_needs_a_storage_id(key_id: Any) -> None:
    with pytest.raises(ValueError):
        new_api_key(key_id)


GOOD_SECRET = "A" * 20 + "b-_" + "9" * 20


@pytest.mark.parametrize("text", [
    "", "ymk_", f"ymk_{KEY_ID}", f"ymk_{KEY_ID}_", f"ymx_{KEY_ID}_{GOOD_SECRET}",
    f"YMK_{KEY_ID}_{GOOD_SECRET}", f"ymk_{KEY_ID.upper()}_{GOOD_SECRET}",
    f"ymk_{KEY_ID[:-1]}_{GOOD_SECRET}", f"ymk_{KEY_ID}_{GOOD_SECRET[:42]}",
    f"ymk_{KEY_ID}_{GOOD_SECRET}!", f"ymk_{KEY_ID}_{GOOD_SECRET} ", f"ymk_{KEY_ID}-{GOOD_SECRET}",
    f"ymk_{KEY_ID}_{GOOD_SECRET * 6}", f"Bearer ymk_{KEY_ID}_{GOOD_SECRET}", None, 42,
])
def test_malformed_keys_are_refused_without_echoing_them(text: Any) -> None:
    with pytest.raises(Unauthenticated) as caught:
        parse_api_key(text)
    assert caught.value.message == "malformed API key" and caught.value.details == {}


def test_a_well_formed_key_parses() -> None:
    assert parse_api_key(f"ymk_{KEY_ID}_{GOOD_SECRET}") == (KEY_ID, GOOD_SECRET)


@pytest.mark.parametrize(("expires_at", "revoked_at"), [
    (None, None),
    (NOW + timedelta(seconds=1), None),
    (datetime(2030, 1, 2), None),  # naive: read as UTC
])
def test_a_live_key_is_usable(expires_at: datetime | None, revoked_at: datetime | None) -> None:
    check_key_usable(expires_at, revoked_at, NOW)


@pytest.mark.parametrize(("expires_at", "revoked_at", "message"), [
    (None, NOW - timedelta(days=1), "API key revoked"),
    (NOW + timedelta(days=1), NOW - timedelta(days=1), "API key revoked"),
    (NOW - timedelta(days=1), NOW - timedelta(days=2), "API key revoked"),
    (NOW - timedelta(seconds=1), None, "API key expired"),
    (NOW, None, "API key expired"),
    (datetime(2030, 1, 1, 11, 0), None, "API key expired"),  # naive: read as UTC
    (NOW.astimezone(timezone(timedelta(hours=5))), None, "API key expired"),
])
def test_a_revoked_or_expired_key_is_refused(expires_at: datetime | None,
                                             revoked_at: datetime | None, message: str) -> None:
    with pytest.raises(Unauthenticated) as caught:
        check_key_usable(expires_at, revoked_at, NOW)
    assert caught.value.message == message
