"""The `llm` agent from Python: an answer routed by meaning, a classification, JSON extracted to
a schema, a streamed answer read as it is written, and what it all cost.

    # a platform with a model: any OpenAI-compatible endpoint
    YMERA_LLM_BASE_URL=http://127.0.0.1:11434/v1 YMERA_LLM_MODEL=llama3.1 ymera up
    python examples/llm_python.py

Streamed text arrives as `output_delta` events of the task (also on its SSE stream,
`GET /api/v1/tasks/{id}/stream`); an answer that breaks off mid-stream shows an
`output_error` event and is retried by the platform, streaming again from the start with its
own attempt number, so the reader keeps the events of the attempt that succeeded.
"""

from __future__ import annotations

import time

from cluster.client import Client

INVOICE_SCHEMA = {
    "type": "object", "required": ["number", "total", "currency"],
    "properties": {"number": {"type": "integer"}, "total": {"type": "number"},
                   "currency": {"type": "string", "pattern": "^[A-Z]{3}$"}},
}


def show(client: Client, task_id: str) -> dict:
    task = client.wait(task_id, 120)
    if task.error is not None:
        raise SystemExit(f"{task.agent_type} task {task.id} {task.status.value}: "
                         f"{task.error.message}")
    return task.result


def stream(client: Client, task_id: str) -> str:
    """Print the answer as it is written; the text of the attempt that succeeded."""
    seen, pieces, attempt = 0, [], None
    while True:
        for event in client.events(task_id, after_id=seen):
            seen = event.id
            if event.kind == "output_delta":
                if event.attempt != attempt:  # a retry streams again from the start
                    attempt, pieces = event.attempt, []
                pieces.append(event.data["text"])
                print(event.data["text"], end="", flush=True)
            elif event.kind == "output_error":
                print(f"\n[the answer broke off: {event.data['message']}; retrying]")
            elif event.kind in ("succeeded", "failed", "dead", "cancelled"):
                print()
                return "".join(pieces)
        time.sleep(0.1)


def main() -> None:
    client = Client.connect()
    routed = show(client, client.submit("translate 'good morning' into French"))
    print("translation:", routed["text"])

    label = show(client, client.submit(
        "route this support ticket", agent_type="llm",
        payload={"operation": "classify", "text": "I was charged twice for my order",
                 "labels": ["billing", "shipping", "bug", "other"]}))
    print("label:", label["label"])

    invoice = show(client, client.submit(
        "pull the invoice fields out", agent_type="llm",
        payload={"operation": "extract", "schema": INVOICE_SCHEMA,
                 "text": "Invoice no. 4417 from ACME GmbH, total due 1,250.00 EUR by 1 March."}))
    print("invoice:", invoice["data"])

    task_id = client.submit("write a two-sentence welcome for new users", agent_type="llm",
                            payload={"stream": True, "max_tokens": 120})
    stream(client, task_id)
    task = client.get(task_id)
    print("tokens and cost of that task:", task.llm_usage)
    print("this tenant so far:", client.llm_usage()["usage"])


if __name__ == "__main__":
    main()
