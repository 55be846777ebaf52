"""`ymera route`: the semantic router in this process, without a cluster.

It routes one description, evaluates the router on a labelled JSON Lines file, or fits the
"no confident route" thresholds on one and stores them in the state directory, where later
`ymera route` runs pick them up. Evaluation also reports the baselines of `ml.baseline` in the
same run, on the same encoder: the nearest-centroid router always, the `semantic-router` library
when asked (`library=True`, an optional extra). Calibration fits their thresholds too, stored
apart from the router's.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from storage.errors import InvalidRequest
from storage.private_files import private_directory

if TYPE_CHECKING:
    from ml.baseline import NearestCentroidRouter, SemanticRouterLibrary
    from ml.decision import RoutingPolicy

POLICY_FILE = "router-policy.json"
BASELINES_FILE = "router-baselines.json"
FITTED_FIELDS = ("min_similarity", "min_confidence")


class Thresholds(TypedDict, total=False):
    """The fitted fields of a `RoutingPolicy` (`FITTED_FIELDS`), as stored."""

    min_similarity: float
    min_confidence: float


def _thresholds(fitted: Any) -> Thresholds:
    """The stored thresholds as numbers; KeyError, TypeError or ValueError when malformed."""
    return {"min_similarity": float(fitted["min_similarity"]),
            "min_confidence": float(fitted["min_confidence"])}


def load_policy(state_dir: Path) -> Any:
    """The routing policy, with thresholds from the state directory when calibrated."""
    from ml.decision import RoutingPolicy

    path = state_dir / POLICY_FILE
    if not path.exists():
        return RoutingPolicy()
    try:
        fitted = json.loads(path.read_text())
        return dataclasses.replace(RoutingPolicy(), **_thresholds(fitted))
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidRequest(f"{path} is not a calibration this platform wrote: {exc}") from exc


def save_policy(state_dir: Path, policy: Any) -> Path:
    private_directory(state_dir)
    path = state_dir / POLICY_FILE
    path.write_text(json.dumps({k: getattr(policy, k) for k in FITTED_FIELDS}, indent=2))
    return path


def load_baseline_thresholds(state_dir: Path) -> dict[str, Thresholds]:
    """Each baseline's fitted thresholds by name; empty when never calibrated."""
    path = state_dir / BASELINES_FILE
    if not path.exists():
        return {}
    try:
        stored = json.loads(path.read_text())
        return {name: _thresholds(fitted) for name, fitted in stored.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidRequest(f"{path} is not a calibration this platform wrote: {exc}") from exc


def save_baseline_thresholds(state_dir: Path, policies: dict[str, Any]) -> Path:
    private_directory(state_dir)
    path = state_dir / BASELINES_FILE
    stored = {**load_baseline_thresholds(state_dir),
              **{name: {k: getattr(policy, k) for k in FITTED_FIELDS}
                 for name, policy in policies.items()}}
    path.write_text(json.dumps(stored, indent=2))
    return path


def router(state_dir: Path, agent_modules: list[str]) -> Any:
    from actors.registry import agent_specs, load_agent_types
    from ml.semantic_router import SemanticRouter

    return SemanticRouter(agent_specs(load_agent_types(agent_modules)),
                          policy=load_policy(state_dir))


def baselines(state_dir: Path, agent_modules: list[str], main: Any,
              library: bool = False) -> list[Any]:
    """The baseline routers on `main`'s encoder and text preparation, with their stored
    thresholds (or their defaults)."""
    from actors.registry import agent_specs, load_agent_types
    from ml.baseline import (CENTROID_POLICY, LIBRARY_POLICY, NearestCentroidRouter,
                             SemanticRouterLibrary)

    agent_types = agent_specs(load_agent_types(agent_modules))
    stored = load_baseline_thresholds(state_dir)
    chosen: list[tuple[type[NearestCentroidRouter] | type[SemanticRouterLibrary],
                       RoutingPolicy]] = [(NearestCentroidRouter, CENTROID_POLICY)]
    if library:
        chosen.append((SemanticRouterLibrary, LIBRARY_POLICY))
    return [kind(agent_types, main.embedder, prepare=main.routing_text,
                 policy=dataclasses.replace(default, **stored.get(kind.name, {})))
            for kind, default in chosen]


def labelled_lines(path: str) -> list[Any]:
    from ml.evaluation import load_lines

    try:
        return load_lines(path)
    except FileNotFoundError:
        raise InvalidRequest(f"no such file: {path}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidRequest(f"{path} is not labelled JSON Lines "
                             f'({{"description": ..., "expected": type or null}}): {exc}') from exc


def route_one(state_dir: Path, agent_modules: list[str], description: str) -> dict[str, Any]:
    from ml.router import check_description

    check_description(description)
    (decision,) = router(state_dir, agent_modules).decide_many([description])
    return decision.to_json()


def evaluate_file(state_dir: Path, agent_modules: list[str], path: str) -> Any:
    from ml.evaluation import evaluate

    return evaluate(router(state_dir, agent_modules), labelled_lines(path))


def compare_file(state_dir: Path, agent_modules: list[str], path: str,
                 library: bool = False) -> tuple[Any, dict[str, Any]]:
    """The router's report on the labelled file, and each baseline's report by name."""
    from ml.evaluation import evaluate

    lines = labelled_lines(path)
    main = router(state_dir, agent_modules)
    return evaluate(main, lines), {baseline.name: evaluate(baseline, lines)
                                   for baseline in baselines(state_dir, agent_modules, main,
                                                             library)}


def calibrate_file(state_dir: Path, agent_modules: list[str], path: str,
                   library: bool = False) -> tuple[Any, Path, dict[str, Any]]:
    """Fit and store the router's thresholds and the baselines'; returns the router's policy,
    where it is stored, and each baseline's policy by name."""
    from ml.evaluation import calibrate

    lines = labelled_lines(path)
    main = router(state_dir, agent_modules)
    policy = calibrate(main, lines)
    fitted = {baseline.name: calibrate(baseline, lines)
              for baseline in baselines(state_dir, agent_modules, main, library)}
    save_baseline_thresholds(state_dir, fitted)
    return policy, save_policy(state_dir, policy), fitted
