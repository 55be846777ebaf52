"""Checking a workflow document and building its `WorkflowSpec` (see `storage.workflow_spec`).

`parse_document` refuses with `InvalidRequest` whose message and details name the step (its id, or
`steps[i]` when the id itself is wrong) and the field. With `limits` and `agent_types` it is the
submission check; without them it only rebuilds a stored spec's shape.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection
from typing import Any, NoReturn

from storage.errors import InvalidRequest
from storage.messages import AGENT_TYPE_NAME, NAME
from storage.workflow_refs import (
    ExpressionError, canonical_template, expression_roots, template_expressions)
from storage.workflow_model import (
    _SPEC_KEYS, _STEP_KEYS, FAILURE_POLICIES, TIMEOUT_OUTCOMES, ApprovalSpec, MapSpec, StepSpec,
    TimerSpec, WorkflowLimits, WorkflowSpec, normalize_time)

PRIORITY_RANGE = (-100, 100)
"""A step's priority, as a task's (`actors.validation.PRIORITY_RANGE`)."""


def _refuse(step: str | None, field: str, problem: str) -> NoReturn:
    where = f"step {step!r} {field}".rstrip() if step is not None else field
    details: dict[str, Any] = {"field": field}
    if step is not None:
        details["step"] = step
    raise InvalidRequest(f"{where}: {problem}", details)


def _number(value: Any, step: str | None, field: str, maximum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        _refuse(step, field, f"must be a number of seconds, got {value!r}")
    if not 0 < value <= maximum:
        _refuse(step, field, f"must be more than 0 and at most {maximum:g} seconds, got {value!r}")
    return float(value)


def _whole(value: Any, step: str | None, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        _refuse(step, field, f"must be a whole number from {low} to {high}, got {value!r}")
    return value


def _object(value: Any, step: str | None, field: str, keys: Collection[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        _refuse(step, field, f"must be an object, got {value!r}")
    unknown = sorted(set(value) - set(keys))
    if unknown:
        _refuse(step, f"{field}.{unknown[0]}" if field else unknown[0],
                f"is not a known field; known: {', '.join(keys)}")
    return value


def _limits(data: Any, platform: WorkflowLimits | None) -> WorkflowLimits:
    names = [f.name for f in dataclasses.fields(WorkflowLimits)]
    given = _object(data if data is not None else {}, None, "limits", names)
    if platform is None:
        return WorkflowLimits(**given)
    for name, value in given.items():
        bound = getattr(platform, name)
        kinds = (int,) if isinstance(bound, int) else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or not 0 < value <= bound:
            _refuse(None, f"limits.{name}", f"must be more than 0 and at most the platform's "
                                            f"{bound:g}, got {value!r}")
    return dataclasses.replace(platform, **given)


def _expression(text: Any, step: str, field: str) -> Any:
    if not isinstance(text, str):
        _refuse(step, field, f"must be a JMESPath expression text, got {text!r}")
    try:
        return expression_roots(text)
    except ExpressionError as exc:
        _refuse(step, field, str(exc))


def _map(value: Any, step: str, limits: WorkflowLimits) -> MapSpec:
    data = {"over": value} if isinstance(value, str) else value
    data = _object(data, step, "map_over", ("over", "max_width", "parallelism"))
    if "over" not in data:
        _refuse(step, "map_over.over", "is required: the expression of the list to map over")
    width = _whole(data.get("max_width", limits.max_fan_out), step, "map_over.max_width", 1,
                   limits.max_fan_out)
    parallelism = _whole(data.get("parallelism", min(width, limits.max_parallelism)), step,
                         "map_over.parallelism", 1, limits.max_parallelism)
    return MapSpec(data["over"], width, parallelism)


def _approval(value: Any, step: str, limits: WorkflowLimits) -> ApprovalSpec:
    data = _object(value, step, "approval", ("timeout_s", "on_timeout"))
    if data.get("timeout_s") is None:
        _refuse(step, "approval.timeout_s", "is required: how long to wait for a decision")
    timeout = _number(data["timeout_s"], step, "approval.timeout_s", limits.max_run_duration_s)
    outcome = data.get("on_timeout", "reject")
    if outcome not in TIMEOUT_OUTCOMES:
        _refuse(step, "approval.on_timeout", f"must be one of {', '.join(TIMEOUT_OUTCOMES)}, "
                                             f"got {outcome!r}")
    return ApprovalSpec(timeout, outcome)


def _timer(value: Any, step: str, limits: WorkflowLimits) -> TimerSpec:
    data = _object(value, step, "timer", ("wait_s", "until"))
    if (data.get("wait_s") is None) == (data.get("until") is None):
        _refuse(step, "timer", "give exactly one of wait_s or until")
    if data.get("wait_s") is not None:
        return TimerSpec(wait_s=_number(data["wait_s"], step, "timer.wait_s",
                                        limits.max_run_duration_s))
    try:
        return TimerSpec(until=normalize_time(data["until"]))
    except ValueError as exc:
        _refuse(step, "timer.until", f"{exc}, got {data['until']!r}")


def _step(index: int, data: Any, limits: WorkflowLimits, agent_types: frozenset[str] | None
          ) -> StepSpec:
    if not isinstance(data, dict):
        _refuse(f"steps[{index}]", "", f"must be an object, got {data!r}")
    step_id = data.get("id")
    if not isinstance(step_id, str) or not NAME.match(step_id):
        _refuse(f"steps[{index}]", "id", f"must be a letter or digit, then up to 63 letters, "
                                         f"digits or _.:- , got {step_id!r}")
    _object(data, step_id, "", _STEP_KEYS)
    agent_type, description = data.get("agent_type"), data.get("description")
    if agent_type is not None and description is not None:
        _refuse(step_id, "agent_type", "give agent_type or description, not both")
    if agent_type is not None and (not isinstance(agent_type, str)
                                   or not AGENT_TYPE_NAME.match(agent_type)
                                   or (agent_types is not None and agent_type not in agent_types)):
        known = ", ".join(sorted(agent_types or ()))
        _refuse(step_id, "agent_type", f"unknown agent type {agent_type!r}; known: {known}")
    if description is not None and (not isinstance(description, str) or not description.strip()):
        _refuse(step_id, "description", "must be a non-empty text")
    approval = _approval(data["approval"], step_id, limits) if "approval" in data else None
    timer = _timer(data["timer"], step_id, limits) if "timer" in data else None
    if approval is not None and timer is not None:
        _refuse(step_id, "timer", "a step waits for an approval or a timer, not both")
    if agent_type is None and description is None:
        if approval is None and timer is None:
            _refuse(step_id, "agent_type", "give agent_type or description (or make the step "
                                           "an approval or a timer)")
        if "map_over" in data:
            _refuse(step_id, "map_over", "only a task (agent_type or description) is mapped")
    payload = data.get("payload", {})
    if not isinstance(payload, dict):
        _refuse(step_id, "payload", f"must be an object, got {payload!r}")
    depends_on = data.get("depends_on", [])
    if not isinstance(depends_on, list) or not all(isinstance(d, str) for d in depends_on):
        _refuse(step_id, "depends_on", f"must be a list of step ids, got {depends_on!r}")
    if data.get("condition") is not None:
        _expression(data["condition"], step_id, "condition")
    compensate = data.get("compensate")
    if compensate is not None and not isinstance(compensate, str):
        _refuse(step_id, "compensate", f"must be a step id, got {compensate!r}")
    return StepSpec(
        id=step_id, agent_type=agent_type, description=description,
        payload=canonical_template(payload), depends_on=tuple(depends_on),
        condition=data.get("condition"),
        map_over=_map(data["map_over"], step_id, limits) if "map_over" in data else None,
        approval=approval, timer=timer,
        timeout_s=(None if data.get("timeout_s") is None else
                   _number(data["timeout_s"], step_id, "timeout_s", limits.max_step_timeout_s)),
        max_attempts=(None if data.get("max_attempts") is None else
                      _whole(data["max_attempts"], step_id, "max_attempts", 1,
                             limits.max_attempts)),
        priority=_whole(data.get("priority", 0), step_id, "priority", *PRIORITY_RANGE),
        compensate=compensate)


def parse_document(data: Any, *, limits: WorkflowLimits | None,
                   agent_types: frozenset[str] | None) -> WorkflowSpec:
    """The spec of a workflow document; see the module docstring."""
    if not isinstance(data, dict):
        _refuse(None, "document", "a workflow must be an object with 'name' and 'steps'")
    data = _object(data, None, "", _SPEC_KEYS)
    name, version = data.get("name"), data.get("version", "1")
    if not isinstance(name, str) or not NAME.match(name):
        _refuse(None, "name", f"must be a letter or digit, then up to 63 letters, digits or "
                              f"_.:- , got {name!r}")
    version = str(version) if isinstance(version, int) and not isinstance(version, bool) else version
    if not isinstance(version, str) or not NAME.match(version):
        _refuse(None, "version", f"must be a short name like \"1\" or \"2026-01\", got {version!r}")
    policy = data.get("failure_policy", "fail_fast")
    if policy not in FAILURE_POLICIES:
        _refuse(None, "failure_policy", f"must be one of {', '.join(FAILURE_POLICIES)}, "
                                        f"got {policy!r}")
    bounds = _limits(data.get("limits"), limits)
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        _refuse(None, "steps", "must be a non-empty list of steps")
    if len(raw_steps) > bounds.max_steps:
        _refuse(None, "steps", f"has {len(raw_steps)} steps; at most {bounds.max_steps} per run")
    steps = [_step(i, item, bounds, agent_types) for i, item in enumerate(raw_steps)]
    steps = _check_graph(steps)
    return WorkflowSpec(name, version, tuple(steps), policy, bounds)


def _check_graph(steps: list[StepSpec]) -> list[StepSpec]:
    """Steps with `depends_on` in document order, after the graph and reference checks."""
    position: dict[str, int] = {}
    for index, step in enumerate(steps):
        if step.id in position:
            _refuse(step.id, "id", f"is used by steps {position[step.id]} and {index}")
        position[step.id] = index
    compensated: dict[str, str] = {}
    for step in steps:
        for dep in step.depends_on:
            if dep not in position:
                _refuse(step.id, "depends_on", f"names step {dep!r}, which does not exist")
            if dep == step.id:
                _refuse(step.id, "depends_on", "a step cannot depend on itself")
        if step.compensate is not None:
            _check_compensation(step, steps, position, compensated)
    for step in steps:
        clash = next((d for d in step.depends_on if d in compensated), None)
        if clash is not None:
            _refuse(step.id, "depends_on", f"names {clash!r}, a compensation step, which runs "
                                           "only when the run fails")
    steps = [dataclasses.replace(step, depends_on=tuple(sorted(set(step.depends_on),
                                                               key=position.__getitem__)))
             for step in steps]
    _refuse_cycle(steps)
    ancestors = _ancestors(steps)
    for step in steps:
        upstream = ancestors[step.id]
        if step.id in compensated:
            upstream = ancestors[compensated[step.id]] | {compensated[step.id]}
        _check_references(step, upstream, position)
    return steps


def _check_compensation(step: StepSpec, steps: list[StepSpec], position: dict[str, int],
                        compensated: dict[str, str]) -> None:
    target = step.compensate
    if target not in position:
        _refuse(step.id, "compensate", f"names step {target!r}, which does not exist")
    if target == step.id:
        _refuse(step.id, "compensate", "a step cannot compensate itself")
    if target in compensated:
        _refuse(step.id, "compensate", f"step {target!r} already compensates "
                                       f"{compensated[target]!r}; give each its own")
    helper = steps[position[target]]
    if not helper.is_task or helper.depends_on or helper.condition or helper.map_over \
            or helper.approval or helper.timer or helper.compensate:
        _refuse(step.id, "compensate", f"step {target!r} must be a plain task: no depends_on, "
                                       "condition, map_over, approval, timer or compensate")
    compensated[target] = step.id


def _refuse_cycle(steps: list[StepSpec]) -> None:
    graph = {step.id: step.depends_on for step in steps}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for dep in graph[node]:
            if state.get(dep) == 1:
                cycle = path[path.index(dep):]
                _refuse(cycle[0], "depends_on", f"steps form a cycle: "
                                                f"{' -> '.join([*cycle, cycle[0]])}")
            if dep not in state:
                visit(dep)
        path.pop()
        state[node] = 2

    for step in steps:
        if step.id not in state:
            visit(step.id)


def _ancestors(steps: list[StepSpec]) -> dict[str, frozenset[str]]:
    found: dict[str, frozenset[str]] = {}
    for step_id in _topological(steps):
        deps = next(step.depends_on for step in steps if step.id == step_id)
        found[step_id] = frozenset(deps).union(*(found[d] for d in deps))
    return found


def _topological(steps: list[StepSpec]) -> list[str]:
    done: list[str] = []
    seen: set[str] = set()
    pending = list(steps)
    while pending:
        ready = [s for s in pending if all(d in seen for d in s.depends_on)]
        done.extend(s.id for s in ready)
        seen.update(s.id for s in ready)
        pending = [s for s in pending if s.id not in seen]
    return done


def _check_references(step: StepSpec, upstream: frozenset[str], position: dict[str, int]) -> None:
    expressions = [("payload", e) for e in template_expressions(step.payload)]
    if step.condition is not None:
        expressions.append(("condition", step.condition))
    if step.map_over is not None:
        expressions.append(("map_over.over", step.map_over.over))
    for field_name, text in expressions:
        roots = _expression(text, step.id, field_name)
        if roots.item and (field_name != "payload" or step.map_over is None):
            _refuse(step.id, field_name, "reads item, which only a mapped step's payload has")
        for name in sorted(roots.steps):
            if name not in position:
                _refuse(step.id, field_name, f"reads step {name!r}, which does not exist")
            if name not in upstream:
                _refuse(step.id, field_name, f"reads step {name!r}, which is not upstream of it; "
                                             "add it to depends_on")
