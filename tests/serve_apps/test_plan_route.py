"""`POST /api/v1/plan` through the app on the in-process platform: bad bodies refused naming the
field, who may plan and who may run a plan (checked before the model is asked), the hint when
no model is configured (422, not a server error), a plan (200), a refused plan (422 with every
attempt's problem), and a plan run as the caller's tenant (202, invisible to another tenant)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import httpx
import pytest

from ml.llm.settings import NO_MODEL_HINT, LlmSettings, single_endpoint
from serve_apps.permissions import ROLE_PERMISSIONS
from tests.actors.test_planning import SLEEPY, ScriptedGateway
from tests.serve_apps.test_app_harness import Platform, client, error_code, platform

__all__ = ["client", "platform"]

API = "/api/v1"
LLM = LlmSettings(config=single_endpoint("http://127.0.0.1:9/v1", "fake-model"))


def with_model(platform: Platform, monkeypatch: pytest.MonkeyPatch,
               *answers: str) -> ScriptedGateway:
    """The platform with a model configured, answering `answers` in order."""
    orchestrator = platform.orchestrator
    orchestrator.config = dataclasses.replace(orchestrator.config, llm=LLM)
    gateway = ScriptedGateway(*answers)
    monkeypatch.setattr(orchestrator, "_gateway_complete", gateway)
    return gateway


async def post_plan(client: httpx.AsyncClient, headers: dict[str, str],
                    body: Any) -> httpx.Response:
    return await client.post(f"{API}/plan", headers=headers, json=body)


@pytest.mark.parametrize("body, field", [
    ({}, "request"),
    ({"request": ""}, "request"),
    ({"request": "x" * 8001}, "request"),
    ({"request": "plan", "run": "yes"}, "run"),
    ({"request": "plan", "model": ""}, "model"),
    ({"request": "plan", "model": "m" * 65}, "model"),
    ({"request": "plan", "steps": []}, "steps"),
    ({"request": 42}, "request"),
])
async def test_bad_bodies_are_refused_naming_the_field(platform: Platform, client, body: Any,
                                                       field: str, monkeypatch) -> None:
    gateway = with_model(platform, monkeypatch)
    response = await post_plan(client, platform.bearer("acme", "submitter"), body)
    assert response.status_code == 400 and error_code(response) == "invalid_request"
    assert field in json.dumps(response.json()["error"])
    assert gateway.requests == []


async def test_without_a_model_the_answer_is_422_with_the_hint(platform: Platform,
                                                               client) -> None:
    response = await post_plan(client, platform.bearer("acme", "submitter"),
                               {"request": "add 2 and 2"})
    assert response.status_code == 422 and error_code(response) == "no_model_configured"
    assert response.json()["error"]["message"] == NO_MODEL_HINT
    assert "Retry-After" not in response.headers


async def test_a_viewer_cannot_plan(platform: Platform, client, monkeypatch) -> None:
    gateway = with_model(platform, monkeypatch, json.dumps(SLEEPY))
    response = await post_plan(client, platform.bearer("acme", "viewer"), {"request": "nap"})
    assert response.status_code == 403 and error_code(response) == "forbidden"
    assert gateway.requests == []


async def test_running_a_plan_also_needs_workflows_submit(platform: Platform, client,
                                                          monkeypatch) -> None:
    monkeypatch.setitem(ROLE_PERMISSIONS, "viewer",
                        ROLE_PERMISSIONS["viewer"] | {"workflows:plan"})
    gateway = with_model(platform, monkeypatch, json.dumps(SLEEPY))
    headers = platform.bearer("acme", "viewer")
    refused = await post_plan(client, headers, {"request": "nap", "run": True})
    assert refused.status_code == 403 and "workflows:submit" in refused.text
    assert gateway.requests == []  # refused before any tokens were spent
    planned = await post_plan(client, headers, {"request": "nap"})
    assert planned.status_code == 200, planned.text


async def test_a_plan_is_shown_and_nothing_runs(platform: Platform, client,
                                                monkeypatch) -> None:
    gateway = with_model(platform, monkeypatch, json.dumps(SLEEPY))
    headers = platform.bearer("acme", "submitter")
    response = await post_plan(client, headers, {"request": "echo n", "input": {"n": 3},
                                                 "model": "default"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["document"] == SLEEPY and body["run_id"] is None and body["attempts"] == 1
    assert body["rendered"].startswith("workflow sleepy") and body["problems"] == []
    assert body["usage"]["calls"] == 1 and body["usage"]["models"] == ["fake-model"]
    assert "Location" not in response.headers
    [asked] = gateway.requests
    assert asked["tenant"] == "acme" and asked["group"] == "default"
    runs = await client.get(f"{API}/runs", headers=headers)
    assert runs.json()["runs"] == []


async def test_a_refused_plan_is_422_with_each_attempts_problem(platform: Platform, client,
                                                                 monkeypatch) -> None:
    with_model(platform, monkeypatch, "no idea", "{not json}", json.dumps({"name": "x"}))
    response = await post_plan(client, platform.bearer("acme", "submitter"),
                               {"request": "do the impossible"})
    assert response.status_code == 422 and error_code(response) == "plan_refused"
    attempts = response.json()["error"]["details"]["attempts"]
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    assert all(a["problem"] for a in attempts)


async def test_run_starts_the_plan_in_the_callers_tenant(platform: Platform, client,
                                                         monkeypatch) -> None:
    with_model(platform, monkeypatch, json.dumps(SLEEPY))
    acme = platform.bearer("acme", "submitter")
    response = await post_plan(client, acme, {"request": "echo n", "run": True,
                                              "input": {"n": 5}})
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]
    assert run_id and response.headers["Location"] == f"{API}/runs/{run_id}"
    mine = await client.get(f"{API}/runs/{run_id}", headers=acme)
    assert mine.status_code == 200 and mine.json()["input"] == {"n": 5}
    theirs = await client.get(f"{API}/runs/{run_id}",
                              headers=platform.bearer("globex", "admin"))
    assert theirs.status_code == 404
