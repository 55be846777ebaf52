"""The cache of tenants' example indexes: least recently used first out, within its bound."""

from __future__ import annotations

import numpy as np
import pytest

from ml.example_index import ExampleIndex
from ml.tenant_examples import TenantExamples


def index_of(count: int) -> ExampleIndex:
    index = ExampleIndex(dimension=4)
    vectors = np.tile(np.array([[1.0, 0.0, 0.0, 0.0]], dtype=np.float32), (count, 1))
    index.add([f"example {i}" for i in range(count)], "calculator", "learned",
              vectors=vectors, keys=list(range(count)))
    return index


def test_the_least_recently_used_tenant_goes_first() -> None:
    cache = TenantExamples(max_examples=6)  # each tenant below counts 2 + 1
    cache.put("acme", index_of(2))
    cache.put("globex", index_of(2))
    assert cache.get("acme") is not None  # acme is now the most recently used

    cache.put("initech", index_of(2))

    assert "globex" not in cache and "acme" in cache and "initech" in cache
    assert cache.snapshot() == {"tenants": 2, "examples": 4, "max_examples": 6, "loads": 3,
                                "evictions": 1}


def test_a_tenant_larger_than_the_bound_is_kept_alone() -> None:
    cache = TenantExamples(max_examples=3)
    cache.put("acme", index_of(1))
    big = index_of(10)
    cache.put("globex", big)

    assert cache.get("globex") is big and "acme" not in cache and len(cache) == 1


def test_growth_after_a_load_is_brought_back_within_the_bound() -> None:
    cache = TenantExamples(max_examples=4)
    cache.put("acme", index_of(1))
    cache.put("globex", index_of(1))
    assert len(cache) == 2
    grown = cache.get("globex")
    assert grown is not None
    grown.add(["one more"], "calculator", "feedback",
              vectors=np.array([[0.0, 1.0, 0.0, 0.0]], dtype=np.float32), keys=[99])

    assert cache.fit() == ["acme"]
    assert cache.size() == 3


def test_the_bound_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_examples"):
        TenantExamples(0)
