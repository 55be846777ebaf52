from __future__ import annotations

from typing import Any

import pytest
from argon2 import PasswordHasher

from serve_apps import passwords
from serve_apps.passwords import (
    MAX_LENGTH, MIN_LENGTH, check_password_policy, hash_password, needs_rehash, verify_password)
from storage.errors import InvalidRequest

GOOD = "correct horse battery"


@pytest.fixture(scope="module")
def stored() -> str:
    return hash_password(GOOD)


def test_a_hash_is_argon2id_salted_and_verifies(stored: str) -> None:
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert GOOD not in stored
    assert verify_password(stored, GOOD)
    assert not verify_password(stored, GOOD + "!")
    assert not verify_password(stored, "correct horse battery ".upper())


def test_the_same_password_hashes_differently_each_time(stored: str) -> None:
    again = hash_password(GOOD)
    assert again != stored and verify_password(again, GOOD)


@pytest.mark.parametrize(("plain", "rule"), [
    ("", "min_length"),
    ("x" * (MIN_LENGTH - 1), "min_length"),
    ("x" * (MAX_LENGTH + 1), "max_length"),
    (None, "type"),
    (123456789012345, "type"),
])
def test_the_policy_refuses_and_names_the_rule(plain: Any, rule: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        hash_password(plain)
    assert caught.value.details["rule"] == rule
    if isinstance(plain, str) and plain:
        assert plain not in caught.value.message


STRONG_SHORTEST = "q7#Vm2!zLp9w"
assert len(STRONG_SHORTEST) == MIN_LENGTH


@pytest.mark.parametrize("plain", [STRONG_SHORTEST, (GOOD + " ") * (MAX_LENGTH // 22)
                                   + "x" * (MAX_LENGTH % 22)])
def test_the_policy_accepts_strong_passwords_at_its_length_bounds(plain: str) -> None:
    assert len(plain) in (MIN_LENGTH, MAX_LENGTH)
    assert check_password_policy(plain) == plain


@pytest.mark.parametrize("plain", ["aaaaaaaaaaaa", "password1234", "qwertyuiop12",
                                   "x" * MAX_LENGTH])
def test_a_long_enough_but_guessable_password_is_refused_with_advice(plain: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_password_policy(plain)
    details = caught.value.details
    assert details["field"] == "password" and details["rule"] == "strength"
    assert details["score"] < details["min_score"] == 3
    assert caught.value.message.startswith("password is too easy to guess")
    assert details["warning"] or details["suggestions"]  # zxcvbn's own feedback is passed on


def test_the_username_and_tenant_count_as_guessable_words() -> None:
    plain = "jdoe@globexcorp"
    assert check_password_policy(plain) == plain  # strong for someone else
    with pytest.raises(InvalidRequest) as caught:
        check_password_policy(plain, user_inputs=("jdoe", "globexcorp"))
    assert caught.value.details["rule"] == "strength"


def test_passwords_are_compared_after_unicode_normalisation() -> None:
    fullwidth = "ｃｏｒｒｅｃｔ ｈｏｒｓｅ ｂａｔｔｅｒｙ"
    assert check_password_policy(fullwidth) == GOOD


class SpyHasher:
    def __init__(self, real: PasswordHasher) -> None:
        self.real = real
        self.verified: list[str] = []

    def hash(self, plain: str) -> str:
        return self.real.hash(plain)

    def verify(self, password_hash: str, plain: str) -> bool:
        self.verified.append(password_hash)
        return self.real.verify(password_hash, plain)


def test_an_unknown_user_costs_one_full_verification(monkeypatch: pytest.MonkeyPatch) -> None:
    spy = SpyHasher(passwords._HASHER)
    monkeypatch.setattr(passwords, "_HASHER", spy)
    for plain in (GOOD, "short", "x" * (MAX_LENGTH + 5)):
        assert verify_password(None, plain) is False
    assert len(spy.verified) == 3
    assert all(h.startswith("$argon2id$v=19$m=65536,t=3,p=4$") for h in spy.verified)


def test_a_password_outside_the_policy_costs_a_verification_and_fails(
        stored: str, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = SpyHasher(passwords._HASHER)
    monkeypatch.setattr(passwords, "_HASHER", spy)
    assert verify_password(stored, "short") is False
    assert len(spy.verified) == 1


@pytest.mark.parametrize("bad_hash", ["", "not a hash", "$argon2id$v=19$m=65536,t=3,p=4$broken"])
def test_a_malformed_stored_hash_verifies_as_false(bad_hash: str) -> None:
    assert verify_password(bad_hash, GOOD) is False


def test_needs_rehash_flags_weaker_parameters_and_garbage(stored: str) -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(GOOD)
    assert not needs_rehash(stored)
    assert needs_rehash(weak) and verify_password(weak, GOOD)
    assert needs_rehash("not a hash")
