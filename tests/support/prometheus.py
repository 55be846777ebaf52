"""A real Prometheus server for tests, and `promtool`.

Both come from the Debian/Ubuntu package `prometheus`. When a binary is missing the test is
skipped with the install command, or fails under `CI=true` (see `require_service`):

    with prometheus_server({"ymera": ["127.0.0.1:9464"]}) as prom:
        prom.wait_for("sum(ymera_queue_depth)", lambda rows: rows and rows[0]["value"] > 0)

The server listens on 127.0.0.1 only, scrapes every second, keeps its data in a temporary
directory, and is always stopped (terminated, then killed) when the block exits.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.databases import require_service

PROMETHEUS_PACKAGE = "prometheus"
INSTALL_COMMAND = f"apt-get install -y --no-install-recommends {PROMETHEUS_PACKAGE}"
SCRAPE_INTERVAL = "1s"
START_TIMEOUT_S = 30.0
TARGETS_UP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 0.25

Sample = dict[str, Any]
"""One row of a query result: {"metric": {label: value}, "value": float}."""


def find_binary(name: str) -> str:
    """The path of `prometheus` or `promtool`; skips the test (fails under CI=true) without it."""
    path = shutil.which(name)
    require_service(
        name, path is not None,
        f"`{name}` is not on PATH. Install the `{PROMETHEUS_PACKAGE}` package "
        f"(`sudo {INSTALL_COMMAND}`), or run `make test`, which installs it when it can.")
    assert path is not None
    return path


def promtool() -> str:
    """The path of `promtool` (see `find_binary`)."""
    return find_binary("promtool")


def scrape_config(targets: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """A Prometheus config scraping `targets` (job name -> host:port list) every second."""
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL,
                   "scrape_timeout": SCRAPE_INTERVAL},
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": list(addresses)}]}
            for job, addresses in targets.items()
        ],
    }


@dataclass(frozen=True)
class PrometheusServer:
    """A running server: its base URL and how to ask it things."""

    url: str
    log_path: Path

    def query_response(self, expr: str) -> dict[str, Any]:
        """The raw JSON answer of `/api/v1/query` for `expr`, whatever its status (a syntax
        error comes back as status "error", errorType "bad_data", HTTP 400)."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10.0)
        return response.json()

    def query(self, expr: str) -> list[Sample]:
        """The instant value of `expr` now; raises AssertionError when Prometheus rejects it."""
        body = self.query_response(expr)
        assert body.get("status") == "success", f"query {expr!r} failed: {body}"
        data = body["data"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": float(data["result"][1])}]
        if data["resultType"] != "vector":
            raise AssertionError(f"query {expr!r} gave a {data['resultType']}, not a vector")
        return [{"metric": row["metric"], "value": float(row["value"][1])}
                for row in data["result"]]

    def wait_for(self, expr: str, predicate: Callable[[list[Sample]], object],
                 timeout: float = 30.0) -> list[Sample]:
        """Query `expr` until `predicate(rows)` is true and return those rows; raises
        AssertionError with the last rows after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.query(expr)
            if predicate(rows):
                return rows
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{expr!r} did not satisfy the condition within {timeout:.0f} s; last: {rows}")
            time.sleep(POLL_INTERVAL_S)

    def targets(self) -> list[dict[str, Any]]:
        """The active scrape targets, as `/api/v1/targets` reports them."""
        response = httpx.get(f"{self.url}/api/v1/targets", params={"state": "active"}, timeout=10.0)
        response.raise_for_status()
        return response.json()["data"]["activeTargets"]

    def wait_until_targets_up(self, expected: int, timeout: float = TARGETS_UP_TIMEOUT_S) -> None:
        """Wait until `expected` targets have been scraped with `up == 1`."""
        deadline = time.monotonic() + timeout
        while True:
            up = self.query("up == 1")
            if len(up) >= expected:
                return
            if time.monotonic() >= deadline:
                problems = [(t["scrapeUrl"], t["health"], t["lastError"]) for t in self.targets()]
                raise AssertionError(
                    f"{len(up)} of {expected} targets up after {timeout:.0f} s: {problems}")
            time.sleep(POLL_INTERVAL_S)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_ready(process: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {process.returncode}: "
                               f"{log_path.read_text(errors='replace')[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/-/ready", timeout=1.0).status_code == 200:
                return
        if time.monotonic() >= deadline:
            raise RuntimeError(f"prometheus at {url} not ready after {START_TIMEOUT_S:.0f} s: "
                               f"{log_path.read_text(errors='replace')[-2000:]}")
        time.sleep(POLL_INTERVAL_S)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_S)


@contextlib.contextmanager
def prometheus_server(targets: Mapping[str, Sequence[str]] | None = None, *,
                      wait_until_up: bool = True) -> Iterator[PrometheusServer]:
    """A Prometheus server on 127.0.0.1 scraping `targets` (job name -> host:port list).

    With `wait_until_up`, the block starts only after every target has answered a scrape
    (`up == 1`); the first scrape comes a few seconds after start.
    """
    binary = find_binary("prometheus")
    targets = dict(targets or {})
    with tempfile.TemporaryDirectory(prefix="ymera-prometheus-") as workdir:
        config_path = Path(workdir) / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(scrape_config(targets), sort_keys=False))
        log_path = Path(workdir) / "prometheus.log"
        address = f"127.0.0.1:{_free_port()}"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [binary, f"--config.file={config_path}",
                 f"--storage.tsdb.path={Path(workdir) / 'data'}",
                 f"--web.listen-address={address}", "--log.level=warn"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            server = PrometheusServer(url=f"http://{address}", log_path=log_path)
            _wait_until_ready(process, server.url, log_path)
            if wait_until_up:
                server.wait_until_targets_up(sum(len(a) for a in targets.values()))
            yield server
        finally:
            _stop(process)
