"""Agents that exist only to test the platform's supervision: they sleep, hang, fail on cue,
and tell which process ran them. Registered through `YMERA_AGENT_MODULES`-style import paths,
exactly as a third-party agent would be."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

from actors.agent import Agent
from actors.errors import InvalidTaskInput, RetryableAgentError
from storage.messages import AgentSpec, AgentTask, InboxMessage, Resources

_SPEC = dict(capabilities=("testing",), examples=("test the platform",),
             resources=Resources(num_cpus=0.01))


class Sleeper(Agent):
    """Sleeps `seconds` (cooperatively), then answers with the pid that ran the attempt. On
    request it also logs `log`, keeps a CPU busy for `burn_s`, answers a value nested `nest`
    levels deep as `nested`, and (`whoami`) the name of the Ray task running it."""

    spec = AgentSpec(name="sleeper", description="sleeps on request", concurrency=16, **_SPEC)

    async def run(self, task: AgentTask) -> dict:
        if "log" in task.payload:
            logging.getLogger("tests.sleeper").info("%s", task.payload["log"])
        burn_until = time.thread_time() + float(task.payload.get("burn_s", 0))
        while time.thread_time() < burn_until:
            pass
        await asyncio.sleep(float(task.payload.get("seconds", 0)))
        answer = {"pid": os.getpid(), "attempt": task.attempt, "echo": task.payload.get("echo")}
        if task.payload.get("whoami"):  # the name Ray (and its dashboard) gives this call
            import ray

            answer["ray_task_name"] = ray.get_runtime_context().get_task_name()
        if "nest" in task.payload:
            nested: object = "bottom"
            for _ in range(int(task.payload["nest"])):
                nested = {"n": nested}
            answer["nested"] = nested
        return answer


class Hanger(Agent):
    """Blocks its whole process (as a hung native call would) unless the flag file exists."""

    spec = AgentSpec(name="hanger", description="hangs until healthy", concurrency=4, **_SPEC)

    async def run(self, task: AgentTask) -> dict:
        flag = Path(task.payload["healthy_flag"])
        if not flag.exists():
            time.sleep(float(task.payload.get("hang_s", 120)))
        return {"healthy": flag.exists(), "attempt": task.attempt}


class Flaky(Agent):
    """Fails with a retryable error until attempt `succeed_on`; `bad` input fails for good."""

    spec = AgentSpec(name="flaky", description="fails on cue", concurrency=16, **_SPEC)

    async def run(self, task: AgentTask) -> dict:
        if task.payload.get("bad"):
            raise InvalidTaskInput("this input is bad on purpose", {"field": "bad"})
        if task.attempt < int(task.payload.get("succeed_on", 1)):
            raise RetryableAgentError(f"transient failure on attempt {task.attempt}")
        return {"attempt": task.attempt}


class BrokenStart(Agent):
    """Cannot start: its setup always raises."""

    spec = AgentSpec(name="broken_start", description="never starts", concurrency=1, **_SPEC)

    async def setup(self) -> None:
        raise RuntimeError("this agent cannot start")

    async def run(self, task: AgentTask) -> dict:
        return {}


class Listener(Agent):
    """Starts work from its inbox (`on_message="task"`) and echoes the task's payload; `bad`
    input fails for good, `size` answers that many characters. Its mapping leaves a body with
    `leave` for a reader, refuses one with `refuse`, breaks (a bug) on one with `explode`,
    forgets the description for `undescribed` and adds a field no task has for
    `unknown_field`."""

    spec = AgentSpec(name="listener", description="works from its inbox", concurrency=8,
                     on_message="task", **_SPEC)

    @classmethod
    def message_task(cls, message: InboxMessage) -> dict[str, Any] | None:
        if isinstance(message.body, dict) and message.body.get("leave"):
            return None
        if isinstance(message.body, dict) and message.body.get("explode"):
            raise KeyError("explode")
        if isinstance(message.body, dict) and message.body.get("refuse"):
            raise InvalidTaskInput("this message is refused on purpose", {"field": "refuse"})
        if isinstance(message.body, dict) and message.body.get("undescribed"):
            return {"payload": {}}
        if isinstance(message.body, dict) and message.body.get("unknown_field"):
            return {"description": "paint it", "payload": {}, "colour": "red"}
        return super().message_task(message)

    async def run(self, task: AgentTask) -> dict:
        if task.payload.get("bad"):
            raise InvalidTaskInput("this input is bad on purpose", {"field": "bad"})
        if "size" in task.payload:
            return {"text": "x" * int(task.payload["size"])}
        return {"echo": task.payload, "description": task.description, "tenant": task.tenant}


LISTENER_PATH = "tests.support.agents:Listener"

TEST_AGENT_PATHS = tuple(
    f"tests.support.agents:{cls.__name__}" for cls in (Sleeper, Hanger, Flaky)
)
