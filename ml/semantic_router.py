"""The semantic router: chooses an agent type for a task from what its description means.

`SemanticRouter` implements the `Router` protocol of `ml.router`. A task that names a known agent
type goes there; otherwise its description is embedded, its nearest labelled examples are found in
an `ExampleIndex`, and `ml.decision.decide` weighs them with each type's observed reliability,
latency and load. When no type is a confident match it raises `NoConfidentRoute`, carrying the
closest candidates, rather than guessing.

What is embedded is the description's instruction, not its data (`instruction_text`): inline JSON,
passages in quotes and a prose text after a colon that the instruction announces ("rewrite this
email: ...") become placeholders and lines after the first are dropped, so a pasted table or a
quoted sentence does not outvote the verb; the phrasing cues read the same instruction. Agent type names used as names ("tell the
learning agent ...", "the calculator pool") are masked in examples and queries alike
(`AgentNameMask`), so routing follows what is asked of an agent, not which agent is mentioned.

The nearest examples are found by cosine similarity among `LEXICAL_CANDIDATES`, then
re-scored: each example's similarity gains `policy.lexical_weight` times its word overlap with
the task (`ml.lexical`), so the words that name an operation count for more than the subject,
and the phrasing cues of `ml.cues` (a stored document or a given text; prose, listed labels or
code) add `policy.cue_weight` to, or take it from, the examples of the types they point to.

Besides the agents' examples, the index holds phrasings of tasks no agent does
(`ml.out_of_scope`, under a sentinel type that is never routed to), which vote against routing
anywhere; a category of them that a registered third-party agent type declares something close
to is left out while that type is registered.

Agent types and learned examples are added and removed while the router serves (no restart).
Its state lives in this process; persisting learned examples is the caller's business.

Tenants: `index` holds what every tenant shares (declared examples, out-of-scope phrases). A
tenant's own learned and feedback examples live in an index of their own that the caller passes
with each description (`decide_many(..., own=...)`); a decision searches the shared index and
its own tenant's index only, so one tenant's examples never vote in, or explain, another's.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ml.cues import cue_bonuses
from ml.decision import Decision, RoutingPolicy, TypeStats, decide
from ml.errors import NoConfidentRoute
from ml.example_index import SOURCES, ExampleIndex, Neighbour, declared_texts
from ml.lexical import LexicalScorer
from ml.out_of_scope import CATEGORIES, CURATED_FOR, OUT_OF_SCOPE, phrases, unclaimed
from ml.router import requested_route
from storage.errors import InvalidRequest
from storage.messages import AgentSpec, RouteDecision

if TYPE_CHECKING:
    from ml.embeddings import Embedder

CANDIDATES_REPORTED = 3
LEXICAL_CANDIDATES = 50
ROUTED_CHARS = 4000  # the model reads about 1,000 characters (256 word pieces); this is plenty
_QUOTED = re.compile(r"\"[^\"\n]{24,}\"|“[^”\n]{24,}”"  # 24 characters or more
                     r"|\"[^\"\s]+(?:[ \t]+[^\"\s]+){2,}\""  # or three words or more
                     r"|“[^”\s]+(?:[ \t]+[^”\s]+){2,}”")
# a passage in single quotes: not an apostrophe ("Bob's", "the players' union")
_SINGLE_QUOTED = re.compile(r"(?<![\w'])'((?:[^'\n]|(?<=\w)'(?=\w))+)'(?![\w'])")
# a text after a colon, when the words before it announce one ("rewrite this email: ...",
# "translate to Spanish: ...") and it reads as prose: six words or more, two of them function
# words ("type, missing values, min and max" is a list of fields, not a text)
_ANNOUNCES_TEXT = re.compile(
    r"\b(?:this|these|the following|below|above|attached)\b|^\W*(?:(?:please|can you|could you)"
    r"\s+)*(?:translate|summari[sz]e|sum up|rewrite|rephrase|reword|paraphrase|proofread|"
    r"shorten|simplify|polish)\b", re.I)
_PROSE_WORD = re.compile(r"[^\W\d_][\w'’-]*[.,;!?]?")
_FUNCTION_WORD = re.compile(r"(?:the|a|an|is|are|was|were|be|been|has|have|had|will|would|can|"
                            r"to|of|in|on|for|with|at|by|from|it|we|you|i|our|your|my|this|"
                            r"that|not)[.,;!?]?", re.I)
PROSE_TAIL_WORDS = 6
_WHITESPACE = re.compile(r"\s+")
_JSON = json.JSONDecoder()


def _without_inline_json(text: str) -> str:
    parts: list[str] = []
    position = 0
    start = 0
    while position < len(text):
        if text[position] in "{[":
            try:
                value, end = _JSON.raw_decode(text, position)
            except ValueError:
                value, end = None, position
            if end > position and isinstance(value, (dict, list)):
                parts.append(text[start:position] + "JSON")
                position = start = end
                continue
        position += 1
    parts.append(text[start:])
    return "".join(parts)


def _single_quoted(match: re.Match[str]) -> str:
    passage = match.group(1)
    return '"text"' if len(passage) >= 24 or len(passage.split()) >= 3 else match.group(0)


def _without_text_after_colon(text: str) -> str:
    head, colon, tail = text.partition(": ")
    if not colon or len(head.split()) < 3 or _ANNOUNCES_TEXT.search(head) is None:
        return text
    words = tail.split()
    if sum(_PROSE_WORD.fullmatch(word) is not None for word in words) < PROSE_TAIL_WORDS or \
            sum(_FUNCTION_WORD.fullmatch(word) is not None for word in words) < 2:
        return text
    return f'{head}: "text"'


def instruction_text(description: str) -> str:
    """The part of a task description that says what to do: the first line when further lines
    follow (pasted CSV and the like) and it has three words or more, with inline JSON replaced by
    `JSON`, passages in quotes (double or single) of three words or 24 characters or more by
    `"text"` (a quoted field name or value stays), and so is a prose text after a colon when the
    words before the colon announce one ("reword this note: ...", "translate to Spanish: ...")."""
    text = description.strip()
    first, _, rest = text.partition("\n")
    if rest and len(first.split()) >= 3:
        text = first
    text = text[:ROUTED_CHARS]
    text = _QUOTED.sub('"text"', _without_inline_json(text))
    text = _without_text_after_colon(_SINGLE_QUOTED.sub(_single_quoted, text))
    return _WHITESPACE.sub(" ", text).strip() or description[:ROUTED_CHARS]


class AgentNameMask:
    """Replaces agent type names used as names with a neutral word.

    "tell the learning agent" -> "tell the other agent"; "the calculator pool" -> "the agent pool";
    "data_processor's inbox" -> "the other agent's inbox"; an underscored type name elsewhere ->
    "the agent". A name used as an ordinary word ("learning", "validation") stays."""

    def __init__(self, agent_types: Collection[str]) -> None:
        names = sorted({form for name in agent_types for form in (name, name.replace("_", " "))},
                       key=len, reverse=True)
        self._patterns: list[tuple[re.Pattern[str], str]] = []
        if not names:
            return
        any_name = "|".join(re.escape(name) for name in names)
        self._patterns = [
            (re.compile(rf"\b(?:{any_name})(?=\s+agents?\b)", re.I), "other"),
            (re.compile(rf"\b(?:the\s+)?(?:{any_name})(?='s\b)", re.I), "the other agent"),
            (re.compile(rf"\b(?:{any_name})(?=\s+(?:pools?|replicas?|inbox|queue|tasks?|"
                        rf"attempts?)\b)", re.I), "agent"),
        ]
        identifiers = [re.escape(name) for name in agent_types if "_" in name]
        if identifiers:
            self._patterns.append(
                (re.compile(rf"\b(?:the\s+)?(?:{'|'.join(identifiers)})\b", re.I), "the agent"))

    def __call__(self, text: str) -> str:
        for pattern, replacement in self._patterns:
            text = pattern.sub(replacement, text)
        return text


class SemanticRouter:
    """Routes tasks to agent types by the meaning of their descriptions.

    `agent_types` maps names to agent specs (`actors.registry.agent_specs`); their declared
    capabilities and examples seed the index. `embedder` defaults to the process's shared one.
    `out_of_scope` holds phrasings of tasks no agent does, by category
    (`ml.out_of_scope.CATEGORIES`); `policy.out_of_scope_examples` decides whether they count. Safe
    to use from several threads; `decide` runs its CPU work in a thread so it never blocks the
    caller's event loop.
    """

    def __init__(self, agent_types: Mapping[str, AgentSpec], embedder: Embedder | None = None,
                 policy: RoutingPolicy = RoutingPolicy(), *,
                 out_of_scope: Mapping[str, tuple[str, ...]] = CATEGORIES) -> None:
        if embedder is None:
            from ml.embeddings import embedder as shared_embedder

            embedder = shared_embedder()
        self.embedder = embedder
        self.policy = policy
        self._agent_types = dict(agent_types)
        self._mask = AgentNameMask(self._agent_types)
        self.index = ExampleIndex.from_agent_types(self._agent_types, embedder,
                                                   prepare=self.routing_text)
        self._stats: dict[str, TypeStats] = {}
        self._load: dict[str, float] = {}
        self._declared = {name: self._encode(declared_texts(spec))
                          for name, spec in self._agent_types.items()}
        self._out_of_scope = phrases(dict(out_of_scope))
        self._out_of_scope_vectors = self._encode([text for _, text in self._out_of_scope])
        self._out_of_scope_kept: tuple[str, ...] = ()
        self._unclaimed_categories: frozenset[str] = frozenset()
        self._lexical = LexicalScorer(())
        self._index_out_of_scope()

    @property
    def agent_types(self) -> frozenset[str]:
        return frozenset(self._agent_types)

    def routing_text(self, text: str) -> str:
        """What is embedded for `text`, an example or a task description."""
        return self._mask(instruction_text(text))

    async def decide(self, description: str, payload: dict[str, Any],
                     requested: str | None) -> RouteDecision:
        """The route of one task. Raises `InvalidRequest` for an unknown `requested` type and
        `NoConfidentRoute` when no type is a confident match."""
        if requested is not None:
            return requested_route(requested, self._agent_types)
        (decision,) = await asyncio.to_thread(self.decide_many, [description])
        if not decision.routed:
            raise NoConfidentRoute(
                f"no agent type is a confident match for this task ({decision.reason}); "
                f"name an agent_type to route it explicitly, one of: "
                f"{', '.join(sorted(self._agent_types))}",
                {"candidates": [list(c) for c in decision.candidates[:CANDIDATES_REPORTED]],
                 "confidence": decision.confidence, "similarity": decision.similarity,
                 "nearest": [n.to_json() for n in decision.explanation],
                 "min_similarity": self.policy.min_similarity,
                 "min_confidence": self.policy.min_confidence,
                 "out_of_scope": decision.out_of_scope},
            )
        return decision.to_route_decision()

    def decide_many(self, descriptions: Sequence[str], policy: RoutingPolicy | None = None,
                    own: Sequence[ExampleIndex | None] | None = None) -> list[Decision]:
        """The decision for each description, embedded in one batch. CPU-bound: from async
        code, call it through `asyncio.to_thread`. `policy` overrides the router's. `own`, one
        entry per description, is the index of that description's tenant's own examples
        (searched with the shared index; None for none): nothing else is searched."""
        if isinstance(descriptions, str):
            raise TypeError("decide_many takes a sequence of descriptions, not one string")
        if own is not None and len(own) != len(descriptions):
            raise ValueError("own needs one entry per description")
        policy = policy or self.policy
        if not descriptions:
            return []
        instructions = [instruction_text(d) for d in descriptions]
        routed = [self._mask(instruction) for instruction in instructions]
        vectors = self.embedder.encode(routed)
        stats, load = self._stats, self._load
        k = policy.k if policy.out_of_scope_examples else policy.k + len(self._out_of_scope_kept)
        if not policy.lexical_weight and not policy.cue_weight:
            return [decide(neighbours, stats, load, policy)
                    for neighbours in self.search(vectors, k, own)]
        lexical = self._lexical
        return [decide(self._rescored(lexical, instruction, text, neighbours, policy, k), stats,
                       load, policy)
                for instruction, text, neighbours in zip(
                    instructions, routed, self.search(vectors, max(k, LEXICAL_CANDIDATES), own))]

    def search(self, vectors: np.ndarray, k: int,
               own: Sequence[ExampleIndex | None] | None = None) -> list[list[Neighbour]]:
        """The `k` nearest examples of each query row among the shared examples and, for row
        `i`, those of `own[i]`, most similar first. Rows with the same own index are searched
        in one call."""
        found = self.index.search(vectors, k)
        groups: dict[int, tuple[ExampleIndex, list[int]]] = {}
        for row, index in enumerate(own or ()):
            if index is not None and len(index):
                groups.setdefault(id(index), (index, []))[1].append(row)
        for index, rows in groups.values():
            for row, extra in zip(rows, index.search(vectors[rows], k)):
                found[row] = sorted(found[row] + extra, key=lambda n: n.similarity,
                                    reverse=True)[:k]
        return found

    def add_example(self, text: str, agent_type: str, source: str = "learned") -> bool:
        """Learn that `text` belongs to `agent_type`. False when it was skipped as a
        near-duplicate of one of the type's examples (similarity >= duplicate_similarity)."""
        if agent_type not in self._agent_types:
            raise InvalidRequest(f"cannot learn an example for unknown agent_type {agent_type!r}",
                                 {"agent_type": agent_type})
        if source not in SOURCES:
            raise InvalidRequest(f"example source {source!r} must be one of {', '.join(SOURCES)}",
                                 {"source": source, "sources": list(SOURCES)})
        if not text.strip():
            raise InvalidRequest("an example needs some text")
        vector = self.embedder.encode([self.routing_text(text)])
        nearest = self.index.nearest_of_type(vector[0], agent_type)
        if nearest is not None and nearest.similarity >= self.policy.duplicate_similarity:
            return False
        self.index.add([text], agent_type, source, vectors=vector)
        return True

    def add_type(self, spec: AgentSpec) -> int:
        """Register an agent type (or refresh one's declared examples, keeping what was learned
        for it); returns how many declared examples it brought."""
        name = spec.name
        self._agent_types = {**self._agent_types, name: spec}
        self._mask = AgentNameMask(self._agent_types)
        self.index.remove_type(name, sources=("declared",))
        texts = declared_texts(spec)
        vectors = self._encode(texts)
        added = self.index.add(texts, name, "declared", vectors=vectors)
        self._declared = {**self._declared, name: vectors}
        self._index_out_of_scope()
        return added

    def remove_type(self, name: str) -> int:
        """Forget an agent type and all its examples; returns how many examples went."""
        self._agent_types = {t: c for t, c in self._agent_types.items() if t != name}
        self._mask = AgentNameMask(self._agent_types)
        self._stats = {t: s for t, s in self._stats.items() if t != name}
        self._load = {t: v for t, v in self._load.items() if t != name}
        removed = self.index.remove_type(name)
        self._declared = {t: v for t, v in self._declared.items() if t != name}
        self._index_out_of_scope()
        return removed

    def update_signals(self, stats: Mapping[str, TypeStats] | None = None,
                       load: Mapping[str, float] | None = None) -> None:
        """Replace the observed per-type statistics and/or loads used by later decisions."""
        if stats is not None:
            self._stats = dict(stats)
        if load is not None:
            self._load = dict(load)

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        return self.embedder.encode([self.routing_text(text) for text in texts])

    def _rescored(self, lexical: LexicalScorer, instruction: str, routed: str,
                  neighbours: Sequence[Neighbour], policy: RoutingPolicy,
                  k: int) -> list[Neighbour]:
        """The `k` best of `neighbours` re-scored with their word overlap with a task (`routed`:
        its `routing_text`) and the phrasing cues of `ml.cues` in its `instruction_text`, best
        first."""
        query = lexical.prepared_vector(routed) if policy.lexical_weight else {}
        bonus = cue_bonuses(instruction, policy.cue_weight, self._agent_types,
                            self._unclaimed_categories)
        scored = sorted(((n.similarity + bonus.get(n.agent_type, 0.0)
                          + policy.lexical_weight * lexical.similarity(query, n.text), n)
                         for n in neighbours), key=lambda pair: pair[0], reverse=True)[:k]
        return [Neighbour(n.text, n.agent_type, score, n.source) for score, n in scored]

    def _index_out_of_scope(self) -> None:
        """Index the out-of-scope phrases no registered type claims (see `ml.out_of_scope`)."""
        claiming = [vectors for name, vectors in self._declared.items()
                    if name not in CURATED_FOR and len(vectors)]
        keep = unclaimed([category for category, _ in self._out_of_scope],
                         self._out_of_scope_vectors,
                         np.vstack(claiming) if claiming else np.zeros((0, 1), np.float32))
        kept = tuple(text for (_, text), stays in zip(self._out_of_scope, keep) if stays)
        self._unclaimed_categories = frozenset(
            category for (category, _), stays in zip(self._out_of_scope, keep) if stays)
        self._lexical = LexicalScorer(
            [text for spec in self._agent_types.values()
             for text in declared_texts(spec)] + list(kept), prepare=self.routing_text)
        if kept == self._out_of_scope_kept:
            return
        self.index.remove_type(OUT_OF_SCOPE)
        self.index.add(list(kept), OUT_OF_SCOPE, "declared",
                       vectors=self._out_of_scope_vectors[keep])
        self._out_of_scope_kept = kept
