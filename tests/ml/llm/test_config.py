"""Model configuration: what loads, the order deployments are tried in, and errors that name the
deployment and the field (or the key's variable / file), never the key."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path
from typing import Any

import pytest

from ml.llm.config import LlmConfig, Secret
from ml.llm.types import LlmConfigError, Usage

KEY = "sk-config-test-Jx81Qw0pLm"

YAML = """
deployments:
  - name: gpt-primary
    group: chat
    provider: openai
    base_url: https://api.example.com/v1/
    model: gpt-small
    api_key_env: TEST_OPENAI_KEY
    rpm: 500
    tpm: 200000
    input_price_per_mtok: 0.15
    output_price_per_mtok: 0.6
    timeout_s: 30
  - name: local-vllm
    group: chat
    provider: openai
    base_url: http://127.0.0.1:8000/v1
    model: qwen
  - name: claude
    group: chat-backup
    provider: anthropic
    base_url: https://anthropic.example.com
    model: claude-small
    api_key_file: {key_file}
  - name: summarizer
    group: summarize
    provider: openai
    base_url: http://127.0.0.1:8001/v1
    model: tiny
fallbacks:
  chat: [chat-backup]
  summarize: [chat, chat-backup]
"""


def base() -> dict[str, Any]:
    return {"deployments": [{"name": "gpt-a", "group": "chat", "provider": "openai",
                             "base_url": "http://127.0.0.1:1/v1", "model": "m",
                             "api_key_env": "TEST_OPENAI_KEY"}]}


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "anthropic.key"
    path.write_text(KEY + "\n")
    return path


def test_a_full_configuration_loads_with_its_values(key_file):
    config = LlmConfig.from_yaml(YAML.format(key_file=key_file))
    primary = config.deployment("gpt-primary")
    assert (primary.rpm, primary.tpm, primary.timeout_s) == (500, 200000, 30.0)
    assert primary.base_url == "https://api.example.com/v1"
    assert config.deployment("local-vllm").timeout_s == 60.0
    assert config.deployment("local-vllm").api_key() is None
    assert config.groups == ("chat", "chat-backup", "summarize")


def test_a_group_is_served_in_list_order_then_by_its_fallback_groups(key_file):
    config = LlmConfig.from_yaml(YAML.format(key_file=key_file))
    assert [d.name for d in config.route("chat")] == ["gpt-primary", "local-vllm", "claude"]
    assert [d.name for d in config.route("chat-backup")] == ["claude"]
    assert [d.name for d in config.route("summarize")] == [
        "summarizer", "gpt-primary", "local-vllm", "claude"]
    with pytest.raises(LlmConfigError, match="no model group named 'vision'"):
        config.route("vision")


def test_cost_follows_the_price_per_million_tokens(key_file):
    primary = LlmConfig.from_yaml(YAML.format(key_file=key_file)).deployment("gpt-primary")
    assert primary.cost(Usage(input_tokens=1_000_000, output_tokens=500_000)) == pytest.approx(0.45)


def test_keys_are_read_lazily_and_never_shown(key_file, monkeypatch):
    monkeypatch.delenv("TEST_OPENAI_KEY", raising=False)
    config = LlmConfig.from_yaml(YAML.format(key_file=key_file))  # loads without the variable
    with pytest.raises(LlmConfigError) as caught:
        config.deployment("gpt-primary").api_key()
    assert "gpt-primary" in str(caught.value) and "TEST_OPENAI_KEY" in str(caught.value)

    monkeypatch.setenv("TEST_OPENAI_KEY", KEY)
    secret = config.deployment("gpt-primary").api_key()
    assert isinstance(secret, Secret) and secret.reveal() == KEY
    claude_key = config.deployment("claude").api_key()
    assert claude_key is not None and claude_key.reveal() == KEY  # the file, newline stripped
    for shown in (repr(secret), str(secret), f"{secret}", repr(config), str(config)):
        assert KEY not in shown
    with pytest.raises(TypeError):
        pickle.dumps(secret)


def test_check_keys_lists_every_unreadable_key(tmp_path, monkeypatch):
    monkeypatch.delenv("TEST_OPENAI_KEY", raising=False)
    data = base()
    data["deployments"].append({**data["deployments"][0], "name": "claude", "provider": "anthropic",
                                "api_key_env": None, "api_key_file": str(tmp_path / "absent.key")})
    data["deployments"][1].pop("api_key_env")
    (tmp_path / "empty.key").write_text("\n")
    data["deployments"].append({**data["deployments"][1], "name": "claude-2",
                                "api_key_file": str(tmp_path / "empty.key")})
    config = LlmConfig.from_dict(data)
    with pytest.raises(LlmConfigError) as caught:
        config.check_keys()
    message = str(caught.value)
    assert "'gpt-a'" in message and "TEST_OPENAI_KEY" in message
    assert "'claude'" in message and "absent.key" in message
    assert "'claude-2'" in message and "is empty" in message
    monkeypatch.setenv("TEST_OPENAI_KEY", "  ")
    with pytest.raises(LlmConfigError, match="TEST_OPENAI_KEY"):
        config.deployment("gpt-a").api_key()


def _with(change: dict[str, Any], drop: str | None = None) -> dict[str, Any]:
    data = base()
    data["deployments"][0].update(change)
    if drop:
        data["deployments"][0].pop(drop)
    return data


@pytest.mark.parametrize("data, expected", [
    (_with({"provider": "cohere"}), "deployment 'gpt-a': 'provider' must be one of openai, anthropic"),
    (_with({}, drop="model"), "deployment 'gpt-a': 'model' is required"),
    (_with({}, drop="group"), "deployment 'gpt-a': 'group' is required"),
    (_with({"base_url": "api.example.com"}), "deployment 'gpt-a': 'base_url' must be an http"),
    (_with({"rpm": -1}), "deployment 'gpt-a': 'rpm' must be an integer > 0"),
    (_with({"tpm": 0}), "deployment 'gpt-a': 'tpm' must be an integer > 0"),
    (_with({"rpm": True}), "deployment 'gpt-a': 'rpm' must be an integer"),
    (_with({"rpm": 1.5}), "deployment 'gpt-a': 'rpm' must be an integer"),
    (_with({"timeout_s": 0}), "deployment 'gpt-a': 'timeout_s' must be a number > 0"),
    (_with({"input_price_per_mtok": "cheap"}), "deployment 'gpt-a': 'input_price_per_mtok' must be a number"),
    (_with({"api_key_evn": "X"}), "deployment 'gpt-a': unknown field(s) api_key_evn"),
    (_with({"api_key_file": "/k"}), "deployment 'gpt-a': give 'api_key_env' or 'api_key_file', not both"),
    (_with({"provider": "anthropic"}, drop="api_key_env"),
     "deployment 'gpt-a': provider 'anthropic' needs 'api_key_env' or 'api_key_file'"),
    (_with({"name": ""}), "deployments[0]: 'name' is required"),
    ({"deployments": []}, "'deployments' must be a non-empty list"),
    ({"deployments": ["gpt-a"]}, "deployments[0] must be a mapping"),
    ({**base(), "fallback": {}}, "unknown field(s) fallback"),
    ({**base(), "fallbacks": {"vision": ["chat"]}}, "fallbacks: 'vision' is not a configured group"),
    ({**base(), "fallbacks": {"chat": ["backup"]}}, "fallbacks['chat']: 'backup' is not a configured group"),
    ({**base(), "fallbacks": {"chat": ["chat"]}}, "cannot fall back to itself"),
    ({**base(), "fallbacks": {"chat": "other"}}, "fallbacks['chat'] must be a list of group names"),
    ([1, 2], "must be a mapping"),
], ids=lambda value: value if isinstance(value, str) else None)
def test_a_bad_configuration_names_the_deployment_and_the_field(data, expected):
    with pytest.raises(LlmConfigError) as caught:
        LlmConfig.from_dict(data)
    assert expected in str(caught.value)


def test_two_deployments_cannot_share_a_name():
    data = base()
    data["deployments"].append(copy.deepcopy(data["deployments"][0]))
    with pytest.raises(LlmConfigError, match="deployment 'gpt-a': name is used twice"):
        LlmConfig.from_dict(data)


def test_unreadable_yaml_and_files_are_config_errors(tmp_path):
    with pytest.raises(LlmConfigError, match="not valid YAML"):
        LlmConfig.from_yaml("deployments: [unclosed")
    with pytest.raises(LlmConfigError, match="cannot read model configuration"):
        LlmConfig.from_file(tmp_path / "missing.yaml")
    path = tmp_path / "models.yaml"
    path.write_text("deployments:\n  - {name: a, group: g, provider: openai, "
                    "base_url: 'http://127.0.0.1:9/v1', model: m}\n")
    assert LlmConfig.from_file(path).deployment("a").model == "m"


def test_the_example_configuration_loads_with_its_fallback_order() -> None:
    from pathlib import Path

    example = Path(__file__).parents[3] / "examples" / "llm" / "models.yaml"
    config = LlmConfig.from_file(example)
    assert [d.name for d in config.route("chat")] == ["local-llama", "gpt-mini", "claude-haiku"]
    assert all(d.key_source is None or d.key_source.env or d.key_source.file
               for d in config.deployments)
    assert "sk-" not in example.read_text()
