"""How well a router routes: measured against labelled task descriptions, and its thresholds fitted.

A labelled line is a description and the agent type that should take it, or None when no agent
should ("out of scope"). A line marked `"optional": true` names a type that is registered only
on some platforms (`llm`, when a model is configured): for a router that does not know the type,
the line is out of scope. `evaluate` reports:

- accuracy: in-scope lines routed to the expected type; a rejected in-scope line counts as wrong;
- ranking accuracy: in-scope lines whose top candidate is the expected type, rejected or not;
- macro-F1 over every label seen, "none" (rejected / out of scope) included;
- out-of-scope precision (rejections that were out of scope) and recall (out-of-scope lines
  rejected);
- the confusion matrix (rows expected, columns predicted, both with "none") and every error.

`calibrate` fits `min_similarity` and `min_confidence` by grid search, maximising the share of
lines decided right (routed to the expected type, or rejected when out of scope), with
out-of-scope lines weighted by `oos_weight`. Ties go to the lowest `min_confidence`, then to the
middle of the tied `min_similarity` values, the choice least sensitive to either edge. A line the
router rejects whatever the thresholds (its out-of-scope examples outvoted every agent type)
stays rejected at every grid point.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ml.decision import Decision, RoutingPolicy

NONE = "none"
SIMILARITY_GRID = tuple(float(v) for v in np.round(np.arange(0.0, 0.8, 0.005), 3))
CONFIDENCE_GRID = tuple(float(v) for v in np.round(np.arange(0.0, 1.0, 0.025), 3))


class BatchRouter(Protocol):
    policy: RoutingPolicy

    def decide_many(self, descriptions: Sequence[str],
                    policy: RoutingPolicy | None = None) -> list[Decision]: ...


@dataclasses.dataclass(frozen=True)
class LabelledLine:
    description: str
    expected: str | None
    optional: bool = False  # `expected` may be unregistered: then no agent should take it

    def for_types(self, known: Iterable[str] | None) -> LabelledLine:
        """The line as a router knowing the types `known` must decide it."""
        if not self.optional or known is None or self.expected in set(known):
            return self
        return LabelledLine(self.description, None)


def load_lines(path: str | Path) -> list[LabelledLine]:
    """The labelled lines of a JSON-lines file of {"description", "expected"} objects."""
    with open(path, encoding="utf-8") as file:
        return [_as_line(json.loads(row)) for row in file if row.strip()]


@dataclasses.dataclass(frozen=True)
class LineError:
    """One line decided wrong. `predicted` is None when the router rejected it."""

    description: str
    expected: str | None
    predicted: str | None
    top_candidate: str | None
    confidence: float
    similarity: float


@dataclasses.dataclass(frozen=True)
class Report:
    lines: int
    in_scope: int
    out_of_scope: int
    accuracy: float
    ranking_accuracy: float
    macro_f1: float
    oos_precision: float
    oos_recall: float
    labels: tuple[str, ...]
    confusion: dict[str, dict[str, int]]
    errors: tuple[LineError, ...]
    policy: RoutingPolicy

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["labels"] = list(self.labels)
        data["errors"] = [dataclasses.asdict(error) for error in self.errors]
        return data

    def summary(self) -> str:
        """The headline figures: the first lines of `to_text`."""
        return "\n".join([
            f"{self.lines} lines: {self.in_scope} in scope, {self.out_of_scope} out of scope; "
            f"min_similarity {self.policy.min_similarity:.3f}, "
            f"min_confidence {self.policy.min_confidence:.3f}",
            f"  in-scope accuracy   {self.accuracy:.3f}  (top candidate right: "
            f"{self.ranking_accuracy:.3f})",
            f"  macro-F1            {self.macro_f1:.3f}",
            f"  out of scope        precision {self.oos_precision:.3f}, "
            f"recall {self.oos_recall:.3f}",
        ])

    def to_text(self) -> str:
        width = max(len(label) for label in self.labels)
        columns = [label[:8] for label in self.labels]
        lines = [
            self.summary(),
            "",
            "confusion (rows expected, columns predicted):",
            " " * (width + 2) + " ".join(f"{c:>8}" for c in columns),
        ]
        for expected in self.labels:
            row = self.confusion.get(expected, {})
            cells = " ".join(f"{row.get(p, 0) or '.':>8}" for p in self.labels)
            lines.append(f"  {expected:<{width}}" + cells)
        lines += ["", f"errors ({len(self.errors)}):"]
        for error in self.errors:
            expected, predicted = error.expected or NONE, error.predicted or NONE
            lines.append(f"  {expected:>{width}} -> {predicted:<{width}} "
                         f"conf {error.confidence:.2f} sim {error.similarity:.2f}  "
                         f"{_one_line(error.description)}")
        return "\n".join(lines)


def evaluate(router: BatchRouter, lines: Iterable[LabelledLine | Mapping[str, Any]],
             policy: RoutingPolicy | None = None) -> Report:
    """`router`'s report on `lines`, deciding with `policy` (by default the router's own)."""
    labelled = _labelled(router, lines)
    policy = policy or router.policy
    decisions = router.decide_many([line.description for line in labelled], policy=policy)
    expected = [line.expected or NONE for line in labelled]
    predicted = [d.agent_type if d.routed and d.agent_type else NONE for d in decisions]
    in_scope = [i for i, label in enumerate(expected) if label != NONE]
    out_of_scope = [i for i, label in enumerate(expected) if label == NONE]
    rejected = [i for i, label in enumerate(predicted) if label == NONE]
    labels = tuple(sorted(set(expected) | set(predicted), key=lambda l: (l == NONE, l)))
    confusion = {e: {p: 0 for p in labels} for e in labels}
    for e, p in zip(expected, predicted):
        confusion[e][p] += 1
    errors = tuple(
        LineError(line.description, line.expected, None if p == NONE else p, d.agent_type,
                  d.confidence, d.similarity)
        for line, e, p, d in zip(labelled, expected, predicted, decisions) if e != p)
    return Report(
        lines=len(labelled),
        in_scope=len(in_scope),
        out_of_scope=len(out_of_scope),
        accuracy=_ratio(sum(predicted[i] == expected[i] for i in in_scope), len(in_scope)),
        ranking_accuracy=_ratio(sum(decisions[i].agent_type == expected[i] for i in in_scope),
                                len(in_scope)),
        macro_f1=_macro_f1(confusion, labels),
        oos_precision=_ratio(sum(expected[i] == NONE for i in rejected), len(rejected)),
        oos_recall=_ratio(sum(predicted[i] == NONE for i in out_of_scope), len(out_of_scope)),
        labels=labels,
        confusion=confusion,
        errors=errors,
        policy=policy,
    )


def calibrate(router: BatchRouter, lines: Iterable[LabelledLine | Mapping[str, Any]],
              similarity_grid: Sequence[float] = SIMILARITY_GRID,
              confidence_grid: Sequence[float] = CONFIDENCE_GRID,
              oos_weight: float = 1.0) -> RoutingPolicy:
    """The router's policy with `min_similarity` and `min_confidence` fitted on `lines`."""
    labelled = _labelled(router, lines)
    if not labelled:
        raise ValueError("calibrate needs labelled lines")
    open_policy = dataclasses.replace(router.policy, min_similarity=-1.0, min_confidence=0.0)
    decisions = router.decide_many([line.description for line in labelled], policy=open_policy)
    out_of_scope = np.array([line.expected is None for line in labelled])
    top_right = np.array([d.agent_type == line.expected and line.expected is not None
                          for d, line in zip(decisions, labelled)])
    similarity = np.array([d.similarity for d in decisions])
    confidence = np.array([d.confidence for d in decisions])
    routable = np.array([d.routed for d in decisions])
    routed_s = similarity[None, :] >= np.asarray(similarity_grid, dtype=float)[:, None]
    routed_c = confidence[None, :] >= np.asarray(confidence_grid, dtype=float)[:, None]
    # [similarity, confidence, line]
    routed = routed_s[:, None, :] & routed_c[None, :, :] & routable[None, None, :]
    right = (routed & top_right).sum(axis=2) + oos_weight * (~routed & out_of_scope).sum(axis=2)
    objective = right / (int((~out_of_scope).sum()) + oos_weight * int(out_of_scope.sum()))
    tied = np.argwhere(objective >= objective.max() - 1e-12)
    lowest_c = tied[:, 1].min()
    tied_s = sorted(tied[tied[:, 1] == lowest_c][:, 0])
    best_s = tied_s[(len(tied_s) - 1) // 2]
    return dataclasses.replace(router.policy, min_similarity=float(similarity_grid[best_s]),
                               min_confidence=float(confidence_grid[lowest_c]))


def _as_line(line: LabelledLine | Mapping[str, Any]) -> LabelledLine:
    if isinstance(line, LabelledLine):
        return line
    return LabelledLine(str(line["description"]), line.get("expected") or None,
                        bool(line.get("optional", False)))


def _labelled(router: BatchRouter,
              lines: Iterable[LabelledLine | Mapping[str, Any]]) -> list[LabelledLine]:
    """`lines` as `router` must decide them (optional types it lacks: out of scope)."""
    known = getattr(router, "agent_types", None)
    return [_as_line(line).for_types(known) for line in lines]


def _ratio(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def _macro_f1(confusion: Mapping[str, Mapping[str, int]], labels: Sequence[str]) -> float:
    scores = []
    for label in labels:
        true_positive = confusion[label][label]
        predicted = sum(confusion[e][label] for e in labels)
        actual = sum(confusion[label].values())
        precision, recall = _ratio(true_positive, predicted), _ratio(true_positive, actual)
        scores.append(_ratio(2 * precision * recall, precision + recall))
    return sum(scores) / len(scores) if scores else 0.0


def _one_line(text: str, limit: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"
