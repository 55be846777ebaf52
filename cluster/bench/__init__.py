"""Benchmarks behind `ymera bench SUITE`, one module per suite, each publishing its JSON report
through `report`. Importing this package is cheap: a suite's module (and Ray) is imported only
when that suite runs."""

from __future__ import annotations

import argparse
import importlib

SUITES = {
    "core": "cluster.bench.core:run_core_benchmark",
    "router": "cluster.bench.router:run_router_benchmark",
    "api": "cluster.bench.api:run_api_benchmark",
    "batch": "cluster.bench.batch:run_batch_benchmark",
    "scale": "cluster.bench.scale:run_scale_benchmark",
    "workflow": "cluster.bench.workflow:run_workflow_benchmark",
    "llm": "cluster.bench.llm:run_llm_benchmark",
    "knowledge": "cluster.bench.knowledge:run_knowledge_benchmark",
    "webhooks": "cluster.bench.webhooks:run_webhooks_benchmark",
    "console": "cluster.bench.console:run_console_benchmark",
    "peers": "cluster.bench.peers:run_peers_benchmark",
    "memory": "cluster.bench.memory:run_memory_benchmark",
}


def run(args: argparse.Namespace) -> None:
    """Run the suite `args.suite` with the options `add_arguments` defined."""
    module, _, function = SUITES[args.suite].partition(":")
    getattr(importlib.import_module(module), function)(args)


def add_arguments(bench: argparse.ArgumentParser) -> None:
    """The options of `ymera bench`, each prefixed in its help by the suites that read it."""
    bench.add_argument("suite", choices=list(SUITES),
                       help="core: Ray actors and platform tasks; router: the semantic router "
                       "against its embedding model; api: authenticated task submission over "
                       "HTTP against a bare Serve endpoint; batch: a batch Ray job against "
                       "the core platform rate; scale: throughput at several replica counts of "
                       "a CPU-bound agent type, and how fast an autoscaled pool follows a "
                       "backlog; workflow: workflow runs (a chain, a fan-out with fan-in, an "
                       "orchestrator killed mid-run) against plain tasks; llm: the model "
                       "gateway's added latency over calling the provider directly; "
                       "knowledge: ingestion rate, search latency at 10k and 100k chunks, "
                       "approximate recall, retrieval recall@5; webhooks: webhook deliveries "
                       "per second and latency from event commit to receipt, beside the "
                       "core task rate with and without a subscription; console: server time of the web "
                       "console's task list at 1k and 100k tasks, and of a task page; peers: the "
                       "core path beside Celery (Redis broker; Redis and PostgreSQL result "
                       "backends) with the same task (pip install '.[compare]'); memory: "
                       "resident memory of the platform's own processes with every built-in "
                       "pool at its default size, idle and under load")
    bench.add_argument("--tasks", type=int, default=10_000,
                       help="core: tasks per database; peers: tasks per path; memory: tasks "
                       "of the load")
    bench.add_argument("--raw-calls", type=int, default=5000, help="core: raw actor calls")
    bench.add_argument("--postgres-url", default=None,
                       help="core, workflow, llm, webhooks, peers: PostgreSQL admin URL (a "
                       "throwaway database is made there)")
    bench.add_argument("--redis-url", default=None,
                       help="peers: the Redis Celery's broker and result backend use "
                       "(default redis://127.0.0.1:6379/0; its keys are removed afterwards)")
    bench.add_argument("--deliveries", type=int, default=2000,
                       help="webhooks: events in the outbox burst, and tasks on the platform")
    bench.add_argument("--knowledge-copies", type=int, default=10,
                       help="knowledge: copies of the handbook corpus to ingest")
    bench.add_argument("--knowledge-queries", type=int, default=300,
                       help="knowledge: timed queries at each collection size")
    bench.add_argument("--texts", type=int, default=1000,
                       help="router: texts per batched repeat")
    bench.add_argument("--repeats", type=int, default=5,
                       help="router: batched repeats; workflow: chain runs and fan-out rounds")
    bench.add_argument("--cached-decisions", type=int, default=1000,
                       help="router: timed single decisions of already embedded texts")
    bench.add_argument("--uncached-decisions", type=int, default=200,
                       help="router: timed single decisions of never-seen texts")
    bench.add_argument("--file", help="router: JSON Lines of descriptions to route "
                       "(default: the routing development set, else declared examples)")
    bench.add_argument("--concurrency", default="1,8,32",
                       help="api, llm: comma-separated numbers of concurrent callers")
    bench.add_argument("--requests", type=int, default=600,
                       help="api, llm: requests per endpoint (llm: path) at each "
                       "concurrency level")
    bench.add_argument("--duration", type=float, default=None,
                       help="api: seconds per endpoint at each level, instead of --requests")
    bench.add_argument("--replicas", dest="api_replicas", type=int, default=1,
                       help="api: Serve replicas of each endpoint")
    bench.add_argument("--replica-steps", default="1,2,4",
                       help="scale: comma-separated replica counts to measure throughput at")
    bench.add_argument("--tasks-per-step", type=int, default=200,
                       help="scale: tasks submitted at once at each step")
    bench.add_argument("--burn-ms", type=float, default=20.0,
                       help="scale: milliseconds of CPU each task burns")
    bench.add_argument("--backlog", type=int, default=400,
                       help="scale: tasks submitted at once to the autoscaled pool")
    bench.add_argument("--health-interval", type=float, default=2.0,
                       help="scale: seconds between the orchestrator's health checks and "
                       "scaling decisions")
    bench.add_argument("--downscale-delay", type=float, default=5.0,
                       help="scale: seconds a pool must want fewer replicas before it shrinks")
    bench.add_argument("--chain-steps", type=int, default=20,
                       help="workflow: steps of the chain (and plain tasks in sequence)")
    bench.add_argument("--fan-out", type=int, default=1000,
                       help="workflow: items of the fan-out (and plain tasks in the batch)")
    bench.add_argument("--databases", default="sqlite,postgresql",
                       help="workflow: comma-separated databases to measure on")
    bench.add_argument("--output", help="also write the JSON report here")
