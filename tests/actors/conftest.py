"""An orchestrator per test module on the shared Ray cluster, on real databases."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cluster.client import Client
from tests.support.platform import run_platform


@pytest.fixture(scope="module")
def platform(ray_cluster, tmp_path_factory) -> Iterator[Client]:
    """A running platform on PostgreSQL, the production database."""
    yield from run_platform("postgresql", tmp_path_factory.mktemp("platform"))


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def any_platform(request, ray_cluster, tmp_path_factory) -> Iterator[Client]:
    """A running platform on each supported database in turn."""
    yield from run_platform(request.param, tmp_path_factory.mktemp(request.param))
