"""Sustained mixed load that behaves like real clients, and the record of what it was told.

Each worker thread submits, one at a time, a mix drawn from its own seeded generator: typed
tasks for several agent types, tasks left to the router, and workflow runs. Every submission
carries an idempotency key; on any error the worker records it (type and code) and retries the
SAME key with backoff until it is acknowledged or the load's retry window closes. Every
acknowledgement is recorded as (tenant, key) -> id with its time; a key acknowledged with two
different ids is recorded as a duplicate at once.

Errors the platform documents as retryable (`RETRYABLE_CODES`) are expected under faults; any
other error (a raw driver or Ray exception above all) is a finding the checker reports.
"""

from __future__ import annotations

import dataclasses
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from storage.errors import YmeraError

TENANTS = ("chaos-a", "chaos-b")
RETRYABLE_CODES = frozenset({"platform_unavailable", "queue_full", "storage_error",
                             "rate_limited", "connection_error"})
"""What a client may see and retry: the orchestrator is away or storage is out
(`PlatformUnavailable`, `StorageError`: HTTP 503), back-pressure (`QueueFull`, `RateLimited`:
HTTP 429), and over HTTP a connection that failed (Serve's proxy is restarting)."""
SERVE_ERROR = "serve_error"
"""The code recorded for an HTTP 500, 502, 503 or 504 without the platform's error envelope:
Ray Serve's own answer when the API replica serving the request died mid-request or none is
reachable. The README documents it as retryable with the same Idempotency-Key."""
SERVE_ERROR_STATUSES = frozenset({500, 502, 503, 504})

PAIR_WORKFLOW: dict[str, Any] = {"name": "chaos_pair", "steps": [
    {"id": "multiply", "agent_type": "calculator", "payload": {"expression": "6 * 7"}},
    {"id": "describe", "agent_type": "text_analysis", "depends_on": ["multiply"],
     "payload": {"operation": "statistics", "text": "Chaos is a ladder. Faults come and go."}},
]}


@dataclasses.dataclass(frozen=True)
class Operation:
    """One thing a client submits: a task (typed or routed) or a workflow run."""

    kind: str  # "task" or "run"
    description: str
    payload: dict[str, Any]
    agent_type: str | None = None


def operations() -> list[tuple[float, Operation]]:
    """The mix, with weights."""
    return [
        (3.0, Operation("task", "multiply", {"expression": "12 * 7"}, "calculator")),
        (2.0, Operation("task", "total sales by region", {
            "operation": "group_by", "by": "region", "aggregates": {"sales": "sum"},
            "rows": [{"region": "north", "sales": 120}, {"region": "south", "sales": 80}]},
            "data_processor")),
        (2.0, Operation("task", "text statistics", {
            "operation": "statistics", "text": "The platform keeps every task. None is lost."},
            "text_analysis")),
        (2.0, Operation("task", "what is 2^10 + 5", {"expression": "2**10 + 5"})),
        (1.0, Operation("run", "chaos_pair", {})),
    ]


@dataclasses.dataclass(frozen=True)
class Ack:
    tenant: str
    key: str
    kind: str
    via: str  # "python" or "http"
    id: str
    agent_type: str | None
    first_try_at: float
    acked_at: float
    tries: int


@dataclasses.dataclass(frozen=True)
class ClientError:
    at: float
    kind: str
    error_type: str
    code: str | None
    retryable: bool
    message: str


class LoadRecord:
    """What the clients were told, shared by every worker (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.acks: dict[tuple[str, str], Ack] = {}
        self.duplicates: list[dict[str, Any]] = []
        self.errors: list[ClientError] = []
        self.given_up: list[tuple[str, str]] = []

    def acked(self, ack: Ack) -> None:
        with self._lock:
            earlier = self.acks.get((ack.tenant, ack.key))
            if earlier is not None and earlier.id != ack.id:
                self.duplicates.append({"tenant": ack.tenant, "key": ack.key,
                                        "ids": [earlier.id, ack.id]})
            self.acks.setdefault((ack.tenant, ack.key), ack)

    def failed(self, error: ClientError) -> None:
        with self._lock:
            self.errors.append(error)

    def gave_up(self, tenant: str, key: str) -> None:
        with self._lock:
            self.given_up.append((tenant, key))

    def successes_after(self, at: float, via: str | None = None) -> float | None:
        """When the first acknowledgement after `at` came (`via` one way), or None."""
        with self._lock:
            times = [a.acked_at for a in self.acks.values()
                     if a.acked_at >= at and (via is None or a.via == via)]
        return min(times) if times else None

    def errors_by_kind(self) -> dict[str, int]:
        with self._lock:
            return dict(Counter(f"{e.error_type}({e.code})" if e.code else e.error_type
                                for e in self.errors))


class HttpError(Exception):
    """An HTTP error answer: its status and the envelope's code."""

    def __init__(self, status: int, code: str | None, message: str) -> None:
        super().__init__(status, code, message)
        self.status = status
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"HTTP {self.status} {self.code}: {self.message}"


def classify(exc: BaseException) -> tuple[str, str | None, bool]:
    """(type name, platform code or None, whether it is a documented retryable error)."""
    import httpx

    if isinstance(exc, HttpError):
        if exc.code == SERVE_ERROR:
            return f"HTTP {exc.status}", exc.code, exc.status in SERVE_ERROR_STATUSES
        return f"HTTP {exc.status}", exc.code, (exc.status in (429, 503)
                                                 and exc.code in RETRYABLE_CODES)
    if isinstance(exc, httpx.TransportError):
        return type(exc).__name__, "connection_error", True
    code = exc.code if isinstance(exc, YmeraError) else None
    return type(exc).__name__, code, code in RETRYABLE_CODES


Submit = Callable[[Operation, str, str], str]
API = "/api/v1"
"""Submits `operation` for tenant with idempotency key; returns the task or run id."""


def client_submitter(client: Any) -> Submit:
    """Submissions through the Python client (`cluster.client.Client`)."""

    def submit(operation: Operation, tenant: str, key: str) -> str:
        if operation.kind == "run":
            detail = client.submit_workflow(PAIR_WORKFLOW, {}, idempotency_key=key,
                                            tenant=tenant)
            return str(detail.run.id)
        return str(client.submit(operation.description, operation.payload,
                                 agent_type=operation.agent_type, idempotency_key=key,
                                 tenant=tenant))

    return submit


def http_submitter(base_url: str, api_keys: dict[str, str],
                   timeout_s: float = 30.0) -> Submit:
    """Submissions over the HTTP API, with each tenant's API key and the `Idempotency-Key`
    header."""
    import httpx

    http = httpx.Client(base_url=base_url, timeout=timeout_s)

    def submit(operation: Operation, tenant: str, key: str) -> str:
        headers = {"X-API-Key": api_keys[tenant], "Idempotency-Key": key}
        if operation.kind == "run":
            response = http.post(f"{API}/workflows", headers=headers, json={
                "workflow": PAIR_WORKFLOW, "input": {}})
        else:
            response = http.post(f"{API}/tasks", headers=headers, json={
                "description": operation.description, "payload": operation.payload,
                "agent_type": operation.agent_type})
        if response.status_code >= 400:
            raise http_error(response.status_code, response.text)
        body = response.json()
        return str(body["id"])

    return submit


def http_error(status: int, body: str) -> HttpError:
    """The error of an HTTP answer: the envelope's code, or `SERVE_ERROR` for a 5xx without
    the envelope (Serve's own answer), or no code at all for anything else."""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict) and error.get("code"):
        return HttpError(status, str(error["code"]), str(error.get("message") or ""))
    code = SERVE_ERROR if status in SERVE_ERROR_STATUSES else None
    return HttpError(status, code, f"no error envelope: {body[:200]!r}")


class LoadWorker(threading.Thread):
    """One client: submits until `stop` is set, retrying each key until acknowledged or until
    `give_up_at` (wall time, set by the harness when the load stops)."""

    def __init__(self, name: str, via: str, seed: int, submit: Submit, record: LoadRecord,
                 stop: threading.Event, pause_s: float = 0.3) -> None:
        super().__init__(name=f"chaos-load-{name}", daemon=True)
        self.worker = name
        self.via = via
        self.rng = random.Random(seed)
        self.submit = submit
        self.record = record
        self.stop = stop
        self.pause_s = pause_s
        self.give_up_at = float("inf")
        self.submitted = 0

    def run(self) -> None:
        weighted = operations()
        weights = [w for w, _ in weighted]
        ops = [op for _, op in weighted]
        while not self.stop.is_set():
            operation = self.rng.choices(ops, weights)[0]
            tenant = TENANTS[self.submitted % len(TENANTS)]
            key = f"chaos-{self.worker}-{self.submitted}"
            self.submitted += 1
            self._until_acked(operation, tenant, key)
            self.stop.wait(self.rng.uniform(0, 2 * self.pause_s))

    def _until_acked(self, operation: Operation, tenant: str, key: str) -> None:
        first = time.time()
        backoff = 0.2
        for tries in range(1, 10_000):
            try:
                ident = self.submit(operation, tenant, key)
            except Exception as exc:  # every error is recorded; the retry uses the same key
                error_type, code, retryable = classify(exc)
                self.record.failed(ClientError(time.time(), operation.kind, error_type, code,
                                               retryable, str(exc)[:300]))
                if time.time() > self.give_up_at:
                    self.record.gave_up(tenant, key)
                    return
                time.sleep(self.rng.uniform(0.5, 1.0) * backoff)
                backoff = min(backoff * 2, 3.0)
                continue
            self.record.acked(Ack(tenant, key, operation.kind, self.via, ident, operation.agent_type,
                                  first, time.time(), tries))
            return
