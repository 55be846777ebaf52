"""`/api/v1/llm...` through the app on the in-process platform: what a tenant may see of the
models (no addresses, no limits), its own usage only, budgets set by platform administrators
alone (audited, checked), and the hint when no model is configured."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from ml.llm.settings import NO_MODEL_HINT, LlmSettings, single_endpoint
from serve_apps.passwords import hash_password
from serve_apps.routes.access import PLATFORM_AUDIT_TENANT
from tests.serve_apps.test_app_harness import PASSWORD, Platform, client, error_code, platform

__all__ = ["client", "platform"]

API = "/api/v1"
LLM = LlmSettings(config=single_endpoint("http://10.1.2.3:8000/v1", "fake-model"))
STATUS = {"groups": ["default"], "default_group": "default", "fallbacks": {},
          "breaker_store": "database",
          "deployments": [{"name": "default", "group": "default", "provider": "openai",
                           "model": "fake-model", "breaker": "open", "rpm": 60, "tpm": 1000,
                           "base_url": "http://10.1.2.3:8000/v1"}]}


class RecordingGateway:
    """Stands in for the gateway actor: answers each method, records each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    async def __call__(self, method: str, *args: Any) -> Any:
        self.calls.append((method, args))
        if method == "status":
            return STATUS
        if method == "usage":
            return {"tenant": args[0], "task_id": None, "calls": 2, "input_tokens": 30,
                    "output_tokens": 12, "cost_usd": 0.5}
        return {"tenant": args[0], "limit_tokens": args[1] if method == "set_budget" else None,
                "period": "month", "used_tokens": 42, "reserved_tokens": 0,
                "remaining_tokens": None}


@pytest.fixture
def gateway(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> RecordingGateway:
    orchestrator = platform.orchestrator
    monkeypatch.setattr(orchestrator, "config", dataclasses.replace(orchestrator.config, llm=LLM))
    recording = RecordingGateway()
    monkeypatch.setattr(orchestrator, "_gateway_call", recording)
    return recording


async def platform_admin(platform: Platform) -> dict[str, str]:
    user = await platform.auth_store.create_user("acme", "root@acme", hash_password(PASSWORD),
                                                 "platform_admin")
    token = platform.services().tokens.issue_access(user.id, user.tenant, user.role).token
    return {"Authorization": f"Bearer {token}"}


async def test_without_a_model_the_status_says_how_to_add_one(platform: Platform,
                                                              client) -> None:
    response = await client.get(f"{API}/llm", headers=platform.bearer("acme", "viewer"))
    assert response.status_code == 200
    assert response.json() == {"configured": False, "hint": NO_MODEL_HINT}
    usage = await client.get(f"{API}/llm/usage", headers=platform.bearer("acme", "viewer"))
    assert usage.status_code == 422 and error_code(usage) == "no_model_configured"
    assert usage.json()["error"]["message"] == NO_MODEL_HINT


async def test_a_viewer_sees_the_models_but_not_their_addresses_or_limits(
        platform: Platform, client, gateway: RecordingGateway) -> None:
    response = await client.get(f"{API}/llm", headers=platform.bearer("acme", "viewer"))
    assert response.status_code == 200
    body = response.json()
    assert body["configured"] is True and body["default_group"] == "default"
    assert body["deployments"] == [{"name": "default", "group": "default", "provider": "openai",
                                    "model": "fake-model", "breaker": "open"}]
    assert "10.1.2.3" not in response.text


async def test_usage_is_always_the_callers_tenants(platform: Platform, client,
                                                   gateway: RecordingGateway) -> None:
    response = await client.get(f"{API}/llm/usage?tenant=acme",
                                headers=platform.bearer("globex", "admin"))
    assert response.status_code == 200
    assert response.json()["tenant"] == "globex"
    assert response.json()["usage"]["input_tokens"] == 30
    assert {args[0] for _, args in gateway.calls} == {"globex"}


@pytest.mark.parametrize("role", ["viewer", "submitter", "operator", "admin"])
async def test_only_a_platform_admin_sets_a_budget(platform: Platform, client, role: str,
                                                   gateway: RecordingGateway) -> None:
    response = await client.put(f"{API}/llm/budgets/acme", headers=platform.bearer("acme", role),
                                json={"limit_tokens": 1000})
    assert response.status_code == 403
    assert gateway.calls == []


async def test_a_platform_admin_sets_a_budget_and_it_is_audited(
        platform: Platform, client, gateway: RecordingGateway) -> None:
    headers = await platform_admin(platform)
    response = await client.put(f"{API}/llm/budgets/globex", headers=headers,
                                json={"limit_tokens": 5000, "period": "day"})
    assert response.status_code == 200, response.text
    assert response.json()["limit_tokens"] == 5000
    assert gateway.calls == [("set_budget", ("globex", 5000, "day"))]
    events, _ = await platform.auth_store.list_audit(PLATFORM_AUDIT_TENANT)
    assert [(e.action, e.target) for e in events if e.action == "llm_budget_set"] == [
        ("llm_budget_set", "globex")]


@pytest.mark.parametrize("body, field", [
    ({}, "limit_tokens"),
    ({"limit_tokens": 0}, "limit_tokens"),
    ({"limit_tokens": "many"}, "limit_tokens"),
    ({"limit_tokens": 10, "period": "week"}, "period"),
    ({"limit_tokens": 10, "tenant": "other"}, "tenant"),
])
async def test_a_bad_budget_is_refused_naming_the_field_and_changes_nothing(
        platform: Platform, client, gateway: RecordingGateway, body: dict[str, Any],
        field: str) -> None:
    headers = await platform_admin(platform)
    response = await client.put(f"{API}/llm/budgets/globex", headers=headers, json=body)
    assert response.status_code == 400 and error_code(response) == "invalid_request"
    assert field in response.text
    assert gateway.calls == []
