"""How the platform's model gateway is configured: the deployments and the gateway's policies.

Two ways to configure deployments, from the platform's settings (`cluster.settings`):

- **two settings** for one OpenAI-compatible endpoint (vLLM, Ollama, Ray Serve LLM, a hosted
  API): `YMERA_LLM_BASE_URL` and `YMERA_LLM_MODEL`, plus `YMERA_LLM_API_KEY_ENV` (the name of
  the environment variable holding its key) when the endpoint wants one. This makes one
  deployment named `default` in the model group `default`;
- **a YAML file** (`YMERA_LLM_CONFIG`) in the format of `ml.llm.config` for several
  deployments, Anthropic ones, groups and fallbacks.

Giving both is refused (it would be unclear which one wins). Giving neither means no gateway:
`llm_settings` answers None, the `llm` agent type is not registered, and `ymera status` says
how to add a model.

`LlmSettings` is a frozen, picklable value (it crosses into Ray actors): it holds where keys
come from, never a key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ml.llm.config import LlmConfig
from ml.llm.resilience import BreakerPolicy, RetryPolicy
from ml.llm.types import LlmConfigError
from storage.errors import InvalidRequest

DEFAULT_GROUP = "default"
DEFAULT_MAX_TOKENS = 1024
DEFAULT_ESTIMATE_CHARS_PER_TOKEN = 4.0


@dataclass(frozen=True)
class LlmSettings:
    """The gateway's deployments and policies.

    - `default_group`: the model group used when a request names none (the first configured
      group unless set);
    - `max_tokens`: an answer's default (and the ceiling a request may ask for is
      `max_tokens_limit`);
    - `log_prompts`: prompts and completions appear in logs only when this is true;
    - `default_budget_tokens`: every tenant's token budget per `budget_period` unless an
      operator set one for it (None: unlimited, still counted);
    - `cache_max_ttl_s`: the longest a request may ask its answer to be cached;
    - `retry`, `breaker`: the gateway's retry and circuit-breaker policies.
    """

    config: LlmConfig
    default_group: str = ""
    max_tokens: int = DEFAULT_MAX_TOKENS
    max_tokens_limit: int = 16_384
    log_prompts: bool = False
    default_budget_tokens: int | None = None
    budget_period: str = "month"
    cache_max_ttl_s: float = 86_400.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)

    def __post_init__(self) -> None:
        if not self.default_group:
            object.__setattr__(self, "default_group", self.config.groups[0])
        if self.default_group not in self.config.groups:
            raise LlmConfigError(
                f"the default model group {self.default_group!r} is not configured; "
                f"configured: {', '.join(self.config.groups)}")
        if not 1 <= self.max_tokens <= self.max_tokens_limit:
            raise LlmConfigError(
                f"max_tokens must be between 1 and max_tokens_limit ({self.max_tokens_limit}), "
                f"not {self.max_tokens}")

    @property
    def groups(self) -> tuple[str, ...]:
        return self.config.groups


def single_endpoint(base_url: str, model: str, api_key_env: str | None = None) -> LlmConfig:
    """The configuration of one OpenAI-compatible deployment `default` (group `default`)."""
    entry: dict[str, object] = {"name": DEFAULT_GROUP, "group": DEFAULT_GROUP,
                                "provider": "openai", "base_url": base_url, "model": model}
    if api_key_env:
        entry["api_key_env"] = api_key_env
    return LlmConfig.from_dict({"deployments": [entry]})


def llm_config(config_file: str | Path | None, base_url: str | None, model: str | None,
               api_key_env: str | None = None) -> LlmConfig | None:
    """The deployments the settings describe, or None when no model is configured.
    `LlmConfigError` names the setting that is wrong or missing."""
    if config_file and (base_url or model):
        raise LlmConfigError("give YMERA_LLM_CONFIG (a file of deployments) or "
                             "YMERA_LLM_BASE_URL with YMERA_LLM_MODEL, not both")
    if config_file:
        return LlmConfig.from_file(Path(config_file).expanduser())
    if bool(base_url) != bool(model):
        missing = "YMERA_LLM_MODEL" if base_url else "YMERA_LLM_BASE_URL"
        raise LlmConfigError(f"{missing} is required with "
                             f"{'YMERA_LLM_BASE_URL' if base_url else 'YMERA_LLM_MODEL'}")
    if base_url and model:
        return single_endpoint(base_url, model, api_key_env)
    if api_key_env:
        raise LlmConfigError("YMERA_LLM_API_KEY_ENV is set but no model is: "
                             "set YMERA_LLM_BASE_URL and YMERA_LLM_MODEL")
    return None


class NoModelConfigured(InvalidRequest):
    """A model call, a plan or a budget was asked of a platform that has no model configured;
    the message says how to configure one (`NO_MODEL_HINT`)."""

    code = "no_model_configured"


NO_MODEL_HINT = ("no language model is configured, so the `llm` agent and `ymera plan` are off: "
                 "set YMERA_LLM_BASE_URL and YMERA_LLM_MODEL (any OpenAI-compatible endpoint; "
                 "YMERA_LLM_API_KEY_ENV names the variable holding its key) or YMERA_LLM_CONFIG "
                 "(a YAML file of deployments), then restart with `ymera down && ymera up`")
"""What `ymera status` and refused calls say when no model is configured."""
