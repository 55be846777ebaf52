"""The credential cache: what a replica keeps of the users and keys it read, and for how long."""

from __future__ import annotations

from serve_apps.credential_cache import CredentialCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Storage:
    """Counts reads; `records` is what storage holds now."""

    def __init__(self, **records: str) -> None:
        self.records = dict(records)
        self.reads = 0

    def loader(self, ident: str):
        async def load() -> str | None:
            self.reads += 1
            return self.records.get(ident)
        return load


async def test_a_record_is_read_once_then_kept_for_the_ttl_only() -> None:
    clock, storage = Clock(), Storage(k1="v1")
    cache = CredentialCache(ttl_s=5, clock=clock)
    assert await cache.get("key", "k1", storage.loader("k1")) == "v1"
    storage.records["k1"] = "v2"  # changed elsewhere
    clock.now += 4.9
    assert await cache.get("key", "k1", storage.loader("k1")) == "v1"
    assert storage.reads == 1
    clock.now += 0.1
    assert await cache.get("key", "k1", storage.loader("k1")) == "v2"
    assert storage.reads == 2


async def test_forget_makes_the_next_request_read_again() -> None:
    clock, storage = Clock(), Storage(k1="v1")
    cache = CredentialCache(ttl_s=5, clock=clock)
    await cache.get("key", "k1", storage.loader("k1"))
    storage.records["k1"] = "revoked"
    cache.forget("key", "k1")
    assert await cache.get("key", "k1", storage.loader("k1")) == "revoked"


async def test_a_missing_record_is_not_kept() -> None:
    clock, storage = Clock(), Storage()
    cache = CredentialCache(ttl_s=5, clock=clock)
    assert await cache.get("key", "k1", storage.loader("k1")) is None
    storage.records["k1"] = "created elsewhere"
    assert await cache.get("key", "k1", storage.loader("k1")) == "created elsewhere"


async def test_kinds_do_not_share_entries() -> None:
    clock, storage = Clock(), Storage(same="a key")
    cache = CredentialCache(ttl_s=5, clock=clock)
    await cache.get("key", "same", storage.loader("same"))
    users = Storage(same="a user")
    assert await cache.get("user", "same", users.loader("same")) == "a user"


async def test_a_zero_ttl_reads_every_time() -> None:
    clock, storage = Clock(), Storage(k1="v1")
    cache = CredentialCache(ttl_s=0, clock=clock)
    for _ in range(3):
        await cache.get("key", "k1", storage.loader("k1"))
    assert storage.reads == 3


async def test_the_oldest_entries_go_first_beyond_the_bound() -> None:
    clock = Clock()
    storage = Storage(**{f"k{i}": f"v{i}" for i in range(4)})
    cache = CredentialCache(ttl_s=60, max_entries=3, clock=clock)
    for i in range(4):
        await cache.get("key", f"k{i}", storage.loader(f"k{i}"))
    reads = storage.reads
    await cache.get("key", "k3", storage.loader("k3"))
    assert storage.reads == reads  # still kept
    await cache.get("key", "k0", storage.loader("k0"))
    assert storage.reads == reads + 1  # dropped as the oldest


async def test_an_unknown_key_id_is_remembered_missing_for_a_short_while_only() -> None:
    clock, storage = Clock(), Storage()
    cache = CredentialCache(ttl_s=5, clock=clock, missing_ttl_s=30)
    for _ in range(10):
        assert await cache.get("key", "k9", storage.loader("k9"), remember_missing=True) is None
    assert storage.reads == 1 and cache.holds("key", "k9")
    clock.now += 30
    assert not cache.holds("key", "k9")
    storage.records["k9"] = "v9"
    assert await cache.get("key", "k9", storage.loader("k9"), remember_missing=True) == "v9"
    assert storage.reads == 2


async def test_missing_ids_are_kept_within_the_bound_and_users_never() -> None:
    clock, storage = Clock(), Storage()
    cache = CredentialCache(ttl_s=5, max_entries=3, clock=clock)
    for ident in ("a", "b", "c", "d"):
        await cache.get("key", ident, storage.loader(ident), remember_missing=True)
    assert [cache.holds("key", ident) for ident in "abcd"] == [False, True, True, True]
    await cache.get("user", "u1", storage.loader("u1"))
    await cache.get("user", "u1", storage.loader("u1"))
    assert storage.reads == 6
