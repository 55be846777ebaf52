"""An API replica's short memory of the users and API keys it has just read from storage.

Authenticating a request reads its user or key; without this, that is one database read per
request (on a busy replica, the largest share of its CPU after Serve itself). A record is kept
for `ttl_s` seconds (`ApiConfig.auth_cache_s`; 0 keeps nothing).

Guarantees:
- a record is never used more than `ttl_s` after it was read;
- a change made through this replica (a key revoked, a user disabled, enabled or given another
  role) takes effect on it at once (`forget`); on other replicas, within `ttl_s`;
- nothing about the request is cached: the key's secret is checked against its stored hash and
  its expiry against the clock on every request;
- a lookup that found nothing is kept only when asked (`remember_missing`, used for API key
  ids: they are random, so no caller can present one before it exists) and only for
  `missing_ttl_s` (30 s), so the same unknown key id presented again and again costs one
  storage read per `missing_ttl_s`, not one per request; a user id is never kept missing;
- at most `max_entries` records and `max_entries` missing ids are kept, the oldest dropped
  first.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

T = TypeVar("T")

MAX_ENTRIES: Final = 10_000
MISSING_TTL_S: Final = 30.0


class CredentialCache:
    def __init__(self, ttl_s: float, max_entries: int = MAX_ENTRIES,
                 clock: Callable[[], float] = time.monotonic,
                 missing_ttl_s: float = MISSING_TTL_S) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.missing_ttl_s = missing_ttl_s
        self._clock = clock
        self._records: dict[tuple[str, str], tuple[float, Any]] = {}
        self._missing: dict[tuple[str, str], float] = {}  # → when it was found missing

    def holds(self, kind: str, ident: str) -> bool:
        """Whether `get` would answer without a storage read (kept, or kept missing)."""
        key, now = (kind, ident), self._clock()
        kept = self._records.get(key)
        if kept is not None and now - kept[0] < self.ttl_s:
            return True
        missed = self._missing.get(key)
        return missed is not None and now - missed < self.missing_ttl_s

    async def get(self, kind: str, ident: str, load: Callable[[], Awaitable[T | None]],
                  remember_missing: bool = False) -> T | None:
        """The `kind` record `ident`, kept if read less than `ttl_s` ago, else `load()`ed.
        `remember_missing`: a record `load` did not find stays "none" for `missing_ttl_s`."""
        key = (kind, ident)
        kept = self._records.get(key)
        now = self._clock()
        if kept is not None and now - kept[0] < self.ttl_s:
            return kept[1]
        missed = self._missing.get(key)
        if missed is not None and now - missed < self.missing_ttl_s:
            return None
        record = await load()
        if record is None:
            self._records.pop(key, None)
            if remember_missing and self.missing_ttl_s > 0:
                self._missing.pop(key, None)
                self._missing[key] = now
                while len(self._missing) > self.max_entries:
                    del self._missing[next(iter(self._missing))]
        else:
            self._missing.pop(key, None)
            self.put(kind, ident, record, read_at=now)
        return record

    def put(self, kind: str, ident: str, record: Any, read_at: float | None = None) -> None:
        """Keep `record` as read at `read_at` (default: now); nothing when `ttl_s` is 0."""
        if self.ttl_s <= 0:
            return
        key = (kind, ident)
        self._records.pop(key, None)
        self._records[key] = (self._clock() if read_at is None else read_at, record)
        while len(self._records) > self.max_entries:
            del self._records[next(iter(self._records))]

    def forget(self, kind: str, ident: str) -> None:
        """Drop the record (or that it is missing), so the next request reads it again."""
        self._records.pop((kind, ident), None)
        self._missing.pop((kind, ident), None)
