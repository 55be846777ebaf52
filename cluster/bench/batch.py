"""`ymera bench batch`: tasks per second through a batch Ray job versus the core benchmark's
platform rate, in one run on one local Ray cluster.

In order, on a local cluster with its job server on 127.0.0.1 (token auth as the platform sets
it up):
Both run twice, alternating, and the best of each is compared (the ratio per round is
reported too).
- core: `cluster.bench.core.platform_tasks` on SQLite: trivial calculator tasks submitted from
  this driver in batches of 200 with 4 submissions in flight, then waited for (the figure
  `ymera bench core` reports);
- batch: the same number of the same trivial tasks written as JSON Lines and run by the batch
  entrypoint as a Ray job (submitted through the job server, as `ray job submit` does), on a
  fresh orchestrator and database of the same configuration. Two figures: the job's own rate
  (from its first submission to its last result line written, as its summary reports) and
  end to end (from submitting the job to the job server reporting it succeeded, which adds the
  driver's start, `ray.init`, and the pass over the input that counts and hashes it);
- one by one: before the job, on the same orchestrator, 1,000 of the same tasks (fewer if
  `--tasks` is smaller) submitted from this driver one call at a time, then waited for.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import ray
from ray._private.utils import write_ray_address

from actors.config import OrchestratorConfig, PoolConfig
from actors.deploy import start_orchestrator
from cluster.batch.entrypoint import SUMMARY_PREFIX
from cluster.bench.core import platform_tasks
from cluster.bench.report import publish_report
from cluster.client import Client
from ml.config import RouterConfig
from storage.database import migrate
from storage.messages import TaskStatus

JOB_TIMEOUT_S = 900.0
ROUNDS = 2
STATUS_POLL_S = 2.0
ONE_BY_ONE_TASKS = 1000


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _write_tasks(path: Path, tasks: int) -> None:
    with path.open("w") as file:
        for i in range(tasks):
            file.write(json.dumps({"description": f"{i}+1", "agent_type": "calculator",
                                   "payload": {"expression": f"{i}+1"}}) + "\n")


def submitted_one_by_one(client: Client, tasks: int) -> dict[str, Any]:
    """A driver that submits trivial tasks one call at a time, then waits for them all."""
    started = time.perf_counter()
    ids = [client.submit(f"{i}+2", {"expression": f"{i}+2"}, agent_type="calculator")
           for i in range(tasks)]
    finished = client.wait_many(ids, 600)
    elapsed = time.perf_counter() - started
    return {"tasks": tasks, "succeeded": sum(t.status is TaskStatus.SUCCEEDED for t in finished),
            "seconds": round(elapsed, 3), "per_second": round(tasks / elapsed, 1)}


def batch_job(job_server: str, state: Path, tasks: int) -> dict[str, Any]:
    """Run `tasks` trivial tasks as one batch job on a fresh orchestrator; its figures."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    database_url = f"sqlite:///{state / 'batch.db'}"
    migrate(database_url)
    namespace = f"ymera-bench-batch-{uuid.uuid4().hex[:8]}"
    orchestrator = start_orchestrator(OrchestratorConfig(
        database_url=database_url, namespace=namespace, default_replicas=0,
        pools={"calculator": PoolConfig(replicas=2, concurrency=64)},
        router=RouterConfig(enabled=False)))
    try:
        ray.get(orchestrator.ready.remote(), timeout=180)
        one_by_one = submitted_one_by_one(Client(orchestrator), min(tasks, ONE_BY_ONE_TASKS))
        source, results = state / "tasks.jsonl", state / "results.jsonl"
        _write_tasks(source, tasks)
        batch_id = f"bench-{uuid.uuid4().hex[:8]}"
        jobs = JobSubmissionClient(job_server)
        started = time.time()
        submission_id = jobs.submit_job(
            entrypoint=f"{sys.executable} -m cluster.batch --input {source} --output {results} "
                       f"--batch-id {batch_id} --progress-interval 5",
            runtime_env={"env_vars": {"YMERA_NAMESPACE": namespace}},
            metadata={"ymera_batch_id": batch_id})
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while not (status := jobs.get_job_status(submission_id)).is_terminal():
            if time.monotonic() > deadline:
                jobs.stop_job(submission_id)
                raise TimeoutError(f"the batch job did not finish in {JOB_TIMEOUT_S:g}s")
            time.sleep(STATUS_POLL_S)  # rarely: each poll costs the dashboard and GCS CPU
        end_time = jobs.get_job_info(submission_id).end_time
        assert end_time is not None  # set once the job is terminal
        elapsed = end_time / 1000 - started
        logs = jobs.get_job_logs(submission_id)
        if status is not JobStatus.SUCCEEDED:
            raise RuntimeError(f"the batch job ended {status.value}:\n{logs[-3000:]}")
        summary = json.loads(logs.split(SUMMARY_PREFIX, 1)[1].splitlines()[0])
        lines = [json.loads(line) for line in results.read_text().splitlines()]
        return {
            "tasks": tasks,
            "succeeded": sum(1 for line in lines if line["status"] == "succeeded"),
            "in_order": [line["line"] for line in lines] == list(range(1, tasks + 1)),
            "job_seconds": round(summary["seconds"], 3),
            "job_per_second": round(tasks / summary["seconds"], 1),
            "end_to_end_seconds": round(elapsed, 3),
            "end_to_end_per_second": round(tasks / elapsed, 1),
            "submission_id": submission_id,
            "one_by_one": one_by_one,
        }
    finally:
        ray.get(orchestrator.stop_pools.remote(), timeout=60)
        ray.kill(orchestrator, no_restart=True)


def run_batch_benchmark(args: Any) -> dict[str, Any]:
    dashboard_port = _free_port()
    ray_temp = tempfile.mkdtemp(prefix="ymera-bench-ray-")
    ray.init(address="local", namespace="ymera-bench", include_dashboard=True,  # its own cluster
             dashboard_host="127.0.0.1", dashboard_port=dashboard_port, log_to_driver=False,
             logging_level=logging.WARNING, _temp_dir=ray_temp)
    # Ray's job supervisor sends a job's driver to the cluster recorded as current in the
    # cluster's temp directory (what `ray start` writes, and `ray.init` does not): without this
    # record it would pick whatever head `ray start` last recorded on this machine.
    write_ray_address(ray.get_runtime_context().gcs_address, ray_temp)
    memory_gb = round(psutil.virtual_memory().total / 2**30)
    report: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "memory_gb": memory_gb}}
    try:
        rounds = []
        for _ in range(ROUNDS):  # alternating, so both see the same machine
            with tempfile.TemporaryDirectory() as state:
                core = platform_tasks(f"sqlite:///{Path(state) / 'core.db'}", args.tasks)
                batch = batch_job(f"http://127.0.0.1:{dashboard_port}", Path(state), args.tasks)
            rounds.append({"core": {k: core[k] for k in ("tasks", "succeeded", "seconds",
                                                        "per_second")}, "batch": batch})
        report["rounds"] = rounds
        report["core"] = max((r["core"] for r in rounds), key=lambda r: r["per_second"])
        report["batch"] = max((r["batch"] for r in rounds), key=lambda r: r["job_per_second"])
        core_rate = report["core"]["per_second"]
        report["ratio_job_to_core"] = round(report["batch"]["job_per_second"] / core_rate, 3)
        report["ratio_end_to_end_to_core"] = round(
            report["batch"]["end_to_end_per_second"] / core_rate, 3)
        report["one_by_one"] = max((r["batch"].pop("one_by_one") for r in rounds),
                                   key=lambda r: r["per_second"])
        report["ratio_job_to_core_per_round"] = [
            round(r["batch"]["job_per_second"] / r["core"]["per_second"], 3) for r in rounds]
    finally:
        ray.shutdown()
        shutil.rmtree(ray_temp, ignore_errors=True)
    return publish_report(report, args, _summary)


def _summary(report: dict[str, Any]) -> str:
    core, batch = report["core"], report["batch"]
    return "\n".join([
        f"core (driver submits): {core['per_second']:.0f} tasks/s",
        f"batch job: {batch['job_per_second']:.0f} tasks/s inside the job "
        f"({report['ratio_job_to_core']:.2f} of core), {batch['end_to_end_per_second']:.0f} "
        f"tasks/s end to end ({report['ratio_end_to_end_to_core']:.2f} of core), "
        f"{batch['succeeded']}/{batch['tasks']} succeeded, in order: {batch['in_order']}",
        f"one by one from a driver: {report['one_by_one']['per_second']:.0f} tasks/s",
    ])
