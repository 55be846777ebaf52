"""The Celery application `ymera bench peers` measures the platform against: one task, the
calculator's own `evaluate_one` (what `ymera bench core` has the platform run), acknowledged
late, every key under one prefix so the benchmark can remove them all afterwards.

The benchmark builds its client with `make_app`; the worker it starts in another process
(`celery -A cluster.bench.celery_peer worker`) finds `app` here, built from the variables of
`worker_environment`, which the benchmark sets for that process and nothing else reads.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

from actors.agents.calculator import evaluate_one

BROKER_ENV = "YMERA_PEERS_BROKER_URL"
RESULT_BACKEND_ENV = "YMERA_PEERS_RESULT_BACKEND"
RUN_ID_ENV = "YMERA_PEERS_RUN_ID"
TASK_NAME = "calculate"


def make_app(broker_url: str, result_backend: str, run_id: str) -> Celery:
    """A Celery app whose queue is named `run_id` and whose Redis keys (broker and, with
    the Redis result backend, results) all start with `run_id:`."""
    app = Celery("ymera-peers", broker=broker_url, backend=result_backend,
                 set_as_current=False)
    prefix = {"global_keyprefix": f"{run_id}:"}
    app.conf.update(
        task_acks_late=True,
        task_default_queue=run_id,
        broker_transport_options=prefix,
        result_backend_transport_options=prefix,
        broker_connection_retry_on_startup=True,
        worker_enable_remote_control=False,
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
        task_send_sent_event=False,
    )
    app.task(name=TASK_NAME)(calculate)
    return app


def calculate(expression: str) -> dict[str, Any]:
    return evaluate_one(expression)


def worker_environment(broker_url: str, result_backend: str, run_id: str) -> dict[str, str]:
    """What the worker process needs in its environment to build the same app as `make_app`."""
    return {BROKER_ENV: broker_url, RESULT_BACKEND_ENV: result_backend, RUN_ID_ENV: run_id}


app = make_app(os.environ.get(BROKER_ENV, "memory://"),
               os.environ.get(RESULT_BACKEND_ENV, "cache+memory://"),
               os.environ.get(RUN_ID_ENV, "ymera-peers"))
