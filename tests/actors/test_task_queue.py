import time

from actors.task_queue import TaskQueue


def test_higher_priority_first_then_oldest_first():
    queue = TaskQueue()
    for task_id, priority in [("a", 0), ("b", 5), ("c", 0), ("d", 5)]:
        queue.push(task_id, priority)
    assert [queue.pop() for _ in range(5)] == ["b", "d", "a", "c", None]


def test_delayed_tasks_wait_for_their_time():
    queue = TaskQueue()
    queue.push("later", not_before=time.monotonic() + 0.2)
    queue.push("now")
    assert queue.pop() == "now"
    assert queue.pop() is None and len(queue) == 1
    assert queue.next_due() is not None
    time.sleep(0.25)
    assert queue.pop() == "later"
    assert queue.next_due() is None


def test_removed_tasks_are_skipped_and_pushing_twice_queues_once():
    queue = TaskQueue()
    queue.push("a")
    queue.push("a")
    queue.push("b", not_before=time.monotonic() + 10)
    assert queue.remove("a") and queue.remove("b") and not queue.remove("zzz")
    assert len(queue) == 0 and queue.pop() is None and queue.next_due() is None
