"""The platform's settings: one validated object, read from `YMERA_*` environment variables
(and a `.env` file in the working directory) here and nowhere else.

Nested values are JSON, e.g. `YMERA_POOLS='{"calculator": {"replicas": 4}}'` and
`YMERA_AGENT_MODULES='["my_agents.translate:Translator"]'`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from actors.config import (
    DEFAULT_NAMESPACE, AutoscaleConfig, OrchestratorConfig, PoolConfig, WebhookSettings)
from actors.retry import RetryPolicy
from ml.config import ML_RESOURCE, RouterConfig
from storage.workflow_spec import WorkflowLimits

if TYPE_CHECKING:
    from ml.llm.settings import LlmSettings
    from serve_apps.api_config import ApiConfig

RESERVED_PORTS = {6379}
JWT_SECRET_FILE = "jwt-secret"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="YMERA_", env_file=".env", extra="ignore")

    state_dir: Path = Field(default=Path("~/.ymera"),
                            description="Where the embedded database, logs and secrets live.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default SQLite in the state directory.")
    redis_url: str | None = Field(
        default=None, description="Redis shared by API replicas; unset = in-process equivalents.")
    ray_address: str | None = Field(
        default=None, description="Ray cluster to join; unset = `ymera up` starts a local one.")
    namespace: str = Field(default=DEFAULT_NAMESPACE, pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    ray_port: int = Field(default=6380, ge=1024, le=65535,
                          description="GCS port of a local head (6379 is Redis's).")
    dashboard_port: int = Field(default=8265, ge=1024, le=65535)
    metrics_host: str = Field(
        default="127.0.0.1", description="Where the orchestrator serves its Prometheus metrics "
        "(0.0.0.0 on a cluster's head node, for a Prometheus elsewhere).")
    metrics_port: int = Field(
        default=9464, ge=0, le=65535, description="Port of the orchestrator's metrics endpoint "
        "(0 = any free port, shown by `ymera status`).")
    ray_metrics_port: int = Field(
        default=8080, ge=1024, le=65535, description="Metrics port of a local head started by "
        "`ymera up` (Ray's own and the API's metrics).")
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto", description="auto = text on a terminal, JSON lines otherwise (actors "
        "always write to files, so JSON).")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO")
    num_cpus: int | None = Field(default=None, ge=1, description="CPUs of a local head.")
    head_resources: dict[str, float] = Field(
        default_factory=lambda: {"ml": 8.0}, description="Custom resources a local head "
        "advertises: `ml` lets the router and the ML agents, which ask for it, run on one "
        "machine.")
    agent_modules: list[str] = Field(default_factory=list)
    default_replicas: int | None = Field(
        default=None, ge=0, le=256, description="Replicas per type; unset = each type's own.")
    pools: dict[str, PoolConfig] = Field(default_factory=dict)
    task_timeout_s: float = Field(default=300.0, gt=0)
    max_task_timeout_s: float = Field(default=3600.0, gt=0)
    retry_max_attempts: int = Field(default=3, ge=1, le=20)
    retry_backoff_base_s: float = Field(default=0.5, ge=0)
    retry_backoff_max_s: float = Field(default=30.0, ge=0)
    retry_jitter: float = Field(default=0.5, ge=0, le=1)
    queue_max: int = Field(default=10_000, ge=1)
    tenant_queue_max: int = Field(
        default=5_000, ge=1, description="Tasks one tenant may have waiting; more is QueueFull "
        "for that tenant only (at least queue_max: no per-tenant quota).")
    health_interval_s: float = Field(default=2.0, gt=0)
    pool_upscale_delay_s: float = Field(
        default=0.0, ge=0, description="How long a pool's backlog must want more replicas "
        "before the pool grows.")
    pool_downscale_delay_s: float = Field(
        default=60.0, ge=0, description="How long a pool's backlog must want fewer replicas "
        "(the idle period) before surplus replicas drain and stop.")
    replica_start_timeout_s: float = Field(
        default=600.0, gt=0, description="How long a new replica may take to start, including "
        "waiting for the Ray autoscaler to add a node that has its resources.")
    health_timeout_s: float = Field(default=5.0, gt=0)
    max_payload_bytes: int = Field(default=1_000_000, ge=1024)
    max_payload_depth: int = Field(
        default=64, ge=1, le=128, description="How deep JSON may nest in a task's payload, "
        "an agent's result and a request body; deeper is refused naming the path.")
    webhook_secret: SecretStr | None = Field(
        default=None, description="The key the communication agent signs its webhooks with "
        "(Standard Webhooks; a whsec_ secret, or any string used as its bytes).")
    webhook_allow_private_networks: bool = Field(
        default=False, description="Allow webhooks to loopback/private addresses (SSRF guard).")
    webhook_allowed_networks: str = Field(
        default="", description="Comma-separated networks (CIDR, e.g. 10.8.0.0/16,"
        "127.0.0.1/32) whose addresses may receive webhooks although private; every other "
        "private address is still refused.")
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=300)
    webhook_retry_period_s: float = Field(
        default=86_400.0, gt=0, le=30 * 24 * 3600.0, description="How long after its event a "
        "webhook delivery is retried before it fails.")
    webhook_retry_base_s: float = Field(
        default=5.0, gt=0, le=3600, description="The first retry's backoff bound; it doubles "
        "per attempt (full jitter).")
    webhook_retry_max_s: float = Field(
        default=3600.0, gt=0, le=24 * 3600.0, description="The longest pause between two "
        "attempts at a webhook delivery (a receiver's Retry-After included).")
    webhook_max_in_flight: int = Field(
        default=32, ge=1, le=10_000, description="Webhook deliveries sent at once.")
    webhook_max_attempts: int = Field(default=3, ge=1, le=10)
    knowledge_memory_mb: int = Field(
        default=512, ge=16, le=1_048_576, description="Memory each knowledge replica may "
        "hold in collections; least recently used ones are evicted past it.")
    knowledge_max_upload_mb: int = Field(
        default=20, ge=1, le=1024, description="Largest document the knowledge agent "
        "ingests (the HTTP upload limit; larger is 413).")
    router_enabled: bool = Field(
        default=True, description="Route tasks that name no agent type with the ML router.")
    router_fallback_agent_type: str | None = Field(
        default=None, description="Takes tasks no type is a confident match for; unset = "
        "they fail with no_confident_route.")
    router_min_similarity: float | None = Field(
        default=None, ge=0, le=1, description="Override the calibrated similarity threshold.")
    router_min_confidence: float | None = Field(
        default=None, ge=0, le=1, description="Override the calibrated confidence threshold.")
    router_learn: bool = Field(
        default=True, description="Learn examples from tasks that succeed on confident routes.")
    router_learn_min_confidence: float = Field(default=0.8, ge=0, le=1)
    router_max_learned_per_type: int = Field(default=1000, ge=0, le=100_000)
    router_tenant_cache_examples: int = Field(
        default=50_000, ge=1, le=10_000_000,
        description="Tenants' learned and feedback examples the router keeps indexed in memory "
        "(plus one per tenant); the least recently used tenants beyond it reload from storage.")
    router_resources: dict[str, float] = Field(
        default_factory=lambda: dict(ML_RESOURCE), description="Custom Ray resources the "
        "router asks for (with PostgreSQL; on SQLite it runs on the head).")
    shared_embeddings: bool = Field(
        default=True, description="Agent replicas encode texts with the model the router holds "
        "(one copy of torch and the model); false = each replica that embeds loads its own.")
    jwt_secret: SecretStr | None = Field(
        default=None, description="HS256 signing key of the API's tokens (32+ bytes); unset = "
        "generated into the state directory (mode 0600) on first use.")
    jwt_issuer: str = Field(default="ymera", min_length=1)
    jwt_audience: str = Field(default="ymera-api", min_length=1)
    cors_origins: list[str] = Field(default_factory=list,
                                    description="Origins the API allows; none by default.")
    api_enabled: bool = Field(default=True, description="`ymera up` deploys the HTTP API.")
    api_host: str = Field(default="127.0.0.1", description="Where Serve's HTTP proxy listens.")
    api_port: int = Field(default=8000, ge=1024, le=65535)
    api_replicas: int = Field(default=1, ge=1, le=64,
                              description="API replicas (the fewest, when autoscaling).")
    api_max_replicas: int | None = Field(
        default=None, ge=1, le=64, description="Most API replicas: above api_replicas, Serve "
        "autoscales between the two; unset = a fixed api_replicas.")
    api_target_ongoing_requests: float = Field(
        default=32.0, gt=0, le=100, description="Ongoing requests per API replica Serve aims "
        "at when autoscaling.")
    api_auth_cache_s: float = Field(
        default=5.0, ge=0, le=300, description="How long an API replica may use a user or API "
        "key it read; a revocation made on another replica applies within this. 0 = read on "
        "every request.")
    api_trusted_proxies: list[str] = Field(
        default_factory=list, description="Addresses or networks (CIDR) of the reverse "
        "proxies whose X-Forwarded-For names the caller; none by default: the socket peer is "
        "the caller.")
    api_max_streams_per_caller: int = Field(
        default=8, ge=1, le=1000, description="Event streams (SSE) one user or API key may "
        "hold open at once on one API replica.")
    workflow_max_steps: int = Field(
        default=200, ge=1, le=10_000, description="Steps a workflow may have; a bigger one is "
        "refused at submission.")
    workflow_max_fan_out: int = Field(
        default=1000, ge=1, le=100_000, description="Items one mapped (fan-out) step may run "
        "over; a workflow asking for more is refused, a longer list at run time fails the step.")
    workflow_max_parallelism: int = Field(
        default=64, ge=1, le=10_000, description="Items of one mapped step that may run at "
        "once.")
    workflow_max_output_bytes: int = Field(
        default=262_144, ge=1024, le=100_000_000, description="Size of a step's output (as "
        "JSON) that later steps may reference.")
    workflow_max_run_duration_s: float = Field(
        default=604_800.0, gt=0, le=366 * 24 * 3600.0, description="How long a run may last, "
        "approvals and timers included; also the bound of any wait in it.")
    workflow_retention_s: float = Field(
        default=2_592_000.0, ge=60, description="Finished workflow runs (and their steps and "
        "events) older than this are purged.")
    workflow_purge_interval_s: float = Field(
        default=3600.0, ge=10, le=7 * 24 * 3600.0, description="How often the orchestrator "
        "purges finished runs past their retention.")
    llm_base_url: str | None = Field(
        default=None, description="An OpenAI-compatible endpoint (with its /v1) for the model "
        "gateway; with llm_model, turns on the `llm` agent and `ymera plan`.")
    llm_model: str | None = Field(default=None, description="The model id at llm_base_url.")
    llm_api_key_env: str | None = Field(
        default=None, description="The name of the environment variable holding llm_base_url's "
        "key (the key itself is never a setting); unset for endpoints without one.")
    llm_config: Path | None = Field(
        default=None, description="A YAML file of model deployments, groups and fallbacks "
        "(docs/llm.md); instead of llm_base_url and llm_model.")
    llm_default_group: str | None = Field(
        default=None, description="The model group used when a request names none (default: "
        "the first configured).")
    llm_max_tokens: int = Field(default=1024, ge=1, le=16_384,
                                description="An answer's length limit when a request sets none.")
    llm_log_prompts: bool = Field(
        default=False, description="Write prompts and completions to the logs (off: they never "
        "appear there).")
    llm_budget_tokens: int | None = Field(
        default=None, ge=1, description="Each tenant's token budget per llm_budget_period "
        "unless an operator set its own (unset: unlimited, still counted).")
    llm_budget_period: Literal["month", "day", "total"] = Field(
        default="month", description="The period token budgets count over (UTC).")

    @field_validator("api_trusted_proxies")
    @classmethod
    def _proxy_addresses(cls, entries: list[str]) -> list[str]:
        from serve_apps.client_address import TrustedProxies

        return list(TrustedProxies.parse(entries).networks_text)  # ValueError names the entry

    @field_validator("webhook_allowed_networks")
    @classmethod
    def _webhook_networks(cls, entries: str) -> str:
        from actors.agents.webhook_addresses import parse_networks

        return ",".join(str(n) for n in parse_networks(entries))  # ValueError names the entry

    @field_validator("ray_port", "dashboard_port", "api_port", "metrics_port",
                     "ray_metrics_port")
    @classmethod
    def _not_reserved(cls, port: int) -> int:
        if port in RESERVED_PORTS:
            raise ValueError(f"port {port} is Redis's default; choose another")
        return port

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.task_timeout_s > self.max_task_timeout_s:
            raise ValueError("task_timeout_s cannot exceed max_task_timeout_s")
        if self.api_max_replicas is not None and self.api_max_replicas < self.api_replicas:
            raise ValueError("api_max_replicas cannot be below api_replicas")
        if self.webhook_retry_max_s < self.webhook_retry_base_s:
            raise ValueError("webhook_retry_max_s cannot be below webhook_retry_base_s")
        ports = {"ray_port": self.ray_port, "dashboard_port": self.dashboard_port,
                 "api_port": self.api_port, "ray_metrics_port": self.ray_metrics_port,
                 "metrics_port": self.metrics_port}
        taken: dict[int, str] = {}
        for name, port in ports.items():
            if port and port in taken:
                raise ValueError(f"{name} and {taken[port]} are both {port}; give each its own")
            taken[port] = name
        return self

    @property
    def state_path(self) -> Path:
        return self.state_dir.expanduser().resolve()

    def private_state_path(self) -> Path:
        """The state directory, created with mode 0700, or tightened to it if the group or
        others may read it (it holds the database and the JWT signing secret)."""
        from storage.private_files import private_directory

        return private_directory(self.state_path)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.state_path / 'ymera.db'}"

    def orchestrator_config(self) -> OrchestratorConfig:
        return OrchestratorConfig(
            database_url=self.resolved_database_url,
            namespace=self.namespace,
            agent_modules=tuple(self.agent_modules),
            default_replicas=self.default_replicas,
            pools=dict(self.pools),
            default_timeout_s=self.task_timeout_s,
            max_timeout_s=self.max_task_timeout_s,
            retry=RetryPolicy(self.retry_max_attempts, self.retry_backoff_base_s,
                              self.retry_backoff_max_s, self.retry_jitter),
            queue_max=self.queue_max,
            tenant_queue_max=(self.tenant_queue_max
                              if self.tenant_queue_max < self.queue_max else None),
            health_interval_s=self.health_interval_s,
            autoscale=AutoscaleConfig(self.pool_upscale_delay_s, self.pool_downscale_delay_s),
            replica_start_timeout_s=self.replica_start_timeout_s,
            health_timeout_s=self.health_timeout_s,
            max_payload_bytes=self.max_payload_bytes,
            max_payload_depth=self.max_payload_depth,
            agent_settings=self.agent_settings(),
            router=self.router_config(),
            redis_url=self.redis_url,
            metrics_host=self.metrics_host,
            metrics_port=self.metrics_port,
            log_format=self.log_format,
            log_level=self.log_level,
            workflow_limits=self.workflow_limits(),
            workflow_retention_s=self.workflow_retention_s,
            workflow_purge_interval_s=self.workflow_purge_interval_s,
            llm=self.llm_settings(),
            webhooks=self.webhook_settings(),
        )

    def webhook_settings(self) -> WebhookSettings:
        """How events go out: retries, timeouts and where receivers may be."""
        return WebhookSettings(
            retry_period_s=self.webhook_retry_period_s,
            retry_base_s=self.webhook_retry_base_s,
            retry_max_s=self.webhook_retry_max_s,
            timeout_s=self.webhook_timeout_s,
            max_in_flight=self.webhook_max_in_flight,
            allow_private_networks=self.webhook_allow_private_networks,
            allowed_networks=tuple(n for n in self.webhook_allowed_networks.split(",") if n),
        )

    def llm_settings(self) -> LlmSettings | None:
        """The model gateway's configuration, or None when no model is configured."""
        from ml.llm.settings import LlmSettings, llm_config

        config = llm_config(self.llm_config, self.llm_base_url, self.llm_model,
                            self.llm_api_key_env)
        if config is None:
            return None
        return LlmSettings(config, default_group=self.llm_default_group or "",
                           max_tokens=self.llm_max_tokens, log_prompts=self.llm_log_prompts,
                           default_budget_tokens=self.llm_budget_tokens,
                           budget_period=self.llm_budget_period)

    def workflow_limits(self) -> WorkflowLimits:
        """The bounds every submitted workflow is compiled against (a spec may ask for less).
        A step's timeout is a task's, so it is bounded by `max_task_timeout_s` too: a workflow
        asking for more is refused at submission, not when the step runs."""
        return WorkflowLimits(
            max_steps=self.workflow_max_steps,
            max_fan_out=self.workflow_max_fan_out,
            max_parallelism=self.workflow_max_parallelism,
            # a step's output travels on in later steps' payloads: the smaller bound applies
            max_output_bytes=min(self.workflow_max_output_bytes, self.max_payload_bytes),
            max_run_duration_s=self.workflow_max_run_duration_s,
            max_step_timeout_s=min(self.max_task_timeout_s, self.workflow_max_run_duration_s),
        )

    def router_config(self) -> RouterConfig:
        """Routing settings; thresholds from `ymera route --calibrate` (in the state directory)
        unless set here."""
        from cluster.routing import load_policy

        fitted = load_policy(self.state_path)
        return RouterConfig(
            enabled=self.router_enabled,
            min_similarity=self.router_min_similarity if self.router_min_similarity is not None
            else fitted.min_similarity,
            min_confidence=self.router_min_confidence if self.router_min_confidence is not None
            else fitted.min_confidence,
            fallback_agent_type=self.router_fallback_agent_type,
            learn=self.router_learn,
            learn_min_confidence=self.router_learn_min_confidence,
            max_learned_per_type=self.router_max_learned_per_type,
            tenant_cache_examples=self.router_tenant_cache_examples,
            resources=dict(self.router_resources),
        )

    def signing_secret(self) -> str:
        """The API's JWT signing secret: the configured one, else the state directory's
        (generated on first use, readable only by its owner)."""
        if self.jwt_secret is not None:
            return self.jwt_secret.get_secret_value()
        from serve_apps.tokens import generate_signing_secret

        path = self.state_path / JWT_SECRET_FILE
        if not path.exists():
            self.private_state_path()
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as file:
                file.write(generate_signing_secret())
        return path.read_text().strip()

    def api_config(self) -> ApiConfig:
        from serve_apps.api_config import ApiConfig

        return ApiConfig(jwt_secret=self.signing_secret(), namespace=self.namespace,
                         database_url=self.resolved_database_url, redis_url=self.redis_url,
                         issuer=self.jwt_issuer, audience=self.jwt_audience,
                         cors_origins=tuple(self.cors_origins),
                         auth_cache_s=self.api_auth_cache_s,
                         max_payload_depth=self.max_payload_depth,
                         trusted_proxies=tuple(self.api_trusted_proxies),
                         max_streams_per_caller=self.api_max_streams_per_caller,
                         knowledge_max_upload_bytes=self.knowledge_max_upload_mb * 1024 * 1024,
                         log_format=self.log_format, log_level=self.log_level)

    def agent_settings(self) -> dict[str, object]:
        """The settings agents see (through `AgentContext.settings`)."""
        return {
            "webhook_secret": self.webhook_secret.get_secret_value()
            if self.webhook_secret else None,
            "webhook_allow_private_networks": self.webhook_allow_private_networks,
            "webhook_allowed_networks": self.webhook_allowed_networks,
            "webhook_timeout_s": self.webhook_timeout_s,
            "webhook_max_attempts": self.webhook_max_attempts,
            "knowledge_memory_bytes": self.knowledge_memory_mb * 1024 * 1024,
            "knowledge_max_upload_bytes": self.knowledge_max_upload_mb * 1024 * 1024,
            "shared_embeddings": self.shared_embeddings,
        }
