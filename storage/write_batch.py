"""What the orchestrator hands `storage.task_store.TaskStore.apply`: writes that commit
together, and the tasks to read back in the same transaction."""

from __future__ import annotations

import dataclasses
from typing import Any

from storage.messages import Task
from storage.webhook_outbox import Notification


@dataclasses.dataclass
class WriteBatch:
    """Writes that commit together. Applied in this order: new tasks, new attempts, task
    updates, attempt updates, events, then the webhook deliveries `notifications` cause (the
    outbox, `storage.webhook_outbox`); within each kind, in the order they were added."""

    new_tasks: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    new_attempts: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    task_updates: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    attempt_updates: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    events: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    notifications: list[Notification] = dataclasses.field(default_factory=list)
    read_back: list[str] = dataclasses.field(default_factory=list)
    """Ids of tasks to read, with their model usage, in the same transaction once the writes
    are done (for callers waiting on them); `apply` leaves them in `found`, by id."""
    found: dict[str, Task] = dataclasses.field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return (len(self.new_tasks) + len(self.new_attempts) + len(self.task_updates)
                + len(self.attempt_updates) + len(self.events) + len(self.notifications))

    def extend(self, other: WriteBatch) -> None:
        for field in dataclasses.fields(self):
            if field.name != "found":
                getattr(self, field.name).extend(getattr(other, field.name))
