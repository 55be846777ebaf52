"""The `text_analysis` agent: statistics, keywords, summary, sentiment, similarity, duplicates.

The operation is payload "operation", or, when that is absent, what clear words in the description
("summarize", "sentiment", "keywords", "near-duplicates", ...) and payload parameters point to.

    {"operation": "statistics", "text": ...}   → counts, averages, Flesch scores, reading time
    {"operation": "keywords", "text": ..., "k": 10, "bigrams": false}
        → {"keywords": [{"keyword", "count", "score"}], "bigrams": [...] when asked}
    {"operation": "summary", "text": ..., "n": 3, "method": "centrality" | "frequency"}
        → {"summary", "sentences": [{"index", "text", "score"}]}, in the text's order
    {"operation": "sentiment", "text": ...}    → {"score" in [-1, 1], "label", "matches"}
    {"operation": "similarity", "texts": [...]} or {"a": ..., "b": ...}
        → {"similarity"} for two texts, else {"matrix", "most_similar"}
    {"operation": "near_duplicates", "texts": [...], "threshold": 0.9}
        → {"groups": [{"indices", "similarities"}]}: each group is a first occurrence and the later
          texts at least `threshold` similar to it (cosine of sentence embeddings)

The four single-text operations also take payload "texts" and then answer {"results": [...]}, one
per text. Text is read from the payload; only a text quoted in the description (`sentiment of
"great service"`) or following its colon ("Summarize: ...") is taken from there instead. Similarity,
near-duplicates and centrality summaries use sentence embeddings (`actors.shared_embedder`: on the
platform, from the model the router holds for every replica); the rest is heuristic and shipped
here: a stopword list, a syllable rule, and a compact sentiment lexicon with negation ("not good"),
intensifiers ("very good") and "but" clauses weighted as in VADER. Bad input is `InvalidTaskInput`
naming the field (and index).

A message to the `text_analysis` inbox starts an analysis (`on_message="task"`, see
`TextAnalysis.message_task`): its body is the text (or an object payload, or a list of texts),
its subject says which analysis ("Sentiment of this review"), and the outcome is the reply.
"""

from __future__ import annotations

import asyncio
import functools
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, TypedDict

import numpy as np

from actors.agent import Agent, invalid, json_type
from actors.shared_embedder import text_encoder
from ml.config import ML_RESOURCE
from ml.embeddings import TextEncoder
from storage.messages import AgentSpec, AgentTask, InboxMessage, Resources

OPERATIONS = ("statistics", "keywords", "summary", "sentiment", "similarity", "near_duplicates")
SINGLE_TEXT_OPERATIONS = ("statistics", "keywords", "summary", "sentiment")
SUMMARY_METHODS = ("centrality", "frequency")
MAX_TEXT_CHARS = 200_000
MAX_TEXTS = 1000
MAX_ITEM_CHARS = 20_000
DEFAULT_K, MAX_K = 10, 100
DEFAULT_N, MAX_N = 3, 100
DEFAULT_THRESHOLD = 0.9
READING_WORDS_PER_MINUTE = 238
MOST_SIMILAR_PAIRS = 10

STOPWORDS = frozenset("""
a about above after again against ago all almost also although always am among an and another any
anybody anyone anything anyway anywhere are aren't around as at away back be became because become
becomes been before being below beside besides between beyond both but by can can't cannot could
couldn't did didn't do does doesn't doing don't done down during e.g. each either else enough etc
even ever every everyone everything everywhere few for from further get gets getting got had
hadn't has hasn't have haven't having he he'd he'll he's her here here's hers herself him himself
his how how's however i i'd i'll i'm i've i.e. if in indeed into is isn't it it's its itself just
least less let let's like made make makes many may maybe me might mine more most much must mustn't
my myself near need neither never next no nobody none nor not nothing now of off often on once one
only onto or other others otherwise ought our ours ourselves out over own per perhaps please put
quite rather really said same say says see seem seemed seems shall shan't she she'd she'll she's
should shouldn't since so some somebody someone something sometimes somewhat still such than that
that's the their theirs them themselves then there there's therefore these they they'd they'll
they're they've thing things this those though through thus to too toward towards under unless
until up upon us use used using very via was wasn't we we'd we'll we're we've well were weren't
what what's whatever when when's where where's whether which while who who's whoever whole whom
whose why why's will with within without won't would wouldn't yet you you'd you'll you're you've
your yours yourself yourselves
""".split())

# Sentiment lexicon: strength 1 (mild) to 3 (strong); negative words count against.
_POSITIVE = {
    3: "amazing awesome brilliant delicious delighted excellent exceptional fabulous fantastic "
       "flawless gorgeous incredible joy joyful love loved lovely loves magnificent marvelous "
       "marvellous outstanding perfect phenomenal stunning superb terrific wonderful best",
    2: "admire appreciate appreciated attentive beautiful beneficial better charming cheerful "
       "comfortable delight easygoing effective efficient elegant enjoy enjoyable enjoyed enjoying "
       "excited exciting favorite favourite friendly fun generous glad good grateful great happy "
       "helpful hopeful ideal impressed impressive improved improvement kind liked loving nice "
       "optimistic pleasant pleased pleasure polite positive praise proud recommend recommended "
       "reliable remarkable satisfied satisfying success successful superior tasty thrilled "
       "valuable welcoming win winning wins won worth worthwhile wow",
    1: "accurate affordable calm clean clear convenient cool easy fair fast fine fresh hope "
       "improve interesting okay ok quick safe secure smooth solid stable strong sweet thank "
       "thanks trust useful",
}
_NEGATIVE = {
    3: "abysmal angry appalling atrocious awful catastrophic disaster disastrous disgusting "
       "dreadful furious garbage hate hated hates horrendous horrible horrific incompetent "
       "miserable outraged pathetic scam terrible toxic tragic unacceptable unusable useless "
       "worst worthless fraud",
    2: "afraid annoyed annoying bad boring broken careless complain crash crashed crashes "
       "damaged dangerous defective depressed depressing disappoint disappointed disappointing "
       "disappointment dislike disliked dirty fail failed failing fails failure fake faulty "
       "frustrated frustrating hostile hurt inadequate inaccurate inferior junk lousy mess "
       "misleading nasty negative overpriced pain painful poor regret ridiculous rude sad scared "
       "stupid sucks tasteless trash ugly uncomfortable unhappy unpleasant unreliable upset "
       "waste wasted worried worse wrong",
    1: "bland bug bugs complaint confused confusing delay delayed difficult error errors "
       "expensive issue issues lack lacking late loss lost mediocre messy noisy problem problems "
       "risk sick slow sorry stale unfortunately weak worry",
}
SENTIMENT_LEXICON: dict[str, float] = {
    **{word: float(strength) for strength, words in _POSITIVE.items() for word in words.split()},
    **{word: -float(strength) for strength, words in _NEGATIVE.items() for word in words.split()},
}
_NEGATORS = frozenset("not no never none nobody nothing neither nor without hardly barely scarcely "
                      "cannot cant dont doesnt didnt isnt wasnt arent werent wont wouldnt "
                      "shouldnt couldnt aint havent hasnt hadnt".split())
_INTENSIFIERS = {
    "very": 1.5, "really": 1.5, "so": 1.5, "too": 1.5, "most": 1.5, "highly": 1.5, "truly": 1.5,
    "totally": 1.5, "completely": 1.5, "super": 1.5, "especially": 1.5, "deeply": 1.5,
    "remarkably": 1.5, "thoroughly": 1.5, "extremely": 1.75, "incredibly": 1.75,
    "absolutely": 1.75, "exceptionally": 1.75, "utterly": 1.75, "pretty": 1.25, "quite": 1.25,
    "fairly": 0.75, "rather": 0.75, "somewhat": 0.5, "slightly": 0.5, "mildly": 0.5,
}
NEGATION_FACTOR = -0.75
NEGATION_WINDOW = 3
_BUT_BEFORE, _BUT_AFTER = 0.5, 1.5
_NORMALISING_ALPHA = 15.0  # VADER's: score = total / sqrt(total² + alpha), inside (-1, 1)
NEUTRAL_BAND = 0.05

# A word: a number like 3.30 or 1,000; dotted initials like e.g. or U.S.; or letters and digits
# joined by apostrophes and hyphens (don't, state-of-the-art).
_WORD = re.compile(r"\d+(?:[.,:]\d+)+|(?:[^\W\d_]\.){2,}|[^\W_]+(?:['’\-][^\W_]+)*")
_TOKEN = re.compile(rf"{_WORD.pattern}|[^\w\s]")
_CLOSERS = "\"'”’)]"
_BOUNDARY = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s|$)|\n[ \t]*\n")
_ABBREVIATION = re.compile(r"(?:^|[\s(])(?:mr|mrs|ms|dr|prof|sr|jr|st|vs|etc|inc|ltd|fig|approx"
                           r"|(?:[a-z]\.)*[a-z])\.$", re.IGNORECASE)  # "Dr.", "e.g.", "U.S."
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_VOWEL_GROUP = re.compile(r"[aeiouy]+")

_OPERATION_ALIASES = {
    "stats": "statistics", "statistic": "statistics", "readability": "statistics",
    "keyword": "keywords", "keyphrases": "keywords", "key_phrases": "keywords",
    "summarize": "summary", "summarise": "summary", "summarization": "summary",
    "summarisation": "summary", "sentiment_analysis": "sentiment", "similar": "similarity",
    "compare": "similarity", "near_duplicate": "near_duplicates", "near-duplicates":
    "near_duplicates", "duplicates": "near_duplicates", "dedupe": "near_duplicates",
    "deduplicate": "near_duplicates",
}
_DESCRIBED = {operation: re.compile(pattern, re.IGNORECASE) for operation, pattern in {
    "statistics": r"\bstatistics\b|\bstats\b|\breadab\w*|\breading (?:ease|level|time|grade)\b"
                  r"|\bgrade level\b|\bflesch\b|\bword counts?\b|\bcount (?:the )?(?:words|"
                  r"sentences)\b|\bhow many (?:words|sentences|paragraphs|characters)\b"
                  r"|\blexical diversity\b|\baverage (?:word|sentence) length\b|\bsyllables?\b"
                  r"|\bhow long\b.*\bto read\b",
    "keywords": r"\bkey ?words?\b|\bkey ?phrases?\b|\bkey terms?\b|\btopics\b|\btags?\b"
                r"|\b(?:main|top|important|frequent) (?:terms|words|topics|themes)\b",
    "summary": r"\bsummar(?:y|ies|i[sz]\w*)\b(?!\s+statistic)|\btl;?\s?dr\b|\bgist\b"
               r"|\bcondense\b|\bkey sentences\b|\bmain points\b",
    "sentiment": r"\bsentiments?\b|\btone\b|\bpositive or negative\b|\bnegative or positive\b"
                 r"|\bmood\b|\bopinion\b|\bemotion\w*|\bpolarity\b",
    "similarity": r"\bsimilar(?:ity)?\b|\bcompar\w*|\bparaphras\w*|\bsemantic\w*|\bhow close\b"
                  r"|\bcosine\b|\brelatedness\b",
    "near_duplicates": r"\bnear[- ]?dup\w*|\bde-?dup\w*|\bduplicat\w*|\bthe same thing\b"
                       r"|\bbasically the same\b|\b(?:nearly|almost) (?:the same|identical)\b",
}.items()}
# Payload keys that only one operation reads.
_HINTED_BY = {"keywords": ("k", "bigrams"), "summary": ("n", "method"),
              "similarity": ("a", "b"), "near_duplicates": ("threshold",)}
_NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
                 "eight": 8, "nine": 9, "ten": 10}
_COUNT = r"(\d{1,3}|one|two|three|four|five|six|seven|eight|nine|ten)"
_K_IN_DESCRIPTION = re.compile(rf"\btop {_COUNT}\b|\b{_COUNT} (?:key ?)?(?:words|keywords|"
                               r"phrases|key ?phrases|terms|topics)\b", re.IGNORECASE)
_N_IN_DESCRIPTION = re.compile(rf"\b{_COUNT} (?:sentences?|lines|points)\b", re.IGNORECASE)
_QUOTED = re.compile(r"\"([^\"]+)\"|“([^”]+)”")

Embed = Callable[[Sequence[str]], np.ndarray]


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# --- what the task asks for -----------------------------------------------------------------

def split_description(description: str) -> tuple[str, list[str]]:
    """The instruction part of a description, and the texts it quotes or puts after a colon."""
    quoted = [a or b for a, b in _QUOTED.findall(description)]
    if quoted:
        return _QUOTED.sub(" ", description), [text.strip() for text in quoted]
    head, colon, tail = description.partition(":")
    if colon and tail.strip() and len(head.split()) <= 12 and _WORD.search(tail):
        return head, [tail.strip()]
    return description, []


def _described(text: str) -> set[str]:
    return {name for name, pattern in _DESCRIBED.items() if pattern.search(text)}


def choose_operation(payload: dict[str, Any], instruction: str, description: str = "") -> str:
    """Payload "operation", else the one operation the payload and the instruction (failing
    that, the whole description) point to."""
    named = payload.get("operation")
    if named is not None:
        key = named.strip().lower().replace(" ", "_") if isinstance(named, str) else None
        operation = _OPERATION_ALIASES.get(key, key) if key else None
        if operation not in OPERATIONS:
            raise invalid(f"unknown operation {_preview(named)}; accepted: "
                          f"{', '.join(OPERATIONS)}", field="operation",
                          accepted=list(OPERATIONS))
        return operation
    described = _described(instruction) or _described(description)
    if "near_duplicates" in described:
        described.discard("similarity")  # "find similar duplicates" asks for groups
    hinted = {name for name, keys in _HINTED_BY.items() if any(key in payload for key in keys)}
    for candidates in (described & hinted, hinted, described):
        if len(candidates) == 1:
            return candidates.pop()
    mentioned = f" (the description mentions {', '.join(sorted(described))})" if described else ""
    raise invalid(f"cannot tell which analysis to run{mentioned}; set payload 'operation' to one "
                  f"of: {', '.join(OPERATIONS)}", field="operation", accepted=list(OPERATIONS))


def _checked_text(value: Any, field: str, limit: int, index: int | None = None) -> str:
    where = f"payload '{field}'" + ("" if index is None else f"[{index}]")
    details: dict[str, Any] = {"field": field} if index is None else {"field": field,
                                                                      "index": index}
    if not isinstance(value, str):
        raise invalid(f"{where} must be a string, got {json_type(value)}", **details)
    if len(value) > limit:
        raise invalid(f"{where} has {len(value)} characters; at most {limit}", limit=limit,
                      **details)
    if not _WORD.search(value):
        problem = "is empty" if not value.strip() else "has no words"
        raise invalid(f"{where} {problem}; give text to analyse", **details)
    return value


def _checked_texts(value: Any, minimum: int) -> list[str]:
    if not isinstance(value, list):
        raise invalid(f"payload 'texts' must be a list of strings, got {json_type(value)}",
                      field="texts")
    if not minimum <= len(value) <= MAX_TEXTS:
        raise invalid(f"payload 'texts' has {len(value)} items; give {minimum} to {MAX_TEXTS}",
                      field="texts", minimum=minimum, limit=MAX_TEXTS)
    return [_checked_text(item, "texts", MAX_ITEM_CHARS, index) for index, item in enumerate(value)]


def single_texts(payload: dict[str, Any], quoted: list[str], operation: str) -> list[str]:
    """The texts a single-text operation reads: payload "texts", or "text" (or the one text the
    description quotes) as a list of one."""
    if "text" in payload and "texts" in payload:
        raise invalid("payload gives both 'text' and 'texts'; give one", fields=["text", "texts"])
    if "texts" in payload:
        return _checked_texts(payload["texts"], 1)
    if "text" not in payload and len(quoted) != 1:
        raise invalid(f"{operation} needs the text to analyse in payload 'text' (a string), or "
                      f"several in 'texts' (a list of strings), for example "
                      f"{{\"operation\": \"{operation}\", \"text\": \"...\"}}", field="text")
    text = payload["text"] if "text" in payload else quoted[0]
    return [_checked_text(text, "text", MAX_TEXT_CHARS)]


def compared_texts(payload: dict[str, Any], quoted: list[str], operation: str) -> list[str]:
    """The list of texts that similarity and near-duplicate detection compare."""
    pair = [key for key in ("a", "b") if key in payload]
    if "texts" in payload and pair:
        raise invalid("payload gives both 'texts' and 'a'/'b'; give one", field="texts")
    if pair:
        if len(pair) == 1:
            raise invalid("payload 'a' needs 'b' (and 'b' needs 'a'): the two texts to compare",
                          field="b" if pair == ["a"] else "a")
        return [_checked_text(payload[key], key, MAX_ITEM_CHARS) for key in pair]
    if "texts" in payload:
        return _checked_texts(payload["texts"], 2)
    if len(quoted) >= 2 and "text" not in payload:
        return _checked_texts(quoted, 2)
    raise invalid(f"{operation} needs payload 'texts': a list of 2 to {MAX_TEXTS} strings"
                  + (" (or 'a' and 'b')" if operation == "similarity" else ""), field="texts")


def _whole_number(payload: dict[str, Any], key: str, found: re.Match[str] | None, default: int,
                  maximum: int) -> int:
    if key not in payload:
        if found:
            word = next(group for group in found.groups() if group).lower()
            value = _NUMBER_WORDS.get(word) or int(word)
            if 1 <= value <= maximum:
                return value
        return default
    value = payload[key]
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise invalid(f"payload {key!r} must be a whole number from 1 to {maximum}, got "
                      f"{json_type(value)} ({_preview(value)})", field=key)
    return value


def _flag(payload: dict[str, Any], key: str) -> bool:
    value = payload.get(key, False)
    if not isinstance(value, bool):
        raise invalid(f"payload {key!r} must be true or false, got {json_type(value)}", field=key)
    return value


def _threshold(payload: dict[str, Any]) -> float:
    value = payload.get("threshold", DEFAULT_THRESHOLD)
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not 0.0 <= value <= 1.0):  # NaN fails this too
        raise invalid(f"payload 'threshold' must be a number from 0 to 1 (a cosine similarity), "
                      f"got {json_type(value)} ({_preview(value)})", field="threshold")
    return float(value)


def _method(payload: dict[str, Any]) -> str:
    value = payload.get("method", "centrality")
    aliases = {"embedding": "centrality", "embeddings": "centrality", "tf": "frequency"}
    method = aliases.get(value, value) if isinstance(value, str) else None
    if method not in SUMMARY_METHODS:
        raise invalid(f"payload 'method' must be one of {', '.join(SUMMARY_METHODS)}, got "
                      f"{_preview(value)}", field="method", accepted=list(SUMMARY_METHODS))
    return method


# --- the text itself ------------------------------------------------------------------------

def words_of(text: str) -> list[str]:
    return _WORD.findall(text)


def split_sentences(text: str) -> list[str]:
    """Sentences end at . ! ? (not after a known abbreviation or an initial) or a blank line."""
    sentences, start = [], 0
    for boundary in _BOUNDARY.finditer(text):
        piece = text[start:boundary.end()]
        full_stop = boundary.group().rstrip(_CLOSERS) == "."
        if full_stop and _ABBREVIATION.search(piece.rstrip(_CLOSERS)):
            continue
        if _WORD.search(piece):
            sentences.append(" ".join(piece.split()))
        start = boundary.end()
    if _WORD.search(text[start:]):
        sentences.append(" ".join(text[start:].split()))
    return sentences


def syllables(word: str) -> int:
    """Syllables in an English word, by vowel groups less a silent final e, -es or -ed."""
    letters = re.sub(r"[^a-z]", "", word.lower())
    if len(letters) <= 3:
        return 1
    count = len(_VOWEL_GROUP.findall(letters))
    consonant = letters[-3] not in "aeiouy"
    if letters.endswith("e") and not letters.endswith("le") and letters[-2] not in "aeiouy":
        count -= 1
    elif letters.endswith("es") and consonant and letters[-3] not in "sxzcg" \
            and not letters.endswith(("shes", "ches")):
        count -= 1
    elif letters.endswith("ed") and consonant and letters[-3] not in "td":
        count -= 1
    return max(count, 1)


def _keyword_form(word: str) -> str | None:
    word = word.lower().replace("’", "'")
    if word.endswith("'s"):
        word = word[:-2]
    if word in STOPWORDS or len(word) < 2 or not any(char.isalpha() for char in word):
        return None
    return word


def _content_runs(text: str) -> list[list[str]]:
    """Runs of adjacent content words, lower-cased; stopwords and punctuation end a run."""
    runs: list[list[str]] = [[]]
    for token in _TOKEN.findall(text):
        word = _keyword_form(token)
        if word is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append(word)
    return [run for run in runs if run]


# --- the operations -------------------------------------------------------------------------

def statistics(text: str) -> dict[str, Any]:
    words = words_of(text)
    sentence_count = max(len(split_sentences(text)), 1)
    paragraphs = sum(1 for block in _PARAGRAPH_BREAK.split(text) if _WORD.search(block))
    syllable_count = sum(syllables(word) for word in words)
    unique = {word.lower().replace("’", "'") for word in words}
    words_per_sentence = len(words) / sentence_count
    syllables_per_word = syllable_count / len(words)
    letters = sum(sum(char.isalnum() for char in word) for word in words)
    minutes = len(words) / READING_WORDS_PER_MINUTE
    return {
        "characters": len(text),
        "characters_without_spaces": sum(not char.isspace() for char in text),
        "words": len(words),
        "sentences": sentence_count,
        "paragraphs": paragraphs,
        "syllables": syllable_count,
        "average_word_length": round(letters / len(words), 2),
        "average_sentence_length": round(words_per_sentence, 2),
        "unique_words": len(unique),
        "lexical_diversity": round(len(unique) / len(words), 4),
        "flesch_reading_ease": round(
            206.835 - 1.015 * words_per_sentence - 84.6 * syllables_per_word, 2),
        "flesch_kincaid_grade": round(
            0.39 * words_per_sentence + 11.8 * syllables_per_word - 15.59, 2),
        "reading_time_minutes": round(minutes, 2),
        "reading_time_seconds": round(minutes * 60),
    }


def keywords(text: str, k: int, bigrams: bool) -> dict[str, Any]:
    """The k most frequent content words (ties: first seen first), and adjacent pairs if asked."""
    runs = _content_runs(text)
    counts = Counter(word for run in runs for word in run)
    total = sum(counts.values())
    top = sorted(counts.items(), key=lambda item: -item[1])[:k]
    result: dict[str, Any] = {"keywords": [
        {"keyword": word, "count": count, "score": round(count / total, 4)}
        for word, count in top]}
    if bigrams:
        pairs = Counter(f"{first} {second}" for run in runs for first, second in zip(run, run[1:]))
        pair_total = sum(pairs.values())
        ranked = sorted(pairs.items(), key=lambda item: (
            -item[1], -sum(counts[word] for word in item[0].split())))[:k]
        result["bigrams"] = [
            {"keyword": pair, "count": count, "score": round(count / pair_total, 4)}
            for pair, count in ranked]
    return result


def _frequency_scores(sentences: list[str]) -> list[float]:
    runs = [[word for run in _content_runs(sentence) for word in run] for sentence in sentences]
    counts = Counter(word for run in runs for word in run)
    top = max(counts.values(), default=1)
    return [sum(counts[word] for word in run) / (top * len(run)) if run else 0.0 for run in runs]


def _centrality_scores(sentences: list[str], embed: Embed) -> list[float]:
    vectors = embed(sentences)
    centroid = vectors.mean(axis=0)
    centroid /= max(float(np.linalg.norm(centroid)), 1e-12)
    return [float(score) for score in vectors @ centroid]


def summary(text: str, n: int, method: str, embed: Embed) -> dict[str, Any]:
    """The n sentences most central to the text (or richest in its frequent words), in order."""
    sentences = split_sentences(text)
    scores = (_centrality_scores(sentences, embed) if method == "centrality"
              else _frequency_scores(sentences))
    chosen = sorted(sorted(range(len(sentences)), key=lambda index: -scores[index])[:n])
    return {
        "summary": " ".join(sentences[index] for index in chosen),
        "sentences": [{"index": index, "text": sentences[index], "score": round(scores[index], 4)}
                      for index in chosen],
        "method": method,
        "sentence_count": len(sentences),
    }


def _sentiment_tokens(text: str) -> list[str]:
    return [token.lower().replace("’", "'") for token in _TOKEN.findall(text)]


def _negator_before(tokens: list[str], before: int) -> int | None:
    """Where a negator stands in the few tokens before index `before`, within the clause."""
    for index in range(before, max(before - NEGATION_WINDOW, -1), -1):
        token = tokens[index]
        if token in _NEGATORS or token.endswith("n't"):
            return index
        if not token[0].isalnum() or token == "but":
            return None
    return None


class _SentimentMatch(TypedDict):
    word: str
    phrase: str
    score: float


def sentiment(text: str) -> dict[str, Any]:
    """Lexicon sentiment: word strengths, scaled by intensifiers, flipped by negation, and weighted
    towards the clause after "but"; the total is squashed into (-1, 1)."""
    total = 0.0
    matches: list[_SentimentMatch] = []
    for sentence in split_sentences(text):
        tokens = _sentiment_tokens(sentence)
        but = tokens.index("but") if "but" in tokens else None
        for index, token in enumerate(tokens):
            strength = SENTIMENT_LEXICON.get(token)
            if strength is None:
                continue
            start = index
            while start > 0 and tokens[start - 1] in _INTENSIFIERS:
                start -= 1
                strength *= _INTENSIFIERS[tokens[start]]
            negator = _negator_before(tokens, start - 1)
            if negator is not None:
                strength *= NEGATION_FACTOR
                start = negator
            if but is not None:
                strength *= _BUT_BEFORE if index < but else _BUT_AFTER
            total += strength
            matches.append({"word": token, "phrase": " ".join(tokens[start:index + 1]),
                            "score": round(strength, 3)})
    score = total / math.sqrt(total * total + _NORMALISING_ALPHA)
    label = ("positive" if score >= NEUTRAL_BAND else
             "negative" if score <= -NEUTRAL_BAND else "neutral")
    return {
        "score": round(score, 4),
        "label": label,
        "positive_matches": sum(match["score"] > 0 for match in matches),
        "negative_matches": sum(match["score"] < 0 for match in matches),
        "matches": matches,
    }


def _similarities(texts: list[str], embed: Embed) -> np.ndarray:
    vectors = embed(texts).astype(np.float64)
    products = vectors @ vectors.T
    matrix = np.clip((products + products.T) / 2, -1.0, 1.0)
    np.fill_diagonal(matrix, 1.0)
    return matrix


def similarity(texts: list[str], embed: Embed) -> dict[str, Any]:
    matrix = _similarities(texts, embed)
    if len(texts) == 2:
        return {"similarity": round(float(matrix[0, 1]), 4)}
    rows, columns = np.triu_indices(len(texts), k=1)
    values = matrix[rows, columns]
    order = np.argsort(-values, kind="stable")[:MOST_SIMILAR_PAIRS]
    return {
        "count": len(texts),
        "matrix": np.round(matrix, 4).tolist(),
        "most_similar": [{"indices": [int(rows[i]), int(columns[i])],
                          "similarity": round(float(values[i]), 4)} for i in order],
    }


class _DuplicateGroup(TypedDict):
    indices: list[int]
    similarities: list[float]


def near_duplicates(texts: list[str], threshold: float, embed: Embed) -> dict[str, Any]:
    """Each text not yet grouped leads a group of the later ungrouped texts at least `threshold`
    similar to it; groups of one are not listed."""
    matrix = _similarities(texts, embed)
    grouped = np.zeros(len(texts), dtype=bool)
    groups: list[_DuplicateGroup] = []
    for leader in range(len(texts)):
        if grouped[leader]:
            continue
        close = (matrix[leader, leader + 1:] >= threshold - 1e-6) & ~grouped[leader + 1:]
        members = [int(index) + leader + 1 for index in np.flatnonzero(close)]
        if members:
            grouped[members] = True
            groups.append({"indices": [leader, *members], "similarities": [
                1.0, *(round(float(matrix[leader, index]), 4) for index in members)]})
    duplicates = sum(len(group["indices"]) - 1 for group in groups)
    return {"threshold": threshold, "count": len(texts), "groups": groups,
            "duplicate_count": duplicates, "unique_count": len(texts) - duplicates}


def analyse(payload: dict[str, Any], description: str,
            load_embedder: Callable[[], TextEncoder]) -> dict[str, Any]:
    """The whole task, synchronously: what to run, on which texts, and its result."""
    instruction, quoted = split_description(description)
    operation = choose_operation(payload, instruction, description)

    def embed(texts: Sequence[str]) -> np.ndarray:
        return load_embedder().encode(texts)

    if operation in ("similarity", "near_duplicates"):
        texts = compared_texts(payload, quoted, operation)
        if operation == "similarity":
            return {"operation": operation, **similarity(texts, embed)}
        return {"operation": operation, **near_duplicates(texts, _threshold(payload), embed)}

    batch = single_texts(payload, quoted, operation)
    run: Callable[[str], dict[str, Any]]
    if operation == "statistics":
        run = statistics
    elif operation == "keywords":
        k = _whole_number(payload, "k", _K_IN_DESCRIPTION.search(instruction), DEFAULT_K, MAX_K)
        bigrams = _flag(payload, "bigrams")
        run = functools.partial(keywords, k=k, bigrams=bigrams)
    elif operation == "summary":
        n = _whole_number(payload, "n", _N_IN_DESCRIPTION.search(instruction), DEFAULT_N, MAX_N)
        method = _method(payload)
        run = functools.partial(summary, n=n, method=method, embed=embed)
    else:
        run = sentiment
    if "texts" in payload:
        return {"operation": operation, "count": len(batch),
                "results": [run(text) for text in batch]}
    return {"operation": operation, **run(batch[0])}


class TextAnalysis(Agent):
    """Statistics, keywords, summaries, sentiment, similarity and near-duplicates of texts."""

    spec = AgentSpec(
        name="text_analysis",
        description="Analyses natural-language text: word, sentence and readability statistics, "
        "keywords, extractive summaries, sentiment, semantic similarity between texts and "
        "near-duplicate detection, using sentence embeddings and word lexicons.",
        capabilities=(
            "count words, sentences and paragraphs; readability scores and reading time",
            "extract the top keywords and key phrases of a document",
            "summarise a document into its most central sentences",
            "detect whether a review or message is positive, negative or neutral",
            "measure the semantic similarity between texts with sentence embeddings",
            "find near-duplicate and paraphrased texts in a list",
            "analyse a whole batch of texts at once",
            "character, word and sentence counts of a text",
            "find the main topics and themes of documents",
            "tell whether two phrasings mean the same thing",
        ),
        examples=(
            "How many words and sentences are in this essay?",
            "What's the reading level of this article?",
            "Estimate the reading time for this blog post",
            "Give me the Flesch reading ease score of this paragraph",
            "Compute the lexical diversity and average sentence length of this text",
            "Extract the top 10 keywords from this document",
            "What are the main topics and key phrases in this text?",
            "Summarize this article in 3 sentences",
            "Give me a short extractive summary of the meeting notes",
            "tl;dr of this report please",
            "Is this customer review positive or negative?",
            "Analyse the sentiment of these tweets",
            "What's the tone of this email?",
            "How similar are these two sentences?",
            "Compare these product descriptions for semantic similarity",
            "Are these two questions paraphrases of each other?",
            "Find near-duplicate support tickets in this list",
            "Deduplicate these headlines that say the same thing",
            "Which of these survey answers are basically the same?",
            "count the words in this text",
            "how many characters are in this tweet",
            "how long does this article take to read",
            "what grade level is this text written at",
            "is this text readable for a general audience?",
            "summarise the key points of this document",
            "give me a one-paragraph summary of this report",
            "what's the gist of this thread",
            "list the keywords of this document",
            "what topics do these customer comments talk about",
            "main themes of these interview notes",
            "is the sentiment of this review positive?",
            "what mood do these comments express",
            "rate the sentiment of each tweet: positive, negative or neutral",
            "what's the emotional tone of this email",
            "how similar are these two paragraphs?",
            "how close in meaning are these two phrases?",
            "are these two sentences paraphrases?",
            "semantic similarity of this query against each document",
            "find near-duplicates among these questions",
            "which of these complaints are basically the same",
            "text statistics for this chapter: words, sentences, average word length",
            "summarise these hospital discharge notes",
            "how readable is this textbook chapter for 12-year-olds",
            "find the main themes in these exit interview comments",
            "extract keywords from our product descriptions",
            "extract the main topics from the open survey answers",
            "what is the sentiment of these ticket comments",
            "is this film review positive or negative?",
            "how many words does this paragraph have?",
            "pull out the key phrases from these abstracts",
            "what's the overall sentiment of this comment thread",
            "summarise this transcript in 5 sentences",
        ),
        resources=Resources(num_cpus=0.5, memory_mb=1536, custom=dict(ML_RESOURCE)),
        concurrency=4,
        replicas=1,
        payload_hint={"operation": "keywords", "k": 5,
                      "text": "Solar panels turn sunlight into electricity. Cheaper solar "
                              "panels let more households cut their electricity bills."},
        on_message="task",
    )

    @classmethod
    def message_task(cls, message: InboxMessage) -> dict[str, Any] | None:
        """A message is text to analyse: a string body is the text, a list body the texts, an
        object body the payload itself ("text" or "texts", and any parameter such as
        "operation"); an envelope (`{"payload": ...}`) reads as for any agent. The subject
        says which analysis unless the payload names its "operation"; a message that says
        none (or more than one) is refused, naming the operations to choose from."""
        body = message.body
        if isinstance(body, dict) and "payload" in body:
            return super().message_task(message)
        if isinstance(body, str):
            payload: dict[str, Any] = {"text": body}
        elif isinstance(body, list):
            payload = {"texts": body}
        elif isinstance(body, dict):
            payload = dict(body)
        else:
            raise invalid(f"a message to text_analysis is the text to analyse (a string), a "
                          f"list of texts or an object payload, not {json_type(body)}",
                          field="body")
        subject = message.subject or ""
        payload["operation"] = choose_operation(payload, split_description(subject)[0], subject)
        sender = message.sender or "an unnamed sender"
        description = subject or f"{payload['operation']} of a message from {sender}"
        return {"description": description, "payload": payload}

    _embedder: TextEncoder | None = None

    async def setup(self) -> None:
        self._embedder = await asyncio.to_thread(text_encoder, self.context)

    def embedder(self) -> TextEncoder:
        """This replica's encoder (on the platform, the router's model); chosen here if `setup`
        has not run (as in unit tests)."""
        if self._embedder is None:
            self._embedder = text_encoder(self.context)
        return self._embedder

    async def run(self, task: AgentTask) -> dict[str, Any]:
        return await asyncio.to_thread(analyse, task.payload, task.description or "",
                                       self.embedder)
