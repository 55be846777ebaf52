"""`ymera bench webhooks`, its outbox part on a few events: the report's shape and that every
event arrived once, never speed. (The platform part starts its own Ray and is left to a run of
the benchmark itself.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.bench.webhooks import ReceiverProcess, _summary, outbox

DELIVERIES = 150


@pytest.fixture(scope="module")
def receiver() -> Iterator[ReceiverProcess]:
    process = ReceiverProcess()
    try:
        yield process
    finally:
        process.stop()


async def test_the_outbox_part_delivers_every_event_once_and_reports_latency(
    receiver: ReceiverProcess, tmp_path: Path,
) -> None:
    report = await outbox(f"sqlite:///{tmp_path / 'outbox.db'}", receiver, DELIVERIES,
                          paced_events=40)

    burst, paced = report["burst"], report["paced"]
    assert report["database"] == "sqlite"
    assert burst["received"] == burst["deliveries"] == DELIVERIES
    assert burst["deliveries_per_second"] > 0 and paced["received"] == paced["events"]
    for figures in (burst["commit_to_receipt"], paced["commit_to_receipt"]):
        assert 0 < figures["p50_ms"] <= figures["p95_ms"] <= figures["max_ms"]
    summary = _summary({"outbox_sqlite": report, "outbox_postgresql": {"skipped": "off"},
                        "platform": {"core_tasks_per_second": 1.0,
                                     "with_webhooks_tasks_per_second": 1.0, "skipped": "off"}})
    assert "deliveries/s" in summary and "p95" in summary
