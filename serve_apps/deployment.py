"""The HTTP API as a Ray Serve application: `create_app` behind Serve's HTTP proxy.

    url = deploy_api(settings.api_config(), port=8000, replicas=2)   # "http://127.0.0.1:8000"
    url = deploy_api(settings.api_config(), scaling=ApiScaling(1, 8, target_ongoing_requests=32))
    shutdown_api()

or, from a Serve config file naming `app_builder`:

    serve deploy serve_apps/serve_config.yaml

Each replica (`ApiIngress`) builds its own FastAPI app at start: its own auth store on
`config.database_url`, its own limiter, and a port to the orchestrator of `config.namespace`
that is found on first use, so the API may start before the platform and follows the
orchestrator through a restart.

Guarantees:
- `deploy_api` returns only once Serve reports the application running and `/health` answers
  through the proxy; a replica that cannot start (unmigrated database, bad secret) fails the
  deployment with Serve's reason;
- `shutdown_api` removes only its own application; Serve itself stops only when no other
  application is left on the cluster;
- with `redis_url` the replicas share one rate-limit budget; without it each replica keeps its
  own, so a caller's effective limit is the configured one times the number of replicas;
- on an SQLite database the replicas run on the head node, next to the file;
- with `ApiScaling(min, max)` and `max > min`, Serve autoscales the replicas between `min` and
  `max` on ongoing requests per replica; otherwise it runs exactly `min` of them;
- every response carries one `X-Request-ID`, the id the app used. Serve's HTTP proxy always
  forwards a request id to the app (the caller's, else one it makes) and echoes it on the
  response, so the app does not add it again (`create_app(..., behind_proxy=True)`). Only
  when the caller's id is one the app refuses (see `middleware`) does the response carry
  both: the caller's, echoed by Serve, and then the app's, which its logs and error envelope
  name;
- the caller address the API limits and audits is never taken from a header a caller chose:
  Serve's HTTP proxy (uvicorn) replaces the peer of a request from the hosts it trusts
  (`FORWARDED_ALLOW_IPS`, loopback by default) by a hop of its `X-Forwarded-For`; the app
  undoes that and believes forwarded hops only from `trusted_proxies`
  (see `serve_apps.client_address`);
- Serve's proxy sends its own `server: uvicorn` header, which the application cannot remove
  (Serve 2.60 does not let it be configured); strip it at the reverse proxy in front.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Final, cast

from fastapi import FastAPI
from ray import serve
from ray.serve import Application, Deployment

from actors.deploy import find_orchestrator
from actors.logs import configure_logging
from serve_apps.api_config import ApiConfig
from serve_apps.app import create_app, throttle_policy
from serve_apps.client_address import UVICORN_DEFAULT_TRUST, TrustedProxies
from serve_apps.login_throttle import LocalLoginThrottle, LoginThrottle, RedisLoginThrottle
from serve_apps.platform_port import ActorPort
from serve_apps.rate_limit import LocalRateLimiter, RateLimit, RateLimiter, RedisRateLimiter
from storage.auth_store import AuthStore

DEFAULT_APP_NAME: Final = "ymera-api"
MAX_ONGOING_REQUESTS: Final = 100
TARGET_ONGOING_REQUESTS: Final = 32.0
UPSCALE_DELAY_S: Final = 30.0
DOWNSCALE_DELAY_S: Final = 600.0
READY_TIMEOUT_S: Final = 60.0
HEAD_NODE_RESOURCE: Final = {"node:__internal_head__": 0.001}
_SECRET_ARGS: Final = ("jwt_secret", "jwt_secret_file")
_RATE_LIMIT_ARGS: Final = ("key_rate_limit", "tenant_rate_limit", "failed_auth_rate_limit")
_CONFIG_ARGS: Final = frozenset(f.name for f in dataclasses.fields(ApiConfig)) - {"jwt_secret"}


@dataclasses.dataclass(frozen=True)
class ApiScaling:
    """How many API replicas Serve runs: exactly `min_replicas` when `max_replicas` equals it,
    else between the two, adding replicas when the ongoing requests per replica stay above
    `target_ongoing_requests` for `upscale_delay_s` and removing them when they stay below it
    for `downscale_delay_s`. A replica accepts at most `MAX_ONGOING_REQUESTS` at once, so the
    target must not exceed that."""

    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: float = TARGET_ONGOING_REQUESTS
    upscale_delay_s: float = UPSCALE_DELAY_S
    downscale_delay_s: float = DOWNSCALE_DELAY_S

    def __post_init__(self) -> None:
        if self.min_replicas < 1:
            raise ValueError(f"min_replicas must be at least 1, not {self.min_replicas}")
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) must be at least "
                             f"min_replicas ({self.min_replicas})")
        if not 0 < self.target_ongoing_requests <= MAX_ONGOING_REQUESTS:
            raise ValueError(f"target_ongoing_requests must be in (0, {MAX_ONGOING_REQUESTS}], "
                             f"not {self.target_ongoing_requests}")
        if self.upscale_delay_s < 0 or self.downscale_delay_s < 0:
            raise ValueError("upscale_delay_s and downscale_delay_s must not be negative")

    @property
    def autoscaled(self) -> bool:
        return self.max_replicas > self.min_replicas

    def deployment_options(self) -> dict[str, Any]:
        """The Serve deployment options: `autoscaling_config` when autoscaled, else
        `num_replicas`."""
        if not self.autoscaled:
            return {"num_replicas": self.min_replicas}
        return {"autoscaling_config": {
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "target_ongoing_requests": self.target_ongoing_requests,
            "upscale_delay_s": self.upscale_delay_s,
            "downscale_delay_s": self.downscale_delay_s,
        }}


class LazyActorPort(ActorPort):
    """An `ActorPort` to the orchestrator of `namespace`, looked up on the first call and
    again after a call finds it unreachable (a stale handle is never kept)."""

    def __init__(self, namespace: str) -> None:
        super().__init__(find=lambda: asyncio.to_thread(find_orchestrator, namespace))
        self.namespace = namespace


@serve.deployment(max_ongoing_requests=MAX_ONGOING_REQUESTS, ray_actor_options={"num_cpus": 0})
@serve.ingress()
class ApiIngress:
    """One API replica: the whole `create_app` application over this replica's own auth store,
    limiter and orchestrator port, which it closes when Serve stops it. Its process logs as
    `config.log_format` at `config.log_level` (see `actors.logs`)."""

    # Serve awaits an ingress replica's constructor; mypy knows only a synchronous `__init__`.
    async def __init__(self, config: ApiConfig) -> None:  # type: ignore[misc]
        configure_logging(config.log_format, config.log_level)
        self.config = config
        self.auth_store = await AuthStore.open(config.database_url)
        self.limiter: RateLimiter = (RedisRateLimiter(config.redis_url, config.namespace)
                                     if config.redis_url else LocalRateLimiter())
        policy = throttle_policy(config)
        self.login_throttle: LoginThrottle = (
            RedisLoginThrottle(config.redis_url, config.namespace, policy)
            if config.redis_url else LocalLoginThrottle(policy))

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(self.config, LazyActorPort(self.config.namespace), self.auth_store,
                          self.limiter, behind_proxy=True, login_throttle=self.login_throttle,
                          upstream_proxies=serve_proxy_trust())

    async def __del__(self) -> None:
        await self.login_throttle.close()
        await self.limiter.close()
        await self.auth_store.close()


def serve_proxy_trust() -> TrustedProxies:
    """The hosts whose `X-Forwarded-For` Serve's uvicorn applies to a request's peer: its
    `FORWARDED_ALLOW_IPS` (read by uvicorn from the same cluster environment), else loopback.
    An entry that is no address (uvicorn keeps such literals) cannot match a peer here."""
    raw = os.environ.get("FORWARDED_ALLOW_IPS")
    entries = raw.split(",") if raw is not None else list(UVICORN_DEFAULT_TRUST)
    usable = []
    for entry in (e.strip() for e in entries):
        try:
            TrustedProxies.parse([entry])
        except ValueError:
            continue
        usable.append(entry)
    return TrustedProxies.parse(usable)


def build_api(config: ApiConfig, replicas: int | None = 1,
              scaling: ApiScaling | None = None) -> Application:
    """The API as a Serve application (not yet deployed) scaled by `scaling`, else by a fixed
    `replicas`; with neither, the replica count is left to a Serve config file's
    `deployments` entry (`num_replicas` or `autoscaling_config`)."""
    if scaling is None and replicas is not None:
        if replicas < 1:
            raise ValueError(f"replicas must be at least 1, not {replicas}")
        scaling = ApiScaling(replicas, replicas)
    actor_options: dict[str, Any] = {"num_cpus": 0}
    if config.database_url.startswith("sqlite"):
        actor_options["resources"] = dict(HEAD_NODE_RESOURCE)
    replica_options = scaling.deployment_options() if scaling is not None else {}
    # The decorators made `ApiIngress` a `Deployment`; mypy does not apply class decorators.
    deployment = cast(Deployment, ApiIngress)
    return deployment.options(max_ongoing_requests=MAX_ONGOING_REQUESTS,
                              ray_actor_options=actor_options, **replica_options).bind(config)


def deploy_api(config: ApiConfig, *, host: str = "127.0.0.1", port: int = 8000,
               replicas: int = 1, scaling: ApiScaling | None = None,
               name: str = DEFAULT_APP_NAME, timeout_s: float = READY_TIMEOUT_S) -> str:
    """Deploy (or update) the API as application `name` at the root of Serve's HTTP proxy,
    starting the proxy on `host:port` when Serve is not running yet; returns the base URL
    once `/health` answers through it. Needs a connected Ray driver (`ray.init`).

    `scaling`, when given, sets the replica count (fixed or autoscaled); else it is a fixed
    `replicas`. An autoscaled API returns once its first `min_replicas` answer.

    Serve's HTTP options are fixed for the life of a Serve instance: if one already runs on
    another port, it keeps that port and this times out naming the one that did not answer."""
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_api(config, replicas, scaling), name=name, route_prefix="/", blocking=False)
    url = f"http://{_reachable_host(host)}:{port}"
    _wait_healthy(url, timeout_s)
    return url


def shutdown_api(name: str = DEFAULT_APP_NAME) -> None:
    """Delete application `name`; stop Serve too when no application is left."""
    if name in serve.status().applications:
        serve.delete(name)
    if not serve.status().applications:
        serve.shutdown()


def app_builder(args: dict[str, Any]) -> Application:
    """The application of a Serve config file (`import_path: serve_apps.deployment:app_builder`).

    `args` are `ApiConfig`'s fields (the rate limits as `{requests, per_s}`), the signing
    secret as exactly one of `jwt_secret` or `jwt_secret_file` (a file holding it; `~` is
    expanded), and optionally `replicas`, a fixed count. Without `replicas` the config file's
    `deployments` entry for `ApiIngress` sets the count (`autoscaling_config` or
    `num_replicas`; Serve's default is one). A leading `~` in an SQLite database path is
    expanded too. Paths are resolved where Serve builds the application, normally the head
    node."""
    options = dict(args or {})
    replicas = int(options.pop("replicas")) if "replicas" in options else None
    secret = _signing_secret(options.pop("jwt_secret", None), options.pop("jwt_secret_file", None))
    unknown = sorted(set(options) - _CONFIG_ARGS)
    if unknown:
        raise ValueError(f"unknown API arguments {unknown}; known: "
                         f"{sorted(_CONFIG_ARGS | {'replicas', *_SECRET_ARGS})}")
    for name in _RATE_LIMIT_ARGS:
        if name in options:
            options[name] = RateLimit(**options[name])
    if "cors_origins" in options:
        options["cors_origins"] = tuple(options["cors_origins"])
    if "database_url" in options:
        options["database_url"] = _expand_sqlite_path(options["database_url"])
    return build_api(ApiConfig(jwt_secret=secret, **options), replicas=replicas)


def _signing_secret(secret: str | None, secret_file: str | None) -> str:
    if (secret is None) == (secret_file is None):
        raise ValueError("give exactly one of jwt_secret and jwt_secret_file")
    if secret is not None:
        return str(secret)
    path = Path(str(secret_file)).expanduser()
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ValueError(f"cannot read the signing secret file {str(path)!r}: "
                         f"{exc.strerror or exc}") from None


def _expand_sqlite_path(url: str) -> str:
    for scheme in ("sqlite:///", "sqlite+aiosqlite:///"):
        if url.startswith(scheme + "~"):
            return scheme + str(Path(url[len(scheme):]).expanduser())
    return url


def _reachable_host(host: str) -> str:
    """Where this machine reaches a proxy listening on `host` (wildcards mean loopback)."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _wait_healthy(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    problem = "no answer yet"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2.0) as response:
                if response.status == 200:
                    return
                problem = f"status {response.status}"
        except (urllib.error.URLError, OSError) as exc:
            problem = str(getattr(exc, "reason", exc))
        time.sleep(0.2)
    raise TimeoutError(f"the API did not answer at {url}/health within {timeout_s:g}s "
                       f"({problem}); is another Serve instance holding other HTTP options?")
