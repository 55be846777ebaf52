"""The router service keeps each tenant's routing memory to itself: a tenant's feedback and
learned examples never sway, or appear in the explanation of, another tenant's decision; another
tenant's feedback never replaces them; they survive restarts per tenant; and the in-memory cache
of tenants' examples stays within its bound, reloading evicted tenants from storage."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from ml.config import RouterConfig
from ml.router_service import RouterService
from storage.errors import InvalidRequest
from storage.messages import new_task_id
from tests.ml.test_router_service import database_url, started  # noqa: F401 (a fixture)

CANARY = "Zephyr-Holdings-7f3q"
SECRET = f"tidy up the figures of the confidential {CANARY} invoice for the board"
SIMILAR = "tidy up the figures of the confidential invoice for the board"


@pytest.fixture
async def service(database_url: str) -> AsyncIterator[RouterService]:
    router = await started(database_url)
    try:
        yield router
    finally:
        await router.close()


def other_than(agent_type: str | None) -> str:
    return "validation" if agent_type != "validation" else "data_processor"


async def test_a_tenants_feedback_never_reaches_another_tenants_decisions(
    service: RouterService,
) -> None:
    texts = [SECRET, SIMILAR]
    before = await service.decide_many(texts, tenants="globex")
    target = other_than(before[0].agent_type)

    outcome = await service.feedback(SECRET, target, new_task_id(), tenant="acme")
    (own,) = await service.decide_many([SECRET], tenants="acme")
    after = await service.decide_many(texts, tenants="globex")
    mixed = await service.decide_many([SECRET, SECRET], tenants=["globex", "acme"])

    assert outcome == {"agent_type": target, "added": True, "replaced": 0}
    assert own.routed and own.agent_type == target
    assert own.nearest[0].text == SECRET and own.nearest[0].source == "feedback"
    assert [d.to_json() for d in after] == [d.to_json() for d in before]
    for decision in [*after, mixed[0]]:
        assert CANARY not in json.dumps(decision.to_json())
        assert all(n.source == "declared" for n in decision.nearest)
    assert mixed[0].to_json() == before[0].to_json()
    assert mixed[1].to_json() == own.to_json()
    assert await service.stored_examples(tenant="globex") == []
    described = await service.describe("globex")
    assert described["tenant"] == "globex"
    assert all("feedback" not in counts for counts in described["examples"].values())
    assert (await service.describe("acme"))["examples"][target]["feedback"] == 1


async def test_another_tenants_feedback_replaces_nothing_of_a_tenant(
    service: RouterService,
) -> None:
    close = SECRET.upper()  # embeds the same: feedback on it replaces within one tenant
    (first,) = await service.decide_many([SECRET], tenants="acme")
    acme_type = other_than(first.agent_type)
    globex_type = "calculator" if acme_type != "calculator" else "text_analysis"
    await service.feedback(SECRET, acme_type, tenant="acme")

    outcome = await service.feedback(close, globex_type, tenant="globex")
    (acme,) = await service.decide_many([SECRET], tenants="acme")
    (globex,) = await service.decide_many([SECRET], tenants="globex")

    assert outcome == {"agent_type": globex_type, "added": True, "replaced": 0}
    assert [(e["agent_type"], e["source"], e["text"]) for e in await service.stored_examples(
        tenant="acme")] == [(acme_type, "feedback", SECRET)]
    assert acme.routed and acme.agent_type == acme_type
    assert globex.routed and globex.agent_type == globex_type
    assert CANARY not in json.dumps(globex.to_json()).replace(CANARY.upper(), "")
    # The same feedback from acme itself does replace acme's example.
    assert (await service.feedback(close, globex_type, tenant="acme"))["replaced"] == 1
    assert await service.stored_examples(acme_type, tenant="acme") == []


async def test_learned_examples_belong_to_the_tasks_tenant_and_survive_a_restart(
    database_url: str,
) -> None:
    acme_text = "work out the compound interest on 5,000 at 4% for 7 years"
    globex_text = "what is the standard deviation of 4, 8, 15, 16, 23 and 42"
    first = await started(database_url)
    try:
        added = await first.learn([("a" * 32, acme_text, "calculator", 0.95, "acme"),
                                   ("b" * 32, globex_text, "calculator", 0.95, "globex"),
                                   ("c" * 32, acme_text, "calculator", 0.95, "globex")])
    finally:
        await first.close()

    second = await started(database_url)
    try:
        stored = {tenant: [e["text"] for e in await second.stored_examples(tenant=tenant)]
                  for tenant in ("acme", "globex", "default")}
        (globex_decision,) = await second.decide_many([globex_text], tenants="globex")
        (acme_decision,) = await second.decide_many([globex_text], tenants="acme")
    finally:
        await second.close()

    assert added == 3
    assert stored == {"acme": [acme_text], "globex": [globex_text, acme_text], "default": []}
    assert globex_decision.nearest[0].text == globex_text
    assert globex_decision.nearest[0].source == "learned"
    assert all(n.source == "declared" for n in acme_decision.nearest)


async def test_the_tenant_cache_evicts_the_least_recently_used_and_reloads_it(
    database_url: str,
) -> None:
    # Each tenant below holds one example: it counts 2 against the bound of 5.
    service = await started(database_url, RouterConfig(stats_interval_s=3600.0,
                                                       tenant_cache_examples=5))
    try:
        (plain,) = await service.decide_many([SECRET], tenants="t0")
        target = other_than(plain.agent_type)
        for tenant in ("t0", "t1"):
            await service.feedback(SECRET, target, tenant=tenant)
        cached_before = [tenant for tenant in ("t0", "t1", "t2") if tenant in service.memory]
        await service.feedback(SECRET, target, tenant="t2")
        cached_after = [tenant for tenant in ("t0", "t1", "t2") if tenant in service.memory]
        loads = service.memory.loads
        (reloaded,) = await service.decide_many([SECRET], tenants="t0")
        snapshot = service.memory.snapshot()
    finally:
        await service.close()

    assert cached_before == ["t0", "t1"] and cached_after == ["t1", "t2"]
    assert reloaded.agent_type == target and reloaded.nearest[0].text == SECRET
    assert service.memory.loads == loads + 1
    assert snapshot["tenants"] == 2 and snapshot["examples"] == 2
    assert snapshot["examples"] + snapshot["tenants"] <= 5


@pytest.mark.parametrize("tenants, message", [
    ("", "tenant must be a string of 1 to 64"), ("t" * 65, "tenant must be"),
    (["acme"], "1 tenants for 2 descriptions"), (["acme", None], "tenant must be"),
])
async def test_bad_tenants_get_a_clear_error(service: RouterService, tenants: object,
                                             message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        await service.decide_many(["add 2 and 2", "sum 3 and 4"], tenants=tenants)
    with pytest.raises(InvalidRequest, match="tenant"):
        await service.feedback("add 2 and 2", "calculator", tenant="")
    with pytest.raises(InvalidRequest, match="tenant"):
        await service.learn([("a" * 32, "add 2 and 2", "calculator", 0.99, "")])
    assert [tenant for tenant, _ in service.memory.items()] == ["default"]  # from ready()
