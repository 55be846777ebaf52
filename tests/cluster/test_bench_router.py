"""`ymera bench router` in-process on a few texts: the report's shape and sanity, never speed."""

from __future__ import annotations

import json

from cluster.bench.router import FreshTexts, summary
from cluster.cli import main
from ml.semantic_router import instruction_text


def test_the_router_benchmark_reports_sane_rates_and_latencies(capsys, tmp_path):
    output = tmp_path / "router.json"
    assert main(["bench", "router", "--json", "--texts", "48", "--repeats", "2",
                 "--cached-decisions", "40", "--uncached-decisions", "12",
                 "--output", str(output)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert json.loads(output.read_text()) == report

    assert report["suite"] == "router" and report["repeats"] == 2
    assert report["router"]["index_examples"] > 0 and report["router"]["k"] >= 1
    assert report["texts"]["per_repeat"] == 48 and report["texts"]["distinct_base_texts"] > 0
    batched = report["batched"]
    assert batched["texts"] == 48 and len(batched["rounds"]) == 2
    assert batched["routing_decisions_per_second"] > 0
    assert batched["raw_encode_texts_per_second"] > 0
    assert batched["ratio"] > 0 and isinstance(batched["meets_goal"], bool)
    cached, uncached = report["cached_single"], report["uncached_single"]
    assert cached["decisions"] == 40 and uncached["decisions"] == 12
    for latency in (cached, uncached):
        assert 0 < latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"]
    assert cached["p50_ms"] < uncached["p50_ms"]
    table = summary(report)
    assert "routing / raw" in table and "cached single" in table


def test_fresh_texts_stay_distinct_once_prepared_for_routing():
    fresh = FreshTexts(["add 2 and 3", "which customer spent the most? name,spend\nAna,120",
                        '{"rows": [1, 2]}'])
    texts = fresh.take(6) + fresh.take(6)
    prepared = {instruction_text(text).lower() for text in texts}
    assert len(prepared) == len(set(texts)) == 12
    assert texts[0].endswith("add 2 and 3")


def test_a_bad_texts_file_is_a_clear_error(capsys, tmp_path):
    assert main(["bench", "router", "--file", str(tmp_path / "missing.jsonl")]) == 1
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"expected": "calculator"}\n')
    assert main(["bench", "router", "--file", str(bad)]) == 1
    assert "is not a JSON object with a description" in capsys.readouterr().err
