"""Each tenant's own routing examples (learned and feedback), held in memory within a bound.

The router searches two indexes for a task: the shared one (the agents' declared examples and
the out-of-scope phrases, the same for every tenant) and the task's tenant's own `ExampleIndex`,
which holds that tenant's stored examples and nothing else. `TenantExamples` keeps those
per-tenant indexes in a least-recently-used cache: a tenant's index is built from storage the
first time a decision, a learning report or feedback needs it, and the tenants used least
recently are dropped when the cache holds more than `max_examples` (a tenant counts as its
examples plus one, so many empty tenants are bounded too). Dropping loses nothing: storage is
the truth, and the next use rebuilds the index.

Guarantees: `get(tenant)` only ever returns `tenant`'s own index; the tenant most recently put
or used is never the one evicted, so a single tenant larger than the bound still works (the
cache then holds just that tenant). Not thread-safe: the router service calls it from its event
loop only, and serialises loads with writes itself.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator

from ml.example_index import ExampleIndex


class TenantExamples:
    """An LRU cache of per-tenant example indexes, bounded by how many examples it holds."""

    def __init__(self, max_examples: int) -> None:
        if max_examples < 1:
            raise ValueError("max_examples must be >= 1")
        self.max_examples = max_examples
        self._indexes: collections.OrderedDict[str, ExampleIndex] = collections.OrderedDict()
        self.loads = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._indexes)

    def __contains__(self, tenant: object) -> bool:
        return tenant in self._indexes

    def get(self, tenant: str) -> ExampleIndex | None:
        """`tenant`'s index if it is cached (and marks it used), else None."""
        index = self._indexes.get(tenant)
        if index is not None:
            self._indexes.move_to_end(tenant)
        return index

    def put(self, tenant: str, index: ExampleIndex) -> None:
        """Cache `index` as `tenant`'s (just loaded from storage), then keep to the bound."""
        self._indexes[tenant] = index
        self._indexes.move_to_end(tenant)
        self.loads += 1
        self.fit()

    def fit(self) -> list[str]:
        """Evict least recently used tenants until the cache is within its bound (never the
        most recently used one); returns the tenants evicted."""
        evicted = []
        while len(self._indexes) > 1 and self.size() > self.max_examples:
            tenant, _ = self._indexes.popitem(last=False)
            evicted.append(tenant)
        self.evictions += len(evicted)
        return evicted

    def size(self) -> int:
        """What counts against the bound: every cached tenant's examples, plus one per tenant."""
        return sum(len(index) + 1 for index in self._indexes.values())

    def clear(self) -> None:
        """Forget every tenant (they are rebuilt from storage on their next use)."""
        self._indexes.clear()

    def items(self) -> Iterator[tuple[str, ExampleIndex]]:
        return iter(list(self._indexes.items()))

    def snapshot(self) -> dict[str, int]:
        return {"tenants": len(self._indexes), "examples": self.size() - len(self._indexes),
                "max_examples": self.max_examples, "loads": self.loads,
                "evictions": self.evictions}
