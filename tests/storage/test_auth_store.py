"""Users, API keys, refresh tokens and the audit log: what is kept, who sees it, what is refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta, timezone

import pytest

from storage.auth_store import ROLES, AuthStore
from storage.errors import Conflict, InvalidRequest, NotFound
from storage.messages import utcnow


@pytest.fixture
async def auth(database_url: str) -> AsyncIterator[AuthStore]:
    async with await AuthStore.open(database_url) as store:
        yield store


# Users

async def test_a_created_user_is_found_by_name_and_by_id(auth: AuthStore) -> None:
    created = await auth.create_user("acme", "alice", "argon2$hash", "operator")

    assert await auth.user_by_name("acme", "alice") == created
    assert await auth.user(created.id) == created
    assert created.tenant == "acme" and created.role == "operator" and not created.disabled
    assert created.password_hash == "argon2$hash" and "argon2$hash" not in repr(created)
    assert len(created.id) == 32 and created.created_at.tzinfo == timezone.utc
    assert await auth.user_by_name("acme", "bob") is None
    assert await auth.user_by_name("globex", "alice") is None
    with pytest.raises(NotFound):
        await auth.user("0" * 32)


async def test_a_username_taken_in_the_tenant_is_refused_and_nothing_changes(
    auth: AuthStore,
) -> None:
    first = await auth.create_user("acme", "alice", "hash-1", "admin")

    with pytest.raises(Conflict) as caught:
        await auth.create_user("acme", "alice", "hash-2", "viewer")

    assert caught.value.details["field"] == "username"
    assert await auth.user_by_name("acme", "alice") == first
    assert await auth.list_users("acme") == [first]


async def test_another_tenant_may_hold_the_same_username(auth: AuthStore) -> None:
    first = await auth.create_user("acme", "alice", "hash-1", "admin")

    second = await auth.create_user("globex", "alice", "hash-2", "viewer")

    assert await auth.user_by_name("acme", "alice") == first
    assert await auth.user_by_name("globex", "alice") == second
    assert second.id != first.id


async def test_role_changes_and_disabling_are_kept(auth: AuthStore) -> None:
    user = await auth.create_user("acme", "alice", "hash", "viewer")

    promoted = await auth.set_role(user.id, "admin")
    disabled = await auth.set_disabled(user.id, True)

    assert promoted.role == "admin" and promoted.updated_at >= user.updated_at
    assert disabled.disabled and disabled.role == "admin"
    assert await auth.user(user.id) == disabled
    assert (await auth.set_disabled(user.id, False)).disabled is False
    with pytest.raises(NotFound):
        await auth.set_role("0" * 32, "admin")


async def test_users_are_listed_per_tenant(auth: AuthStore) -> None:
    bob = await auth.create_user("acme", "bob", "hash", "viewer")
    alice = await auth.create_user("acme", "alice", "hash", "admin")
    await auth.create_user("globex", "carol", "hash", "admin")

    assert await auth.list_users("acme") == [alice, bob]


@pytest.mark.parametrize(
    ("username", "role"),
    [("alice", "root"), ("alice", "Admin"), ("a" * 65, "viewer"), ("", "viewer")],
)
async def test_bad_user_input_is_refused_and_nothing_is_stored(
    auth: AuthStore, username: str, role: str,
) -> None:
    with pytest.raises(InvalidRequest):
        await auth.create_user("acme", username, "hash", role)

    assert await auth.list_users("acme") == []


async def test_a_role_outside_the_known_ones_is_never_set(auth: AuthStore) -> None:
    user = await auth.create_user("acme", "alice", "hash", "viewer")

    with pytest.raises(InvalidRequest):
        await auth.set_role(user.id, "superuser")

    assert (await auth.user(user.id)).role == "viewer"
    assert set(ROLES) == {"platform_admin", "admin", "operator", "submitter", "viewer"}


# API keys

async def test_an_api_key_is_stored_with_its_expiry_and_can_be_read_back(
    auth: AuthStore,
) -> None:
    expires = utcnow() + timedelta(days=30)
    key = await auth.create_api_key("acme", "ci", "submitter", "sha256$secret",
                                    created_by="u" * 32, expires_at=expires)

    stored = await auth.api_key(key.id)

    assert stored == key and len(key.id) == 32 and int(key.id, 16) >= 0
    assert stored.expires_at == expires and stored.expires_at.tzinfo == timezone.utc
    assert stored.usable() and not stored.usable(expires + timedelta(seconds=1))
    assert "sha256$secret" not in repr(stored)
    assert await auth.list_api_keys("acme") == [key]


async def test_an_expiry_in_another_timezone_is_kept_as_the_same_instant(
    auth: AuthStore,
) -> None:
    expires = (utcnow() + timedelta(hours=1)).astimezone(timezone(timedelta(hours=5)))

    key = await auth.create_api_key("acme", "ci", "viewer", "hash", expires_at=expires)

    assert (await auth.api_key(key.id)).expires_at == expires
    with pytest.raises(InvalidRequest):
        await auth.create_api_key("acme", "naive", "viewer", "hash",
                                  expires_at=expires.replace(tzinfo=None))
    assert [k.name for k in await auth.list_api_keys("acme")] == ["ci"]


async def test_revoking_a_key_stops_it_and_the_first_revocation_time_stands(
    auth: AuthStore,
) -> None:
    key = await auth.create_api_key("acme", "ci", "submitter", "hash")

    revoked = await auth.revoke_api_key(key.id, "acme")
    again = await auth.revoke_api_key(key.id, "acme")

    assert revoked.revoked_at is not None and not revoked.usable()
    assert again.revoked_at == revoked.revoked_at
    assert await auth.api_key(key.id) == revoked


async def test_another_tenants_key_looks_like_it_does_not_exist(auth: AuthStore) -> None:
    key = await auth.create_api_key("acme", "ci", "admin", "hash")

    with pytest.raises(NotFound):
        await auth.revoke_api_key(key.id, "globex")
    with pytest.raises(NotFound):
        await auth.revoke_api_key("f" * 32, "globex")

    assert await auth.api_key(key.id, tenant="globex") is None
    assert await auth.list_api_keys("globex") == []
    assert (await auth.api_key(key.id, tenant="acme")).usable()


async def test_using_a_key_records_when(auth: AuthStore) -> None:
    key = await auth.create_api_key("acme", "ci", "viewer", "hash")
    before = utcnow()

    await auth.touch_api_key(key.id)

    assert key.last_used_at is None
    assert (await auth.api_key(key.id)).last_used_at >= before


async def test_bad_api_key_input_is_refused_and_nothing_is_stored(auth: AuthStore) -> None:
    with pytest.raises(InvalidRequest):
        await auth.create_api_key("acme", "ci", "owner", "hash")
    with pytest.raises(InvalidRequest):
        await auth.create_api_key("acme", "n" * 101, "viewer", "hash")

    assert await auth.list_api_keys("acme") == []


# Refresh tokens

async def test_a_refresh_token_rotates_once_and_a_replay_is_refused(auth: AuthStore) -> None:
    later = utcnow() + timedelta(days=7)
    issued = await auth.add_refresh_token("jti-1", "u1", later)

    assert await auth.rotate_refresh_token("jti-1", "jti-2", later)
    assert not await auth.rotate_refresh_token("jti-1", "jti-3", later)

    old, new = await auth.refresh_token("jti-1"), await auth.refresh_token("jti-2")
    assert old.revoked_at is not None and old.replaced_by == "jti-2"
    assert new.user_id == issued.user_id and new.revoked_at is None
    assert new.expires_at == later
    assert await auth.refresh_token("jti-3") is None
    assert await auth.rotate_refresh_token("jti-2", "jti-3", later)


async def test_an_expired_or_unknown_refresh_token_does_not_rotate(auth: AuthStore) -> None:
    await auth.add_refresh_token("stale", "u1", utcnow() - timedelta(seconds=1))

    assert not await auth.rotate_refresh_token("stale", "fresh", utcnow() + timedelta(days=1))
    assert not await auth.rotate_refresh_token("never-issued", "fresh",
                                               utcnow() + timedelta(days=1))

    assert await auth.refresh_token("fresh") is None
    assert (await auth.refresh_token("stale")).revoked_at is None


async def test_of_concurrent_rotations_of_one_token_exactly_one_wins(
    auth: AuthStore, database_url: str,
) -> None:
    later = utcnow() + timedelta(days=7)
    await auth.add_refresh_token("jti-1", "u1", later)
    other = await AuthStore.open(database_url)
    try:
        results = await asyncio.gather(
            auth.rotate_refresh_token("jti-1", "from-a", later),
            other.rotate_refresh_token("jti-1", "from-b", later),
            auth.rotate_refresh_token("jti-1", "from-c", later),
        )
    finally:
        await other.close()

    assert sorted(results) == [False, False, True]
    winner = (await auth.refresh_token("jti-1")).replaced_by
    losers = {"from-a", "from-b", "from-c"} - {winner}
    assert await auth.refresh_token(winner) is not None
    assert [await auth.refresh_token(jti) for jti in losers] == [None, None]


async def test_revoking_a_users_tokens_ends_all_their_sessions(auth: AuthStore) -> None:
    later = utcnow() + timedelta(days=7)
    for jti in ("a1", "a2", "a3"):
        await auth.add_refresh_token(jti, "alice", later)
    await auth.add_refresh_token("b1", "bob", later)
    await auth.rotate_refresh_token("a3", "a4", later)

    assert await auth.revoke_refresh_tokens("alice") == 3
    assert await auth.revoke_refresh_tokens("alice") == 0

    assert not await auth.rotate_refresh_token("a4", "a5", later)
    assert await auth.rotate_refresh_token("b1", "b2", later)


async def test_a_refresh_token_id_is_stored_once(auth: AuthStore) -> None:
    later = utcnow() + timedelta(days=7)
    await auth.add_refresh_token("jti-1", "u1", later)

    with pytest.raises(Conflict):
        await auth.add_refresh_token("jti-1", "u2", later)

    assert (await auth.refresh_token("jti-1")).user_id == "u1"


async def test_revoking_one_refresh_token_stops_only_it_and_the_first_time_stands(
    auth: AuthStore,
) -> None:
    later = utcnow() + timedelta(days=7)
    await auth.add_refresh_token("mine", "u1", later)
    await auth.add_refresh_token("other", "u1", later)

    revoked = await auth.revoke_refresh_token("mine")
    again = await auth.revoke_refresh_token("mine")

    assert revoked is not None and revoked.revoked_at is not None
    assert again == revoked and await auth.refresh_token("mine") == revoked
    assert not await auth.rotate_refresh_token("mine", "next", later)
    assert (await auth.refresh_token("other")).revoked_at is None
    assert await auth.revoke_refresh_token("never-issued") is None


async def test_purging_deletes_only_tokens_expired_or_revoked_before_the_time(
    auth: AuthStore,
) -> None:
    now = utcnow()
    await auth.add_refresh_token("expired-long-ago", "u1", now - timedelta(days=2))
    await auth.add_refresh_token("revoked-now", "u1", now + timedelta(days=7))
    await auth.revoke_refresh_token("revoked-now")
    await auth.add_refresh_token("active", "u1", now + timedelta(days=7))
    await auth.add_refresh_token("expires-soon", "u1", now + timedelta(hours=1))

    assert await auth.purge_refresh_tokens(now - timedelta(days=1)) == 1
    assert await auth.refresh_token("expired-long-ago") is None
    assert await auth.refresh_token("revoked-now") is not None

    assert await auth.purge_refresh_tokens(utcnow() + timedelta(minutes=1)) == 1
    assert await auth.refresh_token("revoked-now") is None
    assert await auth.refresh_token("active") is not None
    assert await auth.refresh_token("expires-soon") is not None
    assert await auth.rotate_refresh_token("active", "active-2", now + timedelta(days=7))


async def test_a_purge_time_without_a_timezone_is_refused_and_nothing_is_deleted(
    auth: AuthStore,
) -> None:
    await auth.add_refresh_token("expired", "u1", utcnow() - timedelta(days=2))

    with pytest.raises(InvalidRequest):
        await auth.purge_refresh_tokens(utcnow().replace(tzinfo=None))

    assert await auth.refresh_token("expired") is not None


# Audit log

async def test_audit_events_come_newest_first_in_pages(auth: AuthStore) -> None:
    written = [await auth.audit("acme", "user:u1", "task.submit", target=f"task:{n}",
                                request_id=f"req-{n}", client="10.0.0.1", details={"n": n})
               for n in range(5)]
    await auth.audit("globex", "system", "user.create")

    first, cursor = await auth.list_audit("acme", limit=2)
    second, cursor2 = await auth.list_audit("acme", limit=2, cursor=cursor)
    third, cursor3 = await auth.list_audit("acme", limit=2, cursor=cursor2)

    assert first + second + third == written[::-1]
    assert cursor and cursor2 and cursor3 is None
    assert first[0].details == {"n": 4} and first[0].at.tzinfo == timezone.utc
    assert [e.actor for e in (await auth.list_audit("globex"))[0]] == ["system"]


async def test_bad_audit_input_is_refused_and_nothing_is_stored(auth: AuthStore) -> None:
    with pytest.raises(InvalidRequest):
        await auth.audit("acme", "user:u1", "a" * 33)
    with pytest.raises(InvalidRequest):
        await auth.audit("acme", "user:u1", "login", details={"bad": float("nan")})
    with pytest.raises(InvalidRequest):
        await auth.list_audit("acme", cursor="not-a-cursor")

    assert await auth.list_audit("acme") == ([], None)
