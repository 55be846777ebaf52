"""The agent contract, from one import: everything a third-party agent is written against.

    from actors.sdk import Agent, AgentSpec, AgentTask, Resources, invalid

An agent subclasses `Agent`, declares an `AgentSpec` (its `name` must match
`AGENT_TYPE_NAME`) and implements `async run(task: AgentTask)`, returning any JSON value. It
raises `InvalidTaskInput` (or `invalid(message, field=...)`) for a task that is wrong for it,
never retried, and `RetryableAgentError` for transient trouble, retried with backoff. The
replica hosting it sets `context` (an `AgentContext`), `cluster` (a `ClusterFacts` port),
`llm` (a `LanguageModels` port) and `events` (a `TaskOutput` port) before `setup()`, and
records each attempt as an `AgentResult`. A type declaring `on_message="task"` maps each
`InboxMessage` to its inbox to a task in the classmethod `message_task`. See `docs/agents.md`.

Every name here is API for agent authors: it is kept when the platform's modules move.
Importing this module is cheap and never imports Ray or the orchestrator.
"""

from __future__ import annotations

from actors.agent import (
    MAX_PAYLOAD_BYTES,
    Agent,
    ClusterFacts,
    LanguageModels,
    TaskOutput,
    invalid,
    json_type,
    require_payload_within,
)
from actors.errors import AgentError, InvalidTaskInput, RetryableAgentError
from storage.messages import (
    AGENT_TYPE_NAME,
    AgentContext,
    AgentResult,
    AgentSpec,
    AgentTask,
    InboxMessage,
    Resources,
    TaskError,
)

__all__ = [
    "AGENT_TYPE_NAME",
    "MAX_PAYLOAD_BYTES",
    "Agent",
    "AgentContext",
    "AgentError",
    "AgentResult",
    "AgentSpec",
    "AgentTask",
    "ClusterFacts",
    "InboxMessage",
    "InvalidTaskInput",
    "LanguageModels",
    "Resources",
    "RetryableAgentError",
    "TaskError",
    "TaskOutput",
    "invalid",
    "json_type",
    "require_payload_within",
]
