"""Chunks by the embedding model's word pieces: exact offsets, the size bound, overlap, cuts
at paragraph and sentence ends, determinism."""

from __future__ import annotations

import pytest

from ml.knowledge.chunking import Chunk, Chunker, load_tokenizer
from tests.ml.knowledge.corpus import CORPUS



@pytest.fixture(scope="module")
def tokenizer() -> object:
    return load_tokenizer()


def _pieces(tokenizer: object, text: str) -> int:
    return len(Chunker(tokenizer=tokenizer).token_offsets(text))


def _check(text: str, chunks: list[Chunk], max_tokens: int, tokenizer: object) -> None:
    assert [chunk.ordinal for chunk in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert text[chunk.start:chunk.end] == chunk.text
        assert chunk.text == chunk.text.strip()
        assert chunk.tokens <= max_tokens
        assert _pieces(tokenizer, chunk.text) <= max_tokens
    assert all(b.start > a.start for a, b in zip(chunks, chunks[1:]))
    assert chunks[0].start == text.index(text.strip()[0])
    assert chunks[-1].end == len(text.rstrip())
    assert all(b.start < a.end for a, b in zip(chunks, chunks[1:])), "consecutive chunks overlap"


def test_every_chunk_has_exact_offsets_in_the_corpus_and_odd_text(tokenizer: object) -> None:
    texts = [path.read_text() for path in sorted(CORPUS.iterdir())]
    texts.append("Ünïcödé café — naïve 東京 🚀 emoji…\n\n" * 40 + "  trailing space  \n")
    texts.append("averyveryverylongwordwithoutanyspaces" * 60)
    chunker = Chunker(max_tokens=48, overlap_tokens=12, tokenizer=tokenizer)
    for text in texts:
        chunks = chunker.split(text)
        assert chunks
        _check(text, chunks, 48, tokenizer)


def test_a_long_text_is_covered_with_the_overlap_asked_for(tokenizer: object) -> None:
    text = " ".join(f"word{i}" for i in range(3000))  # no sentence or line ends at all
    chunker = Chunker(max_tokens=200, overlap_tokens=40, tokenizer=tokenizer)
    chunks = chunker.split(text)
    _check(text, chunks, 200, tokenizer)
    assert all(195 <= chunk.tokens <= 200 for chunk in chunks[:-1])
    for a, b in zip(chunks, chunks[1:]):
        assert text[a.end] == " " and text[b.start - 1] == " ", "cuts fall between words"
        assert 35 <= _pieces(tokenizer, text[b.start:a.end]) <= 40


def test_a_cut_moves_back_to_a_paragraph_or_sentence_end(tokenizer: object) -> None:
    first = "Refunds are paid back to the original card within ten business days. " * 6
    second = "Shipping is free above fifty euros and takes three to five days. " * 6
    text = first.strip() + "\n\n" + second.strip()
    chunks = Chunker(max_tokens=120, overlap_tokens=10, tokenizer=tokenizer).split(text)
    assert chunks[0].text == first.strip()
    sentences = Chunker(max_tokens=30, overlap_tokens=5, tokenizer=tokenizer).split(first)
    assert all(chunk.text.endswith(".") for chunk in sentences[:-1])


def test_splitting_is_deterministic_and_blank_text_gives_no_chunks(tokenizer: object) -> None:
    text = (CORPUS / "refunds.md").read_text() * 5
    chunker = Chunker(tokenizer=tokenizer)
    assert chunker.split(text) == Chunker(tokenizer=tokenizer).split(text)
    assert chunker.split("") == [] and chunker.split(" \n\t ") == []


def test_sizes_beyond_the_models_window_are_refused(tokenizer: object) -> None:
    with pytest.raises(ValueError, match="model's window"):
        Chunker(max_tokens=300, tokenizer=tokenizer)
    with pytest.raises(ValueError, match="overlap"):
        Chunker(max_tokens=50, overlap_tokens=50, tokenizer=tokenizer)
