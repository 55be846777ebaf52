"""`ymera bench router`: what the semantic router costs on top of the embedding model, in one run.

It loads the model once, builds a `SemanticRouter` over the built-in and installed agent types
around it, warms both up, then measures in this process:
- batched: `decide_many` on N texts the router has never seen (so every one is embedded), against
  `SentenceTransformer.encode` of the same texts as the router prepares them (`routing_text`),
  with the router's batch size and normalisation; the two sides take turns on slices of 128
  texts, so that drift in the machine's speed weighs on both alike; each repeat uses new texts;
  the report gives each side's best rate over the repeats and the median ratio over all slices;
- cached single decisions: `decide_many([text])` for a text already embedded;
- uncached single decisions: `decide_many([text])` for a text never seen before, each time.
Latency percentiles are over every timed single decision. Rates are compared within the run only,
since a shared machine's speed drifts from run to run.

Texts are the descriptions of the repository's routing development set when it is present (or of
`--file`, JSON Lines with a `description` field), else the agents' declared examples; each is
tagged with a unique number so that no two are alike once prepared.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cluster.bench.report import publish_report
from storage.errors import InvalidRequest

if TYPE_CHECKING:
    from actors.agent import Agent
    from ml.semantic_router import SemanticRouter

REPOSITORY = Path(__file__).resolve().parents[1]
DEVELOPMENT_SET = Path("tests") / "data" / "routing_dev.jsonl"
GOAL_RATIO = 0.9
GOAL_CACHED_P50_MS = 1.0
WARM_UP_TEXTS = 128
INTERLEAVED_TEXTS = 128
CACHED_POOL = 500


def file_descriptions(path: Path) -> list[str]:
    """The `description` of every JSON Lines object in `path` (blank lines skipped)."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise InvalidRequest(f"no such file: {path}") from None
    descriptions = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            description = json.loads(line)["description"]
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidRequest(f"{path} line {number} is not a JSON object with a "
                                 f"description: {exc}") from exc
        if not isinstance(description, str) or not description.strip():
            raise InvalidRequest(f"{path} line {number}: the description must be a non-empty "
                                 "string")
        descriptions.append(description)
    if not descriptions:
        raise InvalidRequest(f"{path} holds no descriptions")
    return descriptions


def benchmark_texts(file: str | None,
                    agent_types: Mapping[str, type[Agent]]) -> tuple[list[str], str]:
    """The texts to route and where they came from: `file`, else the development set when
    present, else every agent type's declared examples."""
    if file is not None:
        return file_descriptions(Path(file)), file
    if (REPOSITORY / DEVELOPMENT_SET).is_file():
        return file_descriptions(REPOSITORY / DEVELOPMENT_SET), DEVELOPMENT_SET.as_posix()
    examples = [text for agent_class in agent_types.values() for text in agent_class.spec.examples]
    if not examples:
        raise InvalidRequest("no texts to route: no development set and no declared examples; "
                             "give --file")
    return examples, "declared agent examples"


class FreshTexts:
    """An endless supply of texts never handed out before: the base texts in turn, each prefixed
    with a unique number (which routing keeps: it stays on the first line and is not JSON)."""

    def __init__(self, base: Sequence[str]) -> None:
        self._base = itertools.cycle(base)
        self._numbers: Iterator[int] = itertools.count(1)

    def take(self, count: int) -> list[str]:
        return [f"#{next(self._numbers)} {next(self._base)}" for _ in range(count)]


def latency_ms(seconds: Sequence[float]) -> dict[str, float]:
    """Nearest-rank percentiles and the mean of `seconds`, in milliseconds."""
    ordered = sorted(seconds)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)

    return {"decisions": len(ordered), "p50_ms": at(0.50), "p95_ms": at(0.95),
            "p99_ms": at(0.99), "mean_ms": round(statistics.fmean(ordered) * 1000, 3)}


def batched_round(router: SemanticRouter, model: Any, batch_size: int,
                  texts: list[str]) -> dict[str, Any]:
    """One timed pass of each side over the same never-seen `texts`, taking turns on slices of
    `INTERLEAVED_TEXTS` (the side that goes first alternates), with each slice's ratio, so that a
    change in the machine's speed during the pass weighs on both sides alike."""
    raw_seconds = routing_seconds = 0.0
    slice_ratios = []
    for number, offset in enumerate(range(0, len(texts), INTERLEAVED_TEXTS)):
        chunk = texts[offset:offset + INTERLEAVED_TEXTS]
        prepared = [router.routing_text(text) for text in chunk]
        timed: dict[str, float] = {}
        for side in ("raw", "routing") if number % 2 == 0 else ("routing", "raw"):
            started = time.perf_counter()
            if side == "raw":
                model.encode(prepared, batch_size=batch_size, convert_to_numpy=True,
                             normalize_embeddings=True, show_progress_bar=False)
            else:
                router.decide_many(chunk)
            timed[side] = time.perf_counter() - started
        raw_seconds += timed["raw"]
        routing_seconds += timed["routing"]
        slice_ratios.append(timed["raw"] / timed["routing"])
    return {"routing_per_second": round(len(texts) / routing_seconds, 1),
            "raw_per_second": round(len(texts) / raw_seconds, 1),
            "ratio": round(raw_seconds / routing_seconds, 3),
            "slice_ratios": [round(r, 3) for r in slice_ratios]}


def single_decisions(router: SemanticRouter, texts: Sequence[str], count: int) -> list[float]:
    """Seconds taken by `count` one-text `decide_many` calls, cycling through `texts`."""
    timings = []
    for text in itertools.islice(itertools.cycle(texts), count):
        started = time.perf_counter()
        router.decide_many([text])
        timings.append(time.perf_counter() - started)
    return timings


def measure(texts: int, repeats: int, cached_decisions: int, uncached_decisions: int,
            file: str | None = None) -> dict[str, Any]:
    """The router benchmark's report (see the module docstring)."""
    if min(texts, repeats, cached_decisions, uncached_decisions) < 1:
        raise InvalidRequest("--texts, --repeats, --cached-decisions and --uncached-decisions "
                             "must be at least 1")
    from actors.registry import agent_specs, load_agent_types

    agent_types = load_agent_types(())
    base, source = benchmark_texts(file, agent_types)
    started = time.perf_counter()

    from ml.embeddings import MODEL_NAME, Embedder, freeze_long_lived, load_model
    from ml.semantic_router import SemanticRouter

    model = load_model()  # first: it makes the model libraries offline before they load
    import sentence_transformers
    import torch

    embedder = Embedder(model)
    router = SemanticRouter(agent_specs(agent_types), embedder=embedder)
    freeze_long_lived()  # as the router actor's process does once its model is loaded
    fresh = FreshTexts(base)

    router.decide_many(fresh.take(WARM_UP_TEXTS))
    model.encode([router.routing_text(t) for t in fresh.take(WARM_UP_TEXTS)],
                 batch_size=embedder.batch_size, normalize_embeddings=True,
                 show_progress_bar=False)
    single_decisions(router, fresh.take(20), 20)

    rounds = [batched_round(router, model, embedder.batch_size, fresh.take(texts))
              for _ in range(repeats)]
    ratio = statistics.median(r for round_ in rounds for r in round_["slice_ratios"])

    cached_pool = fresh.take(min(cached_decisions, CACHED_POOL))
    router.decide_many(cached_pool)
    cached = latency_ms(single_decisions(router, cached_pool, cached_decisions))
    uncached = latency_ms(single_decisions(router, fresh.take(uncached_decisions),
                                           uncached_decisions))
    return {
        "suite": "router",
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "sentence_transformers": sentence_transformers.__version__},
        "model": MODEL_NAME,
        "router": {"agent_types": len(agent_types), "index_examples": len(router.index),
                   "k": router.policy.k, "batch_size": embedder.batch_size},
        "texts": {"source": source, "distinct_base_texts": len(set(base)),
                  "per_repeat": texts, "each_never_seen_before": True},
        "repeats": repeats,
        "batched": {
            "statistic": "rates: best of repeats; ratio: median over all slices",
            "texts": texts,
            "interleaved_texts": INTERLEAVED_TEXTS,
            "routing_decisions_per_second": max(r["routing_per_second"] for r in rounds),
            "raw_encode_texts_per_second": max(r["raw_per_second"] for r in rounds),
            "ratio": round(ratio, 3),
            "goal_ratio": GOAL_RATIO,
            "meets_goal": ratio >= GOAL_RATIO,
            "rounds": rounds,
        },
        "cached_single": {**cached, "goal_p50_ms": GOAL_CACHED_P50_MS,
                          "meets_goal": cached["p50_ms"] < GOAL_CACHED_P50_MS},
        "uncached_single": uncached,
        "seconds": round(time.perf_counter() - started, 1),
    }


def run_router_benchmark(args: Any) -> dict[str, Any]:
    """Measure, then print the summary (or the JSON report with `--json`); `--output` also
    writes the JSON report to a file."""
    report = measure(args.texts, args.repeats, args.cached_decisions, args.uncached_decisions,
                     args.file)
    return publish_report(report, args, summary)


def summary(report: dict[str, Any]) -> str:
    batched, cached, uncached = (report["batched"], report["cached_single"],
                                 report["uncached_single"])
    router, machine = report["router"], report["machine"]

    def met(flag: bool) -> str:
        return "met" if flag else "missed"

    rows = [
        ("batched routing", f"{batched['routing_decisions_per_second']:.1f} decisions/s"),
        ("raw encode", f"{batched['raw_encode_texts_per_second']:.1f} texts/s"),
        ("routing / raw", f"{batched['ratio']:.3f} (median of slices; goal >= {GOAL_RATIO}: "
                          f"{met(batched['meets_goal'])})"),
        ("cached single", f"p50 {cached['p50_ms']:.3f} ms, p95 {cached['p95_ms']:.3f} ms "
                          f"over {cached['decisions']} (goal p50 < {GOAL_CACHED_P50_MS:g} ms: "
                          f"{met(cached['meets_goal'])})"),
        ("uncached single", f"p50 {uncached['p50_ms']:.3f} ms, p95 {uncached['p95_ms']:.3f} ms "
                            f"over {uncached['decisions']}"),
    ]
    header = (f"{report['model']}, {router['index_examples']} examples, k={router['k']}, "
              f"batch {router['batch_size']}; {batched['texts']} texts x {report['repeats']} "
              f"repeats from {report['texts']['source']}; {machine['cpus']} CPUs, "
              f"python {machine['python']}, torch {machine['torch']}; {report['seconds']} s")
    return "\n".join([header, *(f"{name:<16} {value}" for name, value in rows)])
