"""The HTTP API's settings: one validated, immutable object built once at start.

Guarantees: an `ApiConfig` that exists is usable. Its signing secret passed
`tokens.check_signing_secret` (a weak or placeholder secret is refused at construction, never
at the first login), every limit is positive, and CORS allows no origin unless one is listed.
The secret never appears in `repr`.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Final

from actors.config import DEFAULT_NAMESPACE
from actors.logs import FORMATS as LOG_FORMATS
from serve_apps.client_address import TrustedProxies
from serve_apps.rate_limit import RateLimit
from serve_apps.tokens import check_signing_secret
from storage.storable import MAX_DEPTH_CEILING

DEFAULT_MAX_BODY_BYTES: Final = 1024 * 1024 + 64 * 1024  # 1 MiB payloads plus their envelope
_LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?")


@dataclasses.dataclass(frozen=True)
class ApiConfig:
    """Everything the ingress needs to know. `redis_url=None` means in-process equivalents
    (one node only: rate limits are then per API replica). `auth_cache_s`: how long a replica
    may use a user or API key record it read (see `serve_apps.credential_cache`).
    `log_format`/`log_level`: how each replica process logs (see `actors.logs`).
    `trusted_proxies`: the addresses and networks (CIDR) of the reverse proxies whose
    `X-Forwarded-For` names the caller; none by default, so the socket peer is the caller
    (see `serve_apps.client_address`). `failed_auth_rate_limit`: failed authentications
    (any 401, failed logins) one client address may cause before it is answered 429.
    `login_free_failures`/`login_max_delay_s`: an account's failed logins before each further
    one makes it wait, twice as long each time, at most that long (`serve_apps.login_throttle`).
    `max_streams_per_caller`: a caller's concurrent SSE streams on one replica.
    `knowledge_max_upload_bytes`: the largest document upload (a larger body is 413)."""

    jwt_secret: str = dataclasses.field(repr=False)
    namespace: str = DEFAULT_NAMESPACE
    database_url: str = "sqlite:///ymera.db"
    redis_url: str | None = None
    issuer: str = "ymera"
    audience: str = "ymera-api"
    access_ttl_s: int = 900
    refresh_ttl_s: int = 14 * 86400
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_payload_depth: int = 64  # JSON nesting of a body below its top level (storage.storable)
    cors_origins: tuple[str, ...] = ()
    key_rate_limit: RateLimit = RateLimit(requests=120, per_s=60.0)
    tenant_rate_limit: RateLimit = RateLimit(requests=1200, per_s=60.0)
    failed_auth_rate_limit: RateLimit = RateLimit(requests=30, per_s=300.0)
    trusted_proxies: tuple[str, ...] = ()
    login_free_failures: int = 5
    login_max_delay_s: float = 900.0
    max_streams_per_caller: int = 8
    knowledge_max_upload_bytes: int = 20 * 1024 * 1024  # a document upload (routes.knowledge)
    wait_max_s: float = 30.0
    auth_cache_s: float = 5.0
    log_format: str = "auto"
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        check_signing_secret(self.jwt_secret)
        for name in ("issuer", "audience", "namespace", "database_url"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty string")
        for name in ("access_ttl_s", "refresh_ttl_s", "max_body_bytes", "login_free_failures",
                     "max_streams_per_caller"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive whole number")
        if not 1 <= self.max_payload_depth <= MAX_DEPTH_CEILING:
            raise ValueError(f"max_payload_depth must be from 1 to {MAX_DEPTH_CEILING}")
        if not 0 <= self.auth_cache_s <= 300:
            raise ValueError("auth_cache_s must be between 0 and 300 seconds")
        if not 1 <= self.login_max_delay_s <= 86400:
            raise ValueError("login_max_delay_s must be between 1 and 86400 seconds")
        if isinstance(self.trusted_proxies, str):
            raise ValueError("trusted_proxies must be a sequence of addresses, not one string")
        object.__setattr__(self, "trusted_proxies",
                           TrustedProxies.parse(self.trusted_proxies).networks_text)
        if not 0 < self.wait_max_s <= 300:
            raise ValueError("wait_max_s must be above 0 and at most 300 seconds")
        if self.log_format not in LOG_FORMATS:
            raise ValueError(f"log_format must be one of {', '.join(LOG_FORMATS)}")
        if not isinstance(self.log_level, str) or self.log_level.upper() not in _LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(_LOG_LEVELS)}")
        object.__setattr__(self, "log_level", self.log_level.upper())
        if isinstance(self.cors_origins, str):
            raise ValueError("cors_origins must be a sequence of origins, not one string")
        object.__setattr__(self, "cors_origins", tuple(self.cors_origins))
        for origin in self.cors_origins:
            if not _ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"CORS origin {origin!r} must be scheme://host[:port] ('*' is not allowed)")
