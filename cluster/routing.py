"""`ymera route`: the semantic router in this process, without a cluster.

It routes one description, evaluates the router on a labelled JSON Lines file, or fits the
"no confident route" thresholds on one and stores them in the state directory, where later
`ymera route` runs pick them up.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from storage.errors import InvalidRequest

POLICY_FILE = "router-policy.json"
FITTED_FIELDS = ("min_similarity", "min_confidence")


def load_policy(state_dir: Path) -> Any:
    """The routing policy, with thresholds from the state directory when calibrated."""
    from ml.decision import RoutingPolicy

    path = state_dir / POLICY_FILE
    if not path.exists():
        return RoutingPolicy()
    try:
        fitted = json.loads(path.read_text())
        return dataclasses.replace(RoutingPolicy(), **{k: float(fitted[k]) for k in FITTED_FIELDS})
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidRequest(f"{path} is not a calibration this platform wrote: {exc}") from exc


def save_policy(state_dir: Path, policy: Any) -> Path:
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / POLICY_FILE
    path.write_text(json.dumps({k: getattr(policy, k) for k in FITTED_FIELDS}, indent=2))
    return path


def router(state_dir: Path, agent_modules: list[str]) -> Any:
    from actors.registry import load_agent_types
    from ml.semantic_router import SemanticRouter

    return SemanticRouter(load_agent_types(agent_modules), policy=load_policy(state_dir))


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
    (decision,) = router(state_dir, agent_modules).decide_many([description])
    return decision.to_json()


def evaluate_file(state_dir: Path, agent_modules: list[str], path: str) -> Any:
    from ml.evaluation import evaluate

    return evaluate(router(state_dir, agent_modules), labelled_lines(path))


def calibrate_file(state_dir: Path, agent_modules: list[str], path: str) -> tuple[Any, Path]:
    from ml.evaluation import calibrate

    policy = calibrate(router(state_dir, agent_modules), labelled_lines(path))
    return policy, save_policy(state_dir, policy)
