"""Model deployments and groups, configured from a mapping or a YAML document.

A *deployment* is one model behind one endpoint (`name`, unique); a *group* is what users ask for
(`group`), served by its deployments in the order they are listed, then by the deployments of the
groups named in `fallbacks[group]`, in that order (one level: a fallback group's own fallbacks are
not followed).

    deployments:
      - name: gpt-primary            # deployment id
        group: chat                  # model group users ask for
        provider: openai             # "openai" (any OpenAI-compatible endpoint) | "anthropic"
        base_url: https://api.openai.com/v1   # OpenAI-compatible: include the /v1 prefix
        model: gpt-4o-mini           # the provider's model id
        api_key_env: OPENAI_API_KEY  # or api_key_file: /run/secrets/openai
        rpm: 500                     # optional rate limits (requests, tokens per minute)
        tpm: 200000
        input_price_per_mtok: 0.15   # price per million tokens (default 0)
        output_price_per_mtok: 0.60
        timeout_s: 30                # default 60
    fallbacks:
      chat: [chat-backup]

Guarantees: a configuration that loads is complete and consistent (every error names the
deployment and the field; unknown fields are refused, so typos do not pass silently). Keys are read
lazily, when a provider is built, and only ever held in a `Secret`, whose repr and str hide the
value; a key that cannot be read is an `LlmConfigError` naming the environment variable or the file,
never its content. An OpenAI-compatible deployment may have no key (local vLLM, Ollama); an
Anthropic one must have one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from ml.llm.types import LlmConfigError, Usage

PROVIDERS: Final = ("openai", "anthropic")
DEFAULT_TIMEOUT_S: Final = 60.0
_DEPLOYMENT_FIELDS: Final = frozenset({
    "name", "group", "provider", "base_url", "model", "api_key_env", "api_key_file", "rpm", "tpm",
    "input_price_per_mtok", "output_price_per_mtok", "timeout_s",
})
_TOP_FIELDS: Final = frozenset({"deployments", "fallbacks"})


class Secret:
    """A value that must not leak: its repr and str are masked; `reveal()` hands it to an SDK."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> Any:
        raise TypeError("a Secret is not pickled; ship the deployment and resolve the key there")


@dataclass(frozen=True)
class KeySource:
    """Where a deployment's key is read from: an environment variable or a secret file."""

    env: str | None = None
    file: Path | None = None

    def resolve(self, deployment: str, environ: Mapping[str, str] | None = None) -> Secret:
        if self.env is not None:
            value = (os.environ if environ is None else environ).get(self.env, "").strip()
            if not value:
                raise LlmConfigError(
                    f"deployment {deployment!r}: environment variable {self.env} (api_key_env) "
                    "is not set or empty")
            return Secret(value)
        assert self.file is not None
        try:
            value = self.file.read_text().strip()
        except OSError as exc:
            raise LlmConfigError(
                f"deployment {deployment!r}: cannot read api_key_file {str(self.file)!r} "
                f"({exc.strerror or type(exc).__name__})") from None
        if not value:
            raise LlmConfigError(f"deployment {deployment!r}: api_key_file {str(self.file)!r} is empty")
        return Secret(value)


@dataclass(frozen=True)
class Deployment:
    """One model behind one endpoint. Holds where its key comes from, never the key."""

    name: str
    group: str
    provider: str
    base_url: str
    model: str
    key_source: KeySource | None = None
    rpm: int | None = None
    tpm: int | None = None
    input_price_per_mtok: float = 0.0
    output_price_per_mtok: float = 0.0
    timeout_s: float = DEFAULT_TIMEOUT_S

    def api_key(self, environ: Mapping[str, str] | None = None) -> Secret | None:
        """The key, read now (None when the deployment needs none); `LlmConfigError` if unreadable."""
        return None if self.key_source is None else self.key_source.resolve(self.name, environ)

    def cost(self, usage: Usage) -> float:
        """What `usage` costs at this deployment's prices."""
        return (usage.input_tokens * self.input_price_per_mtok
                + usage.output_tokens * self.output_price_per_mtok) / 1_000_000


@dataclass(frozen=True)
class LlmConfig:
    """The configured deployments and the fallback order of each group."""

    deployments: tuple[Deployment, ...]
    fallbacks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LlmConfig:
        return _parse(data)

    @classmethod
    def from_yaml(cls, text: str) -> LlmConfig:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise LlmConfigError(f"model configuration is not valid YAML: {exc}") from None
        return _parse(data)

    @classmethod
    def from_file(cls, path: str | Path) -> LlmConfig:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise LlmConfigError(
                f"cannot read model configuration {str(path)!r} ({exc.strerror or type(exc).__name__})"
            ) from None
        return cls.from_yaml(text)

    @property
    def groups(self) -> tuple[str, ...]:
        """Group names, in the order they first appear."""
        return tuple(dict.fromkeys(d.group for d in self.deployments))

    def deployment(self, name: str) -> Deployment:
        for candidate in self.deployments:
            if candidate.name == name:
                return candidate
        raise LlmConfigError(f"no deployment named {name!r}")

    def route(self, group: str) -> tuple[Deployment, ...]:
        """The deployments that serve `group`, in the order to try them (fallbacks last)."""
        if group not in self.groups:
            raise LlmConfigError(f"no model group named {group!r}; configured: {', '.join(self.groups)}")
        order = [group, *self.fallbacks.get(group, ())]
        return tuple(d for g in order for d in self.deployments if d.group == g)

    def check_keys(self, environ: Mapping[str, str] | None = None) -> None:
        """Read every key now; one `LlmConfigError` listing every deployment whose key is unreadable."""
        problems = []
        for deployment in self.deployments:
            try:
                deployment.api_key(environ)
            except LlmConfigError as exc:
                problems.append(exc.message)
        if problems:
            raise LlmConfigError("; ".join(problems))


def _parse(data: object) -> LlmConfig:
    if not isinstance(data, Mapping):
        raise LlmConfigError("model configuration must be a mapping with a 'deployments' list")
    unknown = sorted(set(data) - _TOP_FIELDS)
    if unknown:
        raise LlmConfigError(f"model configuration: unknown field(s) {', '.join(map(str, unknown))}")
    entries = data.get("deployments")
    if not isinstance(entries, list) or not entries:
        raise LlmConfigError("model configuration: 'deployments' must be a non-empty list")
    deployments = tuple(_deployment(entry, index) for index, entry in enumerate(entries))
    seen: set[str] = set()
    for deployment in deployments:
        if deployment.name in seen:
            raise LlmConfigError(f"deployment {deployment.name!r}: name is used twice")
        seen.add(deployment.name)
    return LlmConfig(deployments, _fallbacks(data.get("fallbacks"), {d.group for d in deployments}))


def _deployment(entry: object, index: int) -> Deployment:
    if not isinstance(entry, Mapping):
        raise LlmConfigError(f"deployments[{index}] must be a mapping")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise LlmConfigError(f"deployments[{index}]: 'name' is required (a non-empty string)")
    where = f"deployment {name!r}"
    unknown = sorted(set(entry) - _DEPLOYMENT_FIELDS)
    if unknown:
        raise LlmConfigError(f"{where}: unknown field(s) {', '.join(map(str, unknown))}")

    def text(key: str) -> str:
        value = entry.get(key)
        if not isinstance(value, str) or not value.strip():
            raise LlmConfigError(f"{where}: '{key}' is required (a non-empty string)")
        return value.strip()

    def number(key: str, default: float | None, *, integer: bool = False,
               positive: bool = False) -> Any:
        value = entry.get(key, default)
        if value is None:
            return None
        wrong_type = isinstance(value, bool) or not isinstance(value, int if integer else (int, float))
        if wrong_type or value < 0 or (positive and value == 0):
            kind = "an integer" if integer else "a number"
            bound = "> 0" if positive else ">= 0"
            raise LlmConfigError(f"{where}: '{key}' must be {kind} {bound}, got {value!r}")
        return value if integer else float(value)

    provider = text("provider")
    if provider not in PROVIDERS:
        raise LlmConfigError(f"{where}: 'provider' must be one of {', '.join(PROVIDERS)}, got {provider!r}")
    base_url = text("base_url")
    if not base_url.startswith(("http://", "https://")):
        raise LlmConfigError(f"{where}: 'base_url' must be an http:// or https:// URL, got {base_url!r}")
    return Deployment(
        name=name.strip(), group=text("group"), provider=provider, base_url=base_url.rstrip("/"),
        model=text("model"), key_source=_key_source(entry, where, provider),
        rpm=number("rpm", None, integer=True, positive=True),
        tpm=number("tpm", None, integer=True, positive=True),
        input_price_per_mtok=number("input_price_per_mtok", 0.0),
        output_price_per_mtok=number("output_price_per_mtok", 0.0),
        timeout_s=number("timeout_s", DEFAULT_TIMEOUT_S, positive=True),
    )


def _key_source(entry: Mapping[str, Any], where: str, provider: str) -> KeySource | None:
    env, file = entry.get("api_key_env"), entry.get("api_key_file")
    if env is not None and file is not None:
        raise LlmConfigError(f"{where}: give 'api_key_env' or 'api_key_file', not both")
    if env is not None:
        if not isinstance(env, str) or not env.strip():
            raise LlmConfigError(f"{where}: 'api_key_env' must be an environment variable name")
        return KeySource(env=env.strip())
    if file is not None:
        if not isinstance(file, str) or not file.strip():
            raise LlmConfigError(f"{where}: 'api_key_file' must be a file path")
        return KeySource(file=Path(file.strip()))
    if provider == "anthropic":
        raise LlmConfigError(f"{where}: provider 'anthropic' needs 'api_key_env' or 'api_key_file'")
    return None


def _fallbacks(raw: object, groups: set[str]) -> dict[str, tuple[str, ...]]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise LlmConfigError("model configuration: 'fallbacks' must map a group to a list of groups")
    result: dict[str, tuple[str, ...]] = {}
    for group, others in raw.items():
        if group not in groups:
            raise LlmConfigError(f"fallbacks: {group!r} is not a configured group")
        if not isinstance(others, list) or not all(isinstance(o, str) for o in others):
            raise LlmConfigError(f"fallbacks[{group!r}] must be a list of group names")
        for other in others:
            if other == group:
                raise LlmConfigError(f"fallbacks[{group!r}]: a group cannot fall back to itself")
            if other not in groups:
                raise LlmConfigError(f"fallbacks[{group!r}]: {other!r} is not a configured group")
        result[group] = tuple(dict.fromkeys(others))
    return result
