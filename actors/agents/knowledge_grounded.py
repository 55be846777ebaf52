"""A grounded answer from a knowledge collection with the platform's language model: the model
sees only the best chunks, numbered, and must cite them.

Guarantees of `grounded_answer`:
- When retrieval is not confident (the nearest chunk's cosine similarity is below
  `min_similarity`) the answer is "not found in the collection" and the model is not called:
  no tokens are spent on a question the collection cannot answer.
- The model is told to answer only from the numbered passages, cite each claim as [n], and
  say exactly "not found in the collection" otherwise; that answer is passed on as not found.
- Citations are checked: markers naming no given passage are removed, and an answer left with
  no valid citation is refused: the extractive answer (every sentence copied from a cited
  chunk, `ml.knowledge.answer`) is returned instead, saying so in `note`. The answer's
  citations are exactly the passages it cites.
- Model errors become the agent's: a spent budget or a refused request is `InvalidTaskInput`,
  anything that another attempt may cure is `RetryableAgentError`.
"""

from __future__ import annotations

import re
from typing import Any

from actors.agent import LanguageModels
from actors.errors import InvalidTaskInput, RetryableAgentError
from ml.knowledge.answer import NOT_FOUND, Answer
from ml.knowledge.search import SearchHit
from ml.llm.types import BadModelRequest, BudgetExceeded, LlmError
from storage.errors import InvalidRequest
from storage.messages import AgentTask

MAX_PASSAGE_CHARS = 2000
_MARKER = re.compile(r"\[(\d{1,3})\]")
SYSTEM = ("You answer questions from a company's document collection. Use only the numbered "
          "passages the user gives; never use outside knowledge. Cite every claim with the "
          "number of the passage it comes from, as [1] or [2]. If the passages do not contain "
          f"the answer, reply with exactly: {NOT_FOUND}")


def citation_of(number: int, hit: SearchHit) -> dict[str, Any]:
    return {"number": number, "chunk_id": hit.chunk_id, "document_id": hit.document_id,
            "document_name": hit.document_name, "start": hit.start, "end": hit.end,
            "text": hit.text}


def prompt(question: str, hits: list[SearchHit]) -> str:
    passages = "\n\n".join(f"[{n}] (from {hit.document_name})\n{hit.text[:MAX_PASSAGE_CHARS]}"
                           for n, hit in enumerate(hits, start=1))
    return f"Passages:\n\n{passages}\n\nQuestion: {question}"


def checked_citations(text: str, passages: int) -> tuple[str, list[int]]:
    """`text` without markers that name no passage, and the passages it cites, in order."""
    cited: list[int] = []

    def keep(match: re.Match[str]) -> str:
        number = int(match.group(1))
        if not 1 <= number <= passages:
            return ""
        if number not in cited:
            cited.append(number)
        return match.group(0)

    cleaned = _MARKER.sub(keep, text)
    return re.sub(r"[ \t]+([.,;:!?])", r"\1", re.sub(r"[ \t]{2,}", " ", cleaned)).strip(), cited


def model_error(exc: LlmError | InvalidRequest) -> Exception:
    if isinstance(exc, (BudgetExceeded, BadModelRequest)) or (
            not isinstance(exc, LlmError) and getattr(exc, "code", "") == "token_budget_exceeded"):
        return InvalidTaskInput(f"the model could not answer: {exc.message}",
                                {"code": exc.code})
    if isinstance(exc, LlmError):
        return RetryableAgentError(f"the model could not answer now ({exc.code}): "
                                   f"{exc.message}", {"code": exc.code})
    return InvalidTaskInput(f"the model gateway refused the request: {exc.message}",
                            {"code": exc.code})


def extractive_result(answer: Answer) -> dict[str, Any]:
    """An extractive `Answer` as the agent's result fields."""
    hits = {hit.chunk_id: hit for hit in answer.hits}
    return {"mode": "extractive", "answer": answer.text, "found": answer.found,
            "confidence": answer.confidence,
            "citations": [citation_of(c.number, hits[c.chunk_id]) for c in answer.citations]}


async def grounded_answer(llm: LanguageModels, task: AgentTask, question: str,
                          hits: list[SearchHit], confidence: float, fallback: Answer, *,
                          min_similarity: float, model: str | None = None) -> dict[str, Any]:
    """The model's answer to `question` from `hits` (the best chunks, whose nearest has cosine
    `confidence`), or `fallback` (the extractive answer) when the model cites none of them; see
    the module."""
    base = {"mode": "grounded", "confidence": confidence}
    if confidence < min_similarity or not hits:
        return {**base, "answer": NOT_FOUND, "found": False, "citations": [], "calls": 0}
    request: dict[str, Any] = {
        "tenant": task.tenant, "task_id": task.task_id, "temperature": 0.0,
        "messages": [{"role": "system", "content": SYSTEM},
                     {"role": "user", "content": prompt(question, hits)}]}
    if model:
        request["group"] = model
    try:
        reply = await llm.complete(request)
    except (LlmError, InvalidRequest) as exc:
        raise model_error(exc) from exc
    usage = {"model": reply.get("model"), "usage": reply.get("usage"),
             "cost_usd": reply.get("cost_usd"), "calls": 1}
    text = str(reply.get("text", "")).strip()
    if NOT_FOUND in text.lower() and len(text) <= len(NOT_FOUND) + 20:
        return {**base, **usage, "answer": NOT_FOUND, "found": False, "citations": []}
    cleaned, cited = checked_citations(text, len(hits))
    if not cited:
        return {**base, **usage, **extractive_result(fallback),
                "note": "the model's answer cited none of the passages it was given, so it "
                        "was refused; this is the extractive answer"}
    renumber = {old: new for new, old in enumerate(cited, start=1)}
    final = _MARKER.sub(lambda m: f"[{renumber[int(m.group(1))]}]", cleaned)
    return {**base, **usage, "answer": final, "found": True,
            "citations": [citation_of(renumber[n], hits[n - 1]) for n in cited]}
