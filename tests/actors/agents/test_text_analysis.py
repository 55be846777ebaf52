"""The text_analysis agent on the real embedding model: every operation, and clear refusals."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from actors.agent import Agent
from actors.agents.text_analysis import (
    MAX_ITEM_CHARS, MAX_TEXT_CHARS, OPERATIONS, TextAnalysis, choose_operation, split_description,
    split_sentences, syllables)
from actors.errors import InvalidTaskInput
from storage.messages import AgentTask

SOLAR = ("Solar panels convert sunlight into electricity using photovoltaic cells. "
         "My neighbour's dog barked all night long. "
         "The efficiency of solar panels has improved steadily over the past decade. "
         "Installing solar panels on a roof can reduce a household's electricity bill. "
         "Pizza is best eaten hot. "
         "Governments offer subsidies to encourage homeowners to adopt solar energy.")
OFF_TOPIC = {1, 4}

FOXES = ["The quick brown fox jumps over the lazy dog.", "Stock prices rose sharply on Monday.",
         "The quick brown fox jumped over the lazy dog!", "A quick brown fox jumps over a lazy dog",
         "I like to eat pizza on Fridays.", "Shares climbed steeply on Monday.",
         "the QUICK brown fox jumps over   the lazy dog."]


@pytest.fixture(scope="module")
def agent() -> TextAnalysis:
    """One agent, set up once: the embedding model loads once for the module."""
    ready = TextAnalysis()
    asyncio.run(ready.setup())
    return ready


def analyse(agent: TextAnalysis, description: str = "", **payload: Any) -> Any:
    task = AgentTask(task_id="t", attempt=1, agent_type="text_analysis", description=description,
                     payload=payload, timeout_s=30)
    result = asyncio.run(agent.run(task))
    json.dumps(result, allow_nan=False)  # every result is plain JSON
    return result


def refusal(agent: TextAnalysis, description: str = "", **payload: Any) -> InvalidTaskInput:
    with pytest.raises(InvalidTaskInput) as caught:
        analyse(agent, description, **payload)
    return caught.value


def test_spec_declares_what_the_router_learns_from():
    spec = TextAnalysis.spec
    assert spec.name == "text_analysis" and issubclass(TextAnalysis, Agent)
    assert len(spec.capabilities) >= 6
    assert len(set(spec.examples)) == len(spec.examples) >= 15
    assert spec.resources.num_cpus == 0.5 and spec.resources.memory_mb == 1536
    assert spec.concurrency == 4 and spec.replicas == 1


EXPECTED_OPERATION = {
    "How many words and sentences are in this essay?": "statistics",
    "What's the reading level of this article?": "statistics",
    "Estimate the reading time for this blog post": "statistics",
    "Give me the Flesch reading ease score of this paragraph": "statistics",
    "Compute the lexical diversity and average sentence length of this text": "statistics",
    "Extract the top 10 keywords from this document": "keywords",
    "What are the main topics and key phrases in this text?": "keywords",
    "Summarize this article in 3 sentences": "summary",
    "Give me a short extractive summary of the meeting notes": "summary",
    "tl;dr of this report please": "summary",
    "Is this customer review positive or negative?": "sentiment",
    "Analyse the sentiment of these tweets": "sentiment",
    "What's the tone of this email?": "sentiment",
    "How similar are these two sentences?": "similarity",
    "Compare these product descriptions for semantic similarity": "similarity",
    "Are these two questions paraphrases of each other?": "similarity",
    "Find near-duplicate support tickets in this list": "near_duplicates",
    "Deduplicate these headlines that say the same thing": "near_duplicates",
    "Which of these survey answers are basically the same?": "near_duplicates",
    "count the words in this text": "statistics",
    "how many characters are in this tweet": "statistics",
    "how long does this article take to read": "statistics",
    "what grade level is this text written at": "statistics",
    "is this text readable for a general audience?": "statistics",
    "summarise the key points of this document": "summary",
    "give me a one-paragraph summary of this report": "summary",
    "what's the gist of this thread": "summary",
    "list the keywords of this document": "keywords",
    "what topics do these customer comments talk about": "keywords",
    "main themes of these interview notes": "keywords",
    "is the sentiment of this review positive?": "sentiment",
    "what mood do these comments express": "sentiment",
    "rate the sentiment of each tweet: positive, negative or neutral": "sentiment",
    "what's the emotional tone of this email": "sentiment",
    "how similar are these two paragraphs?": "similarity",
    "how close in meaning are these two phrases?": "similarity",
    "are these two sentences paraphrases?": "similarity",
    "semantic similarity of this query against each document": "similarity",
    "find near-duplicates among these questions": "near_duplicates",
    "which of these complaints are basically the same": "near_duplicates",
    "text statistics for this chapter: words, sentences, average word length": "statistics",
    "summarise these hospital discharge notes": "summary",
    "how readable is this textbook chapter for 12-year-olds": "statistics",
    "find the main themes in these exit interview comments": "keywords",
    "extract keywords from our product descriptions": "keywords",
    "extract the main topics from the open survey answers": "keywords",
    "what is the sentiment of these ticket comments": "sentiment",
    "is this film review positive or negative?": "sentiment",
    "how many words does this paragraph have?": "statistics",
    "pull out the key phrases from these abstracts": "keywords",
    "what's the overall sentiment of this comment thread": "sentiment",
    "summarise this transcript in 5 sentences": "summary",
}


def test_every_example_names_its_operation():
    assert set(EXPECTED_OPERATION) == set(TextAnalysis.spec.examples)
    assert set(EXPECTED_OPERATION.values()) == set(OPERATIONS)
    for example, operation in EXPECTED_OPERATION.items():
        instruction, _ = split_description(example)
        assert choose_operation({}, instruction, example) == operation, example


def test_the_payload_operation_and_its_aliases_win_over_the_description():
    assert choose_operation({"operation": "Summarize"}, "what is the sentiment?") == "summary"
    assert choose_operation({"operation": "dedupe"}, "") == "near_duplicates"
    assert choose_operation({}, "summary statistics please") == "statistics"
    assert choose_operation({"threshold": 0.8}, "") == "near_duplicates"


def test_statistics_of_a_simple_sentence(agent: TextAnalysis):
    # 6 one-syllable words in one sentence: ease = 206.835 - 1.015*6 - 84.6*1 = 116.145,
    # grade = 0.39*6 + 11.8*1 - 15.59 = -1.45; letters 3+3+3+2+3+3 = 17 over 6 words.
    assert analyse(agent, operation="statistics", text="The cat sat on the mat.") == {
        "operation": "statistics", "characters": 23, "characters_without_spaces": 18,
        "words": 6, "sentences": 1, "paragraphs": 1, "syllables": 6, "average_word_length": 2.83,
        "average_sentence_length": 6.0, "unique_words": 5, "lexical_diversity": 0.8333,
        "flesch_reading_ease": 116.15, "flesch_kincaid_grade": -1.45,
        "reading_time_minutes": 0.03, "reading_time_seconds": 2,
    }


def test_statistics_count_sentences_and_paragraphs(agent: TextAnalysis):
    text = ("Dr. Smith arrived at 3.30 p.m. yesterday. Was he late? No!\n\n"
            "Everyone was happy to see him, e.g. his sister.\n  \nThe end")
    result = analyse(agent, "How many words and sentences are in this?", text=text)
    assert result["operation"] == "statistics"
    # "3.30", "p.m." and "e.g." are one word each: 9 + 3 + 8 + 2 words.
    assert (result["sentences"], result["paragraphs"], result["words"]) == (5, 3, 22)
    assert result["reading_time_seconds"] == 6  # 22 words at 238 a minute: 5.5 s


@pytest.mark.parametrize("word, count", [
    ("cat", 1), ("reading", 2), ("beautiful", 3), ("makes", 1), ("boxes", 2), ("jumped", 1),
    ("wanted", 2), ("table", 2), ("free", 1), ("elephant", 3), ("information", 4),
])
def test_syllable_heuristic(word: str, count: int):
    assert syllables(word) == count


def test_sentences_do_not_end_at_abbreviations():
    assert split_sentences("Dr. Smith lives in the U.S. now. He likes it, e.g. the food. Fine!") \
        == ["Dr. Smith lives in the U.S. now.", "He likes it, e.g. the food.", "Fine!"]


ML_TEXT = ("Machine learning is a field of artificial intelligence. Machine learning systems "
           "learn from data. Deep learning is a subset of machine learning that uses neural "
           "networks. Neural networks have many layers.")


def test_keywords_by_frequency_without_stopwords(agent: TextAnalysis):
    result = analyse(agent, "Extract the top 4 keywords", text=ML_TEXT)
    assert result == {"operation": "keywords", "keywords": [
        {"keyword": "learning", "count": 4, "score": round(4 / 21, 4)},
        {"keyword": "machine", "count": 3, "score": round(3 / 21, 4)},
        {"keyword": "neural", "count": 2, "score": round(2 / 21, 4)},
        {"keyword": "networks", "count": 2, "score": round(2 / 21, 4)},
    ]}


def test_keywords_with_bigrams(agent: TextAnalysis):
    result = analyse(agent, operation="keywords", text=ML_TEXT, k=2, bigrams=True)
    assert [item["keyword"] for item in result["keywords"]] == ["learning", "machine"]
    assert result["bigrams"] == [
        {"keyword": "machine learning", "count": 3, "score": 0.3},
        {"keyword": "neural networks", "count": 2, "score": 0.2},
    ]


@pytest.mark.parametrize("method", ["centrality", "frequency"])
def test_summary_picks_the_central_sentences_in_text_order(agent: TextAnalysis, method: str):
    result = analyse(agent, "Summarize this in 3 sentences", text=SOLAR, method=method)
    indices = [sentence["index"] for sentence in result["sentences"]]
    assert len(indices) == 3 and indices == sorted(indices) and not OFF_TOPIC & set(indices)
    assert result["summary"] == " ".join(sentence["text"] for sentence in result["sentences"])
    assert result["method"] == method and result["sentence_count"] == 6


def test_a_summary_longer_than_the_text_is_the_text(agent: TextAnalysis):
    result = analyse(agent, operation="summary", text="One idea. Another idea.", n=5)
    assert result["summary"] == "One idea. Another idea."


def test_summary_text_may_follow_a_colon_in_the_description(agent: TextAnalysis):
    result = analyse(agent, f"Summarize in one sentence: {SOLAR}")
    assert result["operation"] == "summary" and len(result["sentences"]) == 1
    assert result["sentences"][0]["index"] not in OFF_TOPIC


@pytest.mark.parametrize("text, label, phrases", [
    ("I love this product, it is excellent and works great!", "positive",
     ["love", "excellent", "great"]),
    ("This was a terrible, awful experience. I hate it.", "negative",
     ["terrible", "awful", "hate"]),
    ("The food was not good.", "negative", ["not good"]),
    ("The movie wasn't bad at all.", "positive", ["wasn't bad"]),
    ("The package arrived on Tuesday.", "neutral", []),
    ("The food was good but the service was terrible.", "negative", ["good", "terrible"]),
])
def test_sentiment(agent: TextAnalysis, text: str, label: str, phrases: list[str]):
    result = analyse(agent, "Is this review positive or negative?", text=text)
    assert result["label"] == label and -1 < result["score"] < 1
    assert [match["phrase"] for match in result["matches"]] == phrases


def test_intensifiers_strengthen_and_negation_flips(agent: TextAnalysis):
    def score(text: str) -> float:
        return analyse(agent, operation="sentiment", text=text)["score"]

    assert score("The food was extremely good.") > score("The food was good.") > 0
    assert score("The food was not good.") == -score("The food was not bad.") < 0


def test_sentiment_of_a_quoted_text_and_of_a_batch(agent: TextAnalysis):
    quoted = analyse(agent, 'What is the sentiment of "I absolutely love it"?')
    assert quoted["label"] == "positive" and quoted["matches"][0]["phrase"] == "absolutely love"
    batch = analyse(agent, "sentiment of these tweets", texts=["Great job!", "Awful service."])
    assert [result["label"] for result in batch["results"]] == ["positive", "negative"]
    assert batch["count"] == 2


def test_paraphrases_are_more_similar_than_unrelated_texts(agent: TextAnalysis):
    paraphrase = analyse(agent, "How similar are these?", a="How do I reset my password?",
                         b="What is the way to change my password?")
    unrelated = analyse(agent, operation="similarity",
                        texts=["How do I reset my password?", "The weather is sunny today."])
    assert paraphrase["similarity"] > 0.7 > 0.2 > unrelated["similarity"]
    quoted = analyse(agent, 'How similar are "How do I reset my password?" and '
                     '"What is the way to change my password?"')
    assert quoted == paraphrase


def test_a_similarity_matrix_for_several_texts(agent: TextAnalysis):
    result = analyse(agent, operation="similarity", texts=FOXES)
    matrix = result["matrix"]
    assert result["count"] == len(matrix) == 7 and all(len(row) == 7 for row in matrix)
    assert all(matrix[i][i] == 1.0 and matrix[i][j] == matrix[j][i]
               for i in range(7) for j in range(7))
    assert result["most_similar"][0] == {"indices": [0, 6], "similarity": 1.0}
    assert matrix[1][5] > matrix[1][0]  # the two stock-market headlines


def test_near_duplicates_are_grouped_under_their_first_occurrence(agent: TextAnalysis):
    result = analyse(agent, "Find near-duplicates in this list", texts=FOXES)
    assert [group["indices"] for group in result["groups"]] == [[0, 2, 3, 6]]
    similarities = result["groups"][0]["similarities"]
    assert similarities[0] == similarities[3] == 1.0 and min(similarities) >= 0.9
    assert (result["duplicate_count"], result["unique_count"], result["threshold"]) == (3, 4, 0.9)


def test_the_threshold_decides_what_counts_as_a_duplicate(agent: TextAnalysis):
    exact = analyse(agent, operation="near_duplicates", texts=FOXES, threshold=1)
    assert [group["indices"] for group in exact["groups"]] == [[0, 6]]
    loose = analyse(agent, operation="near_duplicates", texts=FOXES, threshold=0.5)
    assert [group["indices"] for group in loose["groups"]] == [[0, 2, 3, 6], [1, 5]]
    everything = analyse(agent, operation="near_duplicates", texts=FOXES, threshold=0)
    assert everything["unique_count"] == 1


@pytest.mark.parametrize("description, payload, message", [
    ("Summarize this", {}, "summary needs the text to analyse in payload 'text'"),
    ("", {"text": "hello"}, "cannot tell which analysis to run; set payload 'operation'"),
    ("summarize the sentiment", {"text": "hi"}, "the description mentions sentiment, summary"),
    ("", {"operation": "translate", "text": "hi"}, "unknown operation 'translate'"),
    ("sentiment", {"text": 42}, "payload 'text' must be a string, got a number"),
    ("sentiment", {"text": "   "}, "payload 'text' is empty"),
    ("sentiment", {"text": "?!"}, "payload 'text' has no words"),
    ("sentiment", {"text": "x" * (MAX_TEXT_CHARS + 1)}, "at most 200000"),
    ("sentiment", {"text": "a", "texts": ["b"]}, "both 'text' and 'texts'"),
    ("sentiment", {"texts": "one text"}, "payload 'texts' must be a list of strings, got a string"),
    ("sentiment", {"texts": []}, "payload 'texts' has 0 items; give 1 to 1000"),
    ("compare", {"texts": ["ok", None]}, "payload 'texts'[1] must be a string, got null"),
    ("compare", {"texts": ["ok", "y" * (MAX_ITEM_CHARS + 1)]}, "'texts'[1] has 20001 characters"),
    ("compare", {"texts": ["only one"]}, "payload 'texts' has 1 items; give 2 to 1000"),
    ("compare", {"texts": ["x"] * 1001}, "has 1001 items; give 2 to 1000"),
    ("compare", {"text": "just one"}, "similarity needs payload 'texts'"),
    ("", {"a": "one text"}, "payload 'a' needs 'b'"),
    ("dedupe", {"texts": ["a", "b"], "threshold": 1.5}, "'threshold' must be a number from 0 to 1"),
    ("dedupe", {"texts": ["a", "b"], "threshold": "high"}, "got a string ('high')"),
    ("dedupe", {"texts": ["a", "b"], "threshold": True}, "got a boolean"),
    ("keywords", {"text": "hello", "k": 0}, "'k' must be a whole number from 1 to 100"),
    ("keywords", {"text": "hello", "k": "5"}, "got a string ('5')"),
    ("keywords", {"text": "hello", "bigrams": "yes"}, "'bigrams' must be true or false"),
    ("summarize", {"text": "hello", "n": 101}, "'n' must be a whole number from 1 to 100"),
    ("summarize", {"text": "hello", "method": "magic"}, "'method' must be one of centrality"),
])
def test_bad_input_is_refused_clearly(agent: TextAnalysis, description: str,
                                      payload: dict[str, Any], message: str):
    error = refusal(agent, description, **payload)
    assert message in str(error), str(error)
    assert error.retryable is False


def test_refusals_name_the_field_and_index(agent: TextAnalysis):
    error = refusal(agent, operation="near_duplicates", texts=["fine", 7])
    assert error.details == {"field": "texts", "index": 1}
    assert refusal(agent, operation="keywords", text="hi", k=-1).details == {"field": "k"}
