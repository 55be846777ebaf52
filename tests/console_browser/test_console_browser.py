"""The console in Chromium against a real Serve deployment: a person signs in, watches a task
succeed without reloading, reads its routing explanation, requeues a dead task and a filtered
set of them, approves a workflow step from the run's graph; watches the task list update
over SSE; a tenant admin changes a user's role; a viewer sees no controls and the server
refuses what the viewer forges; an action without its CSRF token is refused; another
tenant's task is a 404 page; the pages work at 400 px wide."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.console_browser.conftest import PASSWORD, DeployedConsole

pytestmark = pytest.mark.cluster

GATED = {"name": "gated", "version": "1", "steps": [
    {"id": "first", "agent_type": "sleeper", "payload": {"echo": 1}},
    {"id": "check", "depends_on": ["first"], "approval": {"timeout_s": 3600},
     "payload": {"seen": "${ steps.first.output.echo }"}},
    {"id": "after", "agent_type": "sleeper", "depends_on": ["check"], "payload": {"echo": 2}},
]}


def sign_in(page: Page, console: DeployedConsole, tenant: str, role: str) -> None:
    page.goto(f"{console.url}/console/sign-in")
    page.get_by_label("Tenant").fill(tenant)
    page.get_by_label("Username").fill(f"{role}@{tenant}")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("header .who")).to_contain_text(role)


def api_headers(console: DeployedConsole, tenant: str, role: str) -> dict[str, str]:
    response = httpx.post(f"{console.api}/auth/token", json={
        "tenant": tenant, "username": f"{role}@{tenant}", "password": PASSWORD}, timeout=30)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def submit(console: DeployedConsole, tenant: str, body: dict[str, Any],
           wait: float | None = None) -> dict[str, Any]:
    response = httpx.post(f"{console.api}/tasks", params={"wait": wait} if wait else None,
                          headers=api_headers(console, tenant, "submitter" if tenant == "acme"
                                              else "admin"), json=body, timeout=60)
    assert response.status_code in (200, 202), response.text
    return response.json()


def dead_task(console: DeployedConsole, description: str) -> str:
    # fails its one attempt; requeued, its next attempt (number 2) succeeds
    task = submit(console, "acme", {"description": description, "agent_type": "flaky",
                                    "payload": {"succeed_on": 2}, "max_attempts": 1}, wait=20)
    assert task["status"] == "dead", task
    return task["id"]


def test_sign_in_and_watch_a_task_succeed_without_reloading(
        console: DeployedConsole, page: Page, screenshots: Path) -> None:
    sign_in(page, console, "acme", "submitter")
    streams: list[str] = []
    page.on("request", lambda request: streams.append(request.url)
            if request.url.endswith("/stream") else None)
    page.goto(f"{console.url}/console/tasks")
    page.get_by_text("Submit a task").click()
    page.get_by_label("Description").fill("sleep a little, then echo")
    page.get_by_label("Agent type (empty: the router decides)").fill("sleeper")
    page.get_by_label("Payload (JSON)").fill('{"seconds": 3, "echo": "hello"}')
    page.get_by_role("button", name="Submit", exact=True).click()
    expect(page).to_have_url(re.compile(r"/console/tasks/[0-9a-f]{32}$"))
    status = page.locator("#task-status")
    expect(status).not_to_have_text("succeeded")
    page.evaluate("window.notReloaded = true")
    expect(status).to_have_text("succeeded", timeout=60_000)
    assert page.evaluate("window.notReloaded === true")  # the same page, updated in place
    own = [url for url in streams if "/console/tasks/" in url]  # the list follows its own
    assert own and own[0].endswith(page.url.rsplit("/", 1)[1] + "/stream")
    expect(page.locator("#task-live")).to_contain_text("attempt 1")
    page.screenshot(path=str(screenshots / "task.png"), full_page=True)


def test_a_routed_tasks_explanation_opens(console: DeployedConsole, page: Page,
                                          screenshots: Path) -> None:
    task = submit(console, "acme", {"description": "what is 2^10 + 5"}, wait=30)
    assert task["status"] == "succeeded" and task["agent_type"] == "calculator", task
    sign_in(page, console, "acme", "viewer")
    page.goto(f"{console.url}/console/tasks/{task['id']}")
    details = page.locator("#route-details")
    expect(details).to_contain_text("Routed to calculator")
    details.locator("summary").click()
    expect(details.get_by_role("heading", name="Candidates")).to_be_visible()
    expect(details.get_by_role("heading", name="Nearest examples")).to_be_visible()
    expect(details.locator("table").first).to_contain_text("calculator")
    page.locator("#routing").screenshot(path=str(screenshots / "routing.png"))


def test_requeue_a_dead_task(console: DeployedConsole, page: Page) -> None:
    task_id = dead_task(console, f"one to requeue {uuid.uuid4().hex[:8]}")
    sign_in(page, console, "acme", "operator")
    page.goto(f"{console.url}/console/dead")
    page.get_by_role("button", name=f"Requeue task {task_id[:12]}").click()
    expect(page).to_have_url(re.compile(f"/console/tasks/{task_id}$"))
    expect(page.locator("#task-status")).to_have_text("succeeded", timeout=60_000)


def test_bulk_requeue_by_filter_confirms_the_count(console: DeployedConsole, page: Page,
                                                   screenshots: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    for n in range(3):
        dead_task(console, f"bulk {tag} number {n}")
    other = dead_task(console, f"not in the bulk {uuid.uuid4().hex[:8]}")
    sign_in(page, console, "acme", "operator")
    page.goto(f"{console.url}/console/dead")
    page.get_by_label("Text").fill(tag)
    page.get_by_role("button", name="Requeue all that match…").click()
    expect(page.locator("#bulk-confirm")).to_contain_text("Requeue 3 dead tasks")
    page.screenshot(path=str(screenshots / "dead-letters.png"))
    page.get_by_role("button", name="Yes, requeue 3").click()
    expect(page.locator("#bulk-done")).to_contain_text("Requeued 3 tasks.")
    response = httpx.get(f"{console.api}/tasks/{other}",
                         headers=api_headers(console, "acme", "operator"), timeout=30)
    assert response.json()["status"] == "dead"  # outside the filter: untouched


def test_a_viewer_sees_no_controls_and_forged_requests_are_refused(
        console: DeployedConsole, page: Page) -> None:
    task_id = dead_task(console, f"viewer looks {uuid.uuid4().hex[:8]}")
    sign_in(page, console, "acme", "viewer")
    page.goto(f"{console.url}/console/tasks/{task_id}")
    expect(page.locator("#task-status")).to_have_text("dead")
    expect(page.get_by_role("button")).to_have_count(1)  # only "Sign out"
    csrf = page.locator('input[name="csrf_token"]').first.get_attribute("value")
    forged = page.request.post(f"{console.url}/console/tasks/{task_id}/requeue",
                               form={"csrf_token": csrf or ""}, max_redirects=0)
    assert forged.status == 403 and "tasks:requeue" in forged.text()
    no_token = page.request.post(f"{console.url}/console/sign-out", form={},
                                 max_redirects=0)
    assert no_token.status == 403 and "CSRF" in no_token.text()
    page.reload()
    expect(page.locator("#task-status")).to_have_text("dead")  # still signed in, untouched


def test_another_tenants_task_is_a_404_page(console: DeployedConsole, page: Page) -> None:
    theirs = submit(console, "globex", {"description": "globex only", "agent_type": "sleeper",
                                        "payload": {}}, wait=20)
    sign_in(page, console, "acme", "operator")
    response = page.goto(f"{console.url}/console/tasks/{theirs['id']}")
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    expect(page.locator("main")).not_to_contain_text("globex only")


def test_an_operator_approves_a_workflow_step_from_its_graph(
        console: DeployedConsole, page: Page, screenshots: Path) -> None:
    submitted = httpx.post(f"{console.api}/workflows",
                           headers=api_headers(console, "acme", "submitter"),
                           json={"workflow": GATED, "input": None}, timeout=30)
    assert submitted.status_code == 202, submitted.text
    run_id = submitted.json()["id"]
    sign_in(page, console, "acme", "operator")
    page.goto(f"{console.url}/console/runs/{run_id}")
    for _ in range(60):
        if page.get_by_role("button", name="Approve").count():
            break
        page.wait_for_timeout(500)
        page.reload()
    graph = page.locator("svg.graph")
    check = graph.locator('a[data-step="check"]')
    expect(check).to_have_attribute("data-state", "awaiting_approval")
    expect(check).to_have_attribute("aria-label", "Step check: awaiting approval; after first")
    expect(graph.locator('a[data-step="first"]')).to_contain_text("succeeded")
    expect(graph.locator("path.edge")).to_have_count(2)
    check.focus()
    page.screenshot(path=str(screenshots / "run.png"), full_page=True)
    page.keyboard.press("Enter")  # a step's box leads to its row in the table
    expect(page).to_have_url(re.compile(r"#step-check$"))
    page.get_by_label("Comment").fill("looks right")
    page.get_by_role("button", name="Approve").click()
    expect(page.locator("main")).to_contain_text("approve by user:")
    page.evaluate("window.notReloaded = true")
    expect(page.locator('svg.graph a[data-step="after"]')).to_have_attribute(
        "data-state", "succeeded", timeout=60_000)  # the graph follows the run
    expect(page.locator('svg.graph a[data-step="check"]')).to_contain_text("succeeded")
    assert page.evaluate("window.notReloaded === true")


def test_the_console_reads_at_400_pixels(console: DeployedConsole, page: Page,
                                         screenshots: Path) -> None:
    page.set_viewport_size({"width": 400, "height": 800})
    sign_in(page, console, "acme", "operator")
    page.goto(f"{console.url}/console/tasks")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 400, f"the page scrolls sideways: {width}px"
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.textContent")
    assert focused == "Skip to content"
    page.screenshot(path=str(screenshots / "narrow.png"))


def test_the_overview_shows_the_work_done(console: DeployedConsole, page: Page,
                                          screenshots: Path) -> None:
    dead_task(console, f"left dead {uuid.uuid4().hex[:8]}")
    done = submit(console, "acme", {"description": "echo for the overview",
                                    "agent_type": "sleeper", "payload": {}}, wait=20)
    assert done["status"] == "succeeded", done
    sign_in(page, console, "acme", "operator")
    page.goto(f"{console.url}/console")
    summary = page.locator("#chart-desc")
    finished = re.match(r"(\d+) succeeded and (\d+) failed", summary.text_content() or "")
    assert finished and int(finished.group(1)) >= 1 and int(finished.group(2)) >= 1
    dead_tile = page.locator(".tile", has_text="Dead letters").locator("strong")
    assert int(dead_tile.text_content() or "0") >= 1
    expect(page.locator("table").first).to_contain_text("sleeper")
    page.screenshot(path=str(screenshots / "overview.png"))


def test_the_task_list_updates_live_over_sse(console: DeployedConsole, page: Page,
                                             screenshots: Path) -> None:
    sign_in(page, console, "acme", "viewer")
    streams: list[str] = []
    page.on("request", lambda request: streams.append(request.url)
            if request.url.endswith("/console/stream") else None)
    page.goto(f"{console.url}/console/tasks")
    expect(page.locator("#task-rows")).to_have_attribute("data-stream", "/console/stream")
    page.evaluate("window.notReloaded = true")
    tag = uuid.uuid4().hex[:8]
    task = submit(console, "acme", {"description": f"live {tag}", "agent_type": "sleeper",
                                    "payload": {"seconds": 2, "echo": tag}})
    row = page.locator(f'tr[data-task-id="{task["id"]}"]')
    # the fallback poll comes every 15 s; well before it, the stream has brought the row
    expect(row).to_be_visible(timeout=10_000)
    expect(row.locator(".badge")).to_have_text("succeeded", timeout=60_000)
    assert page.evaluate("window.notReloaded === true")
    assert streams, "the list opened no event stream"
    page.goto(f"{console.url}/console")
    expect(page.locator("#overview")).to_have_attribute("data-stream", "/console/stream")
    page.goto(f"{console.url}/console/tasks")
    expect(row).to_be_visible()
    page.screenshot(path=str(screenshots / "tasks.png"))


def test_a_tenant_admin_changes_a_users_role(console: DeployedConsole, page: Page,
                                             screenshots: Path) -> None:
    name = f"analyst-{uuid.uuid4().hex[:6]}"
    sign_in(page, console, "globex", "admin")
    page.goto(f"{console.url}/console/users")
    page.get_by_text("Add a user").click()
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password").fill("a perfectly long passphrase 42")
    page.locator("#u-role").select_option("viewer")
    page.get_by_role("button", name="Add user").click()
    row = page.locator(f'tr[data-user="{name}"]')
    expect(row.get_by_label(f"Role of {name}", exact=True)).to_have_value("viewer")
    mine = page.locator('tr[data-user="admin@globex"]')
    expect(mine.get_by_role("combobox")).to_have_count(0)  # not your own role
    expect(row.locator("option", has_text="platform_admin")).to_have_count(0)
    row.get_by_label(f"Role of {name}", exact=True).select_option("operator")
    page.screenshot(path=str(screenshots / "users.png"), full_page=True)
    row.get_by_role("button", name=f"Change the role of {name}").click()
    changed = page.locator(f'tr[data-user="{name}"]')
    expect(changed.get_by_label(f"Role of {name}", exact=True)).to_have_value("operator")
    page.goto(f"{console.url}/console/audit")
    expect(page.locator("main")).to_contain_text("role_changed")
    signed = httpx.post(f"{console.api}/auth/token", json={
        "tenant": "globex", "username": name,
        "password": "a perfectly long passphrase 42"}, timeout=30)
    assert signed.status_code == 200
    me = httpx.get(f"{console.api}/users", headers={
        "Authorization": f"Bearer {signed.json()['access_token']}"}, timeout=30)
    assert me.status_code == 403  # an operator now, not an admin, as the API sees it
