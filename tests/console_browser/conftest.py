"""The web console in a real browser: Debian's Chromium driven by Playwright (pytest-playwright
installs it; its `expect` assertions are used), against
the API deployed on Ray Serve on the shared test cluster (PostgreSQL, Redis, the router on).

Chromium is not downloaded by Playwright here: `make chromium` installs the distribution's
package, and the tests use it through `executable_path`. Without it the tests skip with the
reason, and fail under `CI=true`. Screenshots go to `docs/console/` when
`YMERA_CONSOLE_SCREENSHOTS=1` (how the README's pictures are made), else to a temporary
directory.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from cluster.client import Client
from ml.config import RouterConfig
from serve_apps.api_config import ApiConfig
from serve_apps.deployment import deploy_api, shutdown_api
from serve_apps.passwords import hash_password
from serve_apps.rate_limit import RateLimit
from storage.auth_store import AuthStore
from tests.support.platform import run_platform
from tests.support.redis_service import REDIS_URL, delete_namespace, require_redis

T = TypeVar("T")
CHROMIUM = os.environ.get("YMERA_CHROMIUM", "/usr/bin/chromium")
APP_NAME = "ymera-console-test"
SECRET = "Cn5v_Lp2xQz8Wm4Ty6Ub1Nc7Hd5Jf0Ga-EsR9kB3nM7pX2cV6tY1uI8oP5aS0dG"
PASSWORD = "correct horse battery staple"
GENEROUS = RateLimit(requests=100_000, per_s=60.0)
DOCS = Path(__file__).resolve().parents[2] / "docs" / "console"
USERS = {("acme", "operator"), ("acme", "viewer"), ("acme", "submitter"),
         ("globex", "admin")}


@dataclasses.dataclass(frozen=True)
class DeployedConsole:
    url: str
    namespace: str

    @property
    def api(self) -> str:
        return f"{self.url}/api/v1"


def _chromium_present() -> None:
    if Path(CHROMIUM).exists() or shutil.which(CHROMIUM):
        return
    reason = (f"Chromium is not installed at {CHROMIUM}: run `make chromium` (Debian's "
              "`chromium` package) or set YMERA_CHROMIUM")
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _create_users(database_url: str) -> None:
    async with await AuthStore.open(database_url) as store:
        password_hash = hash_password(PASSWORD)
        for tenant, role in sorted(USERS):
            await store.create_user(tenant, f"{role}@{tenant}", password_hash, role)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """Debian's Chromium (not a Playwright download: none is available), for this module only.
    pytest-playwright's own `browser` lives for the whole session, and Playwright's sync API
    keeps an event loop running on the main thread while it lives, which would break every
    later test that runs one (`asyncio.run`, pytest-asyncio)."""
    _chromium_present()
    args = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    """A fresh page in a fresh context (no cookies from another test)."""
    context = chromium.new_context(viewport={"width": 1100, "height": 760})
    context.set_default_timeout(30_000)
    try:
        yield context.new_page()
    finally:
        context.close()


def _in_thread(work: Callable[[], T]) -> T:
    """`work()` on a thread of its own: Playwright's sync API keeps an event loop running on
    this one while a browser is open, and the platform's set-up and tear-down run their own
    (`asyncio.run`)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(work).result()


def _deploy(client: Client) -> str:
    asyncio.run(_create_users(client.config.database_url))
    config = ApiConfig(jwt_secret=SECRET, namespace=client.config.namespace,
                       database_url=client.config.database_url, redis_url=REDIS_URL,
                       wait_max_s=30.0, key_rate_limit=GENEROUS,
                       tenant_rate_limit=GENEROUS, failed_auth_rate_limit=GENEROUS)
    return deploy_api(config, port=_free_port(), replicas=1, name=APP_NAME)


def _undeploy(namespace: str) -> None:
    shutdown_api(APP_NAME)
    asyncio.run(delete_namespace(namespace))


@pytest.fixture(scope="module")
def console(ray_cluster, tmp_path_factory) -> Iterator[DeployedConsole]:
    _chromium_present()
    require_redis()
    platform = run_platform("postgresql", tmp_path_factory.mktemp("console"),
                            redis_url=REDIS_URL, router=RouterConfig())
    client = _in_thread(lambda: next(platform))
    try:
        url = _in_thread(lambda: _deploy(client))
        try:
            yield DeployedConsole(url, client.config.namespace)
        finally:
            _in_thread(lambda: _undeploy(client.config.namespace))
    finally:
        _in_thread(lambda: next(platform, None))


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory) -> Path:
    if os.environ.get("YMERA_CONSOLE_SCREENSHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        return DOCS
    return tmp_path_factory.mktemp("console-screenshots")
