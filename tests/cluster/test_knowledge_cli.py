"""`ymera knowledge ...` and the client's knowledge calls, run against a real `knowledge` agent
in this process (its tasks run at once on a SQLite store): adding a directory with a progress
bar, refused documents named, search, answers with citations, listings, deletes, `--json` and
`--tenant`."""

from __future__ import annotations

import asyncio
import json
import shutil
import types
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.agents.knowledge import Knowledge
from actors.errors import AgentError
from cluster import cli, cli_common
from cluster.knowledge_client import KnowledgeCalls
from storage.database import migrate
from storage.messages import AgentContext, AgentTask, TaskError, TaskRequest, TaskStatus

CORPUS = Path(__file__).resolve().parents[1] / "data" / "knowledge_corpus"


class AgentClient(KnowledgeCalls):
    """The client's knowledge calls with each task run by the agent as it is submitted."""

    def __init__(self, agent: Knowledge, loop: asyncio.AbstractEventLoop) -> None:
        self.agent = agent
        self.loop = loop
        self.tasks: dict[str, Any] = {}
        self.requests: list[TaskRequest] = []

    def submit_many(self, requests: list[TaskRequest]) -> list[str]:
        ids = []
        for request in requests:
            self.requests.append(request)
            task_id = uuid.uuid4().hex
            attempt = AgentTask(task_id, 1, "knowledge", request.description, request.payload,
                                60.0, request.tenant)
            try:
                result = self.loop.run_until_complete(self.agent.run(attempt))
                outcome = (TaskStatus.SUCCEEDED, result, None)
            except AgentError as exc:
                outcome = (TaskStatus.FAILED, None, TaskError(exc.code, exc.message, False,
                                                              type(exc).__name__, exc.details))
            self.tasks[task_id] = types.SimpleNamespace(
                id=task_id, status=outcome[0], result=outcome[1], error=outcome[2])
            ids.append(task_id)
        return ids

    def wait_many(self, task_ids: list[str], timeout_s: float | None = None) -> list[Any]:
        return [self.tasks[task_id] for task_id in task_ids]


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AgentClient]:
    url = f"sqlite:///{tmp_path / 'knowledge.db'}"
    migrate(url)
    loop = asyncio.new_event_loop()
    agent = Knowledge()
    agent.context = AgentContext("knowledge-0", "test", url, {})
    loop.run_until_complete(agent.setup())
    fake = AgentClient(agent, loop)
    monkeypatch.setattr(cli_common, "client_of", lambda args: fake)
    yield fake
    loop.run_until_complete(agent.close())
    loop.close()


def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    shutil.copytree(CORPUS, folder)
    (folder / "notes.csv").write_text("a,b\n")  # not a document type: skipped
    return folder


def test_add_a_directory_then_answer_and_search(client: AgentClient, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["knowledge", "add", str(docs(tmp_path)), "--collection", "handbook"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"added {len(list(CORPUS.iterdir()))} document(s) to "
                                   "handbook")
    assert f"] {len(list(CORPUS.iterdir()))}/{len(list(CORPUS.iterdir()))} done" in captured.err
    assert {r.tenant for r in client.requests} == {"default"}

    assert cli.main(["knowledge", "answer", "what does the handbook say about refunds?"]) == 0
    out = capsys.readouterr().out
    assert "[1]" in out.splitlines()[0] and "\n[1] refunds.md [" in out

    assert cli.main(["knowledge", "search", "how many vacation days per year", "--collection",
                     "handbook", "-k", "2", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert len(found["hits"]) == 2
    assert "leave-policy.md" in {hit["document_name"] for hit in found["hits"]}


def test_list_delete_and_tenants(client: AgentClient, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["knowledge", "add", str(CORPUS / "refunds.md"), "--collection", "policies",
                     "--tenant", "acme", "--json"]) == 0
    added = json.loads(capsys.readouterr().out)["added"][0]
    assert cli.main(["knowledge", "list", "--tenant", "acme"]) == 0
    assert capsys.readouterr().out.strip() == "policies"
    assert cli.main(["knowledge", "list", "--json"]) == 0  # the default tenant has none
    assert json.loads(capsys.readouterr().out) == {"collections": []}
    assert cli.main(["knowledge", "list", "--collection", "policies", "--tenant", "acme"]) == 0
    assert f"{added['document_id']}  refunds.md" in capsys.readouterr().out
    assert cli.main(["knowledge", "delete", added["document_id"], "--collection", "policies",
                     "--tenant", "globex"]) == 1
    assert "no document" in capsys.readouterr().err
    assert cli.main(["knowledge", "delete", added["document_id"], "--collection", "policies",
                     "--tenant", "acme"]) == 0
    assert cli.main(["knowledge", "list", "--collection", "policies", "--tenant", "acme"]) == 0
    assert capsys.readouterr().out.strip().endswith("no documents")


def test_a_refused_document_is_named_and_the_rest_are_added(
        client: AgentClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "good.md").write_text("# Parking\n\nStaff parking is on level two of the garage.")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.7 garbage")
    assert cli.main(["knowledge", "add", str(folder), "--collection", "misc"]) == 1
    captured = capsys.readouterr()
    assert "added 1 document(s)" in captured.out
    assert "refused " in captured.out and "broken.pdf" in captured.out
    assert cli.main(["knowledge", "add", str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err
