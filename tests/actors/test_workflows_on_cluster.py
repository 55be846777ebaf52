"""Workflows through the orchestrator actor on the shared cluster and PostgreSQL: what only a
real Ray shows (task names in the dashboard), and the blocking client's calls. Every primitive
is covered in process by test_workflow_engine.py; crashes in test_workflow_failures_on_cluster.py
and the example workflows on the built-in agents in test_catalog_on_cluster.py."""

from __future__ import annotations

import pytest
import ray

pytestmark = pytest.mark.cluster


def test_a_step_runs_as_its_agents_ray_task_named_with_the_run_and_step(platform):
    document = {"name": "named", "steps": [
        {"id": "hello", "agent_type": "sleeper", "payload": {"whoami": True}}]}
    detail = ray.get(platform.orchestrator.submit_workflow.remote(document, {}, wait_s=60),
                     timeout=90)
    assert detail.run.status.value == "succeeded", detail.run.error
    name = detail.steps[0].output["ray_task_name"]
    assert name == f"sleeper run={detail.run.id} step=hello"
