"""Driving the console in process: sign in through its form, read a page's CSRF token, and
make tasks to look at. Shared by the `test_console_*` modules."""

from __future__ import annotations

import re

import httpx

from tests.serve_apps.test_app_harness import PASSWORD, Platform

CONSOLE = "/console"
_CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token a console page embeds in its forms."""
    match = _CSRF.search(html)
    assert match, "the page has no CSRF token"
    return match.group(1)


async def sign_in(client: httpx.AsyncClient, tenant: str, role: str,
                  password: str = PASSWORD) -> httpx.Response:
    """Open the sign-in page and post its form; the response to the post (not followed)."""
    form = await client.get(f"{CONSOLE}/sign-in")
    assert form.status_code == 200, form.text
    return await client.post(f"{CONSOLE}/sign-in", data={
        "csrf_token": csrf_of(form.text), "tenant": tenant,
        "username": f"{role}@{tenant}", "password": password, "next": f"{CONSOLE}/tasks"})


async def signed_in(client: httpx.AsyncClient, tenant: str, role: str) -> str:
    """Sign `client` in as the `role` user of `tenant`; the session's CSRF token."""
    response = await sign_in(client, tenant, role)
    assert response.status_code == 303, response.text
    page = await client.get(f"{CONSOLE}/tasks")
    assert page.status_code == 200, page.text
    return csrf_of(page.text)


async def dead_task(platform: Platform, tenant: str = "acme",
                    description: str = "always fails") -> str:
    """A task of `tenant` that is dead after its one attempt."""
    task = await platform.orchestrator.accept(
        {"description": description, "agent_type": "flaky", "payload": {"succeed_on": 99},
         "max_attempts": 1, "tenant": tenant}, 5.0)
    assert task.status.value == "dead", task
    return task.id


async def finished_task(platform: Platform, tenant: str = "acme") -> str:
    task = await platform.orchestrator.accept(
        {"description": "echo for the console", "agent_type": "sleeper",
         "payload": {"echo": 5}, "tenant": tenant}, 5.0)
    assert task.status.value == "succeeded", task
    return task.id
