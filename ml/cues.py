"""Phrasing cues the sentence embeddings miss: the work of some agent types is told apart by how
a request is put rather than by its subject.

Stored documents or a given text. "per the sales playbook, when can a rep offer a discount?" and
"based only on the text below, when does the lease end?" are both questions about a document.
The embeddings place them by their subject (discounts, leases), near whichever agent's examples
share it; what tells the `knowledge` agent's work (questions about the tenant's own stored
documents) from work on a text given with the task is the reference: "our handbook", "the sales
playbook", "according to the security policy" on one side; "this paragraph", "the text below",
"these comments" on the other (`document_cues`).

Writing or measuring. "turn these notes into a friendly update" and "sort these comments into
praise, complaint or question" share their words with text analysis (notes, comments, tone);
what makes them the `llm` agent's is that they ask for new prose (a writing verb leads: write,
draft, rephrase, translate, ...; or "in plain English", "a prose summary"; code excepted) or for
labels the request itself lists (`asks_for_prose`, `lists_labels`).

Writing code. "write a JavaScript function that validates a form" shares its operation word with
validation; that it asks for a program (`asks_for_code`) is what makes it no agent's work.

`cue_bonuses` turns the cues into what the router adds to the similarity of a type's examples:
- `knowledge`: `+weight` when the task names a stored document and gives no text inline,
  `-weight` when it gives a text inline and names no stored document;
- `llm`: `+weight` when it asks for prose or lists its labels, else `-weight` when it names a
  stored document and gives no text (a question for `knowledge`, not work on a given text);
- the out-of-scope phrases: `+weight` when it asks for code, or for prose or labels while `llm`
  is not registered; each only while no registered type claims that category of phrases
  (`ml.out_of_scope`: a third-party translator takes "languages", and keeps its requests).
A type that is not registered gets nothing. Pure functions over compiled patterns.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection

from ml.out_of_scope import OUT_OF_SCOPE

DOCUMENT_TYPE = "knowledge"
WRITING_TYPE = "llm"
WRITING_CATEGORIES = frozenset({"creative_writing", "writing_and_editing", "languages"})
CODING_CATEGORY = "programming"

_DOCUMENT_NOUN = (r"(?:hand ?books?|polic(?:y|ies)|playbooks?|run ?books?|guidelines?|guides?|"
                  r"docs|documentation|documents?|wikis?|knowledge ?base|collections?|manuals?|"
                  r"code of (?:conduct|practice)|procedures?|sops?|faqs?|checklists?|intranet|"
                  r"rule ?books?|charter|standards|templates?|terms and conditions)")
_INLINE_NOUN = (r"(?:text|paragraphs?|passages?|emails?|messages?|letters?|articles?|notes?|"
                r"comments?|reviews?|posts?|tweets?|sentences?|descriptions?|transcripts?|"
                r"contracts?|lease|clauses?|invoices?|signature|essay|announcement|reply|"
                r"feedback|tickets?|abstract|story|page|section)")
_MODIFIERS = r"(?:[\w'-]+\s+){0,3}"

# "our travel policy", "the company's code of conduct", "the sales playbook", "internal docs"
_STORED = re.compile(
    rf"\b(?:our|my company's|the company's|company|internal|uploaded|stored|team's|the)\s+"
    rf"{_MODIFIERS}{_DOCUMENT_NOUN}\b(?!\s+(?:below|above|attached|here))", re.I)
# "this paragraph", "these comments", "the text below", "the following email", "attached letter"
_INLINE = re.compile(
    rf"\b(?:this|these|the following|following|attached|pasted|given|my)\s+{_MODIFIERS}"
    rf"{_INLINE_NOUN}\b|\b(?:the\s+)?{_INLINE_NOUN}\s+(?:below|above|attached|here)\b"
    rf"|\b(?:below|above):", re.I)
# "this policy document", "these docs": a document handed over with the task, not a stored one
_HANDED_OVER = re.compile(rf"\b(?:this|these|attached|pasted|following)\s+{_MODIFIERS}"
                          rf"{_DOCUMENT_NOUN}\b", re.I)
# "our knowledge base", "the handbook collection": only a stored collection is meant
_COLLECTION = re.compile(r"\b(?:knowledge ?base|collections?|wiki|intranet)\b", re.I)

_WRITING = re.compile(
    r"\s*(?:(?:please|can you|could you|would you|help me|i need you to|i want you to)\s+)*"
    r"(?:write(?!\s+(?:to|into)\b)|draft|compose|rewrite|re-write|rephrase|reword|paraphrase|"
    r"proofread|polish|translate|brainstorm|come up with|think of|suggest (?:[\w-]+ ){0,3}?"
    r"(?:names?|titles?|taglines?|slogans?|headlines?|subject lines?|ideas?)|"
    r"turn (?:this|these|my|the)\b.*\binto|"
    r"make (?:this|these|my|the)\b.*\b(?:sound|more|less|shorter|longer|friendlier|clearer))\b",
    re.I)
# what a writing verb may take that is not prose: code, music, pictures
_CODE = re.compile(r"\b(?:functions?|scripts?|quer(?:y|ies)|code|programs?|class(?:es)?|"
                   r"unit tests?|migrations?|regex|regular expressions?|apis?|sql|python|"
                   r"java(?:script)?|typescript|rust|bash|html|css|documentation|melod(?:y|ies)|"
                   r"music|tunes?|images?|pictures?|logos?|drawings?|videos?)\b", re.I)
# editing, re-telling or questioning a given text wherever the verb is: "fix the typos", "in
# plain English", "a prose summary", "summarise ... as a short paragraph", "answer a question
# about this article"
_GIVEN = r"(?:text|passage|email|letter|contract|article|paragraph)"
_EDITING = re.compile("|".join((
    r"\b(?:fix|correct|check)\s+(?:the\s+|my\s+|any\s+)?(?:spelling|grammar|typos?|punctuation|"
    r"wording)\b",
    r"\b(?:in|into)\s+(?:plain|simple|simpler)\s+(?:english|terms|words|language)\b",
    r"\bin your own words\b",
    r"\b(?:extract|pull(?:\s+out)?)\b[^.]*\bas json\b",
    rf"\bonly\s+(?:on\s+|from\s+)?(?:the|this)\s+{_GIVEN}\b",
    rf"\b(?:from|according to|based on|using)\s+(?:the|this)\s+{_GIVEN}\s+(?:below|above)\b",
    r"\bprose\b|\babstract of\b",
    r"\bsummar\w*\b[^.?!]*\b(?:as|in|into)\s+(?:a|an)\s+(?:[\w-]+\s+){0,2}"
    r"(?:paragraph|email|note|letter|update|message|post)\b",
    r"\banswers?\s+(?:a\s+|the\s+|this\s+|my\s+)?questions?\s+(?:about|on|from|using)\s+"
    r"(?:this|these|the following|the attached|the)\s+(?:text|passage|email|letter|contract|"
    r"article|paragraph|document|report)\b",
)), re.I)
_CODING = re.compile(
    r"\s*(?:(?:please|can you|could you|help me)\s+)*(?:write|implement|code|create|build|"
    r"generate|fix|debug|refactor|optimi[sz]e)\s+(?:[\w'+#.-]+\s+){0,4}?(?:functions?|scripts?|"
    r"methods?|class(?:es)?|regex|regular expressions?|unit tests?|programs?|sql|quer(?:y|ies)|"
    r"migrations?|endpoints?|modules?|snippets?|code)\b", re.I)
_SENTIMENT = re.compile(r"\b(?:sentiments?|positive|negative|neutral)\b", re.I)
# "into praise, complaint or question", "as bug report, feature request or praise"
_LABELS = re.compile(r"\b(?:into|as|with)\s+(?:[\w-]+\s+){0,2}[\w-]+\s*,\s*(?:[\w-]+\s+){0,2}"
                     r"[\w-]+\s*,?\s+(?:or|and)\s+[\w-]+", re.I)


@dataclasses.dataclass(frozen=True)
class DocumentCues:
    """What a task description refers to: a stored document of the tenant's, a text it gives
    inline, or both ("add these notes to the handbook collection")."""

    stored: bool
    inline: bool

    @property
    def direction(self) -> int:
        """+1 when only a stored document is named, -1 when only an inline text, else 0."""
        if self.stored and not self.inline:
            return 1
        if self.inline and not self.stored:
            return -1
        return 0


def document_cues(description: str) -> DocumentCues:
    """The references of `description` (its first 1,000 characters)."""
    text = description[:1000]
    handed_over = _HANDED_OVER.search(text) is not None
    stored = _COLLECTION.search(text) is not None or (
        _STORED.search(_HANDED_OVER.sub(" ", text)) is not None)
    inline = handed_over or _INLINE.search(text) is not None
    return DocumentCues(stored=stored, inline=inline)


def asks_for_prose(description: str) -> bool:
    """Whether `description` opens with a writing verb, or asks to edit or re-tell a text, and
    its object is not code (nor music or pictures)."""
    text = description[:1000]
    return (_WRITING.match(text) is not None or _EDITING.search(text) is not None) \
        and _CODE.search(text) is None


def lists_labels(description: str) -> bool:
    """Whether `description` asks to sort texts into labels it lists ("into A, B or C"),
    sentiment labels excepted (measuring sentiment is text analysis)."""
    text = description[:1000]
    return _LABELS.search(text) is not None and _SENTIMENT.search(text) is None


def asks_for_code(description: str) -> bool:
    """Whether `description` asks for a program to be written or changed ("write a Python
    function that ...", "refactor this class")."""
    return _CODING.match(description[:1000]) is not None


def cue_bonuses(description: str, weight: float, registered: Collection[str],
                unclaimed: Collection[str] = ()) -> dict[str, float]:
    """What the cues add to the similarity of each type's examples for `description` (types
    left out get nothing), the agent types `registered` being those the router knows and
    `unclaimed` the out-of-scope categories still indexed (`ml.out_of_scope.unclaimed`): the
    out-of-scope phrases gain only where no registered type claims the work. Each pattern runs
    at most once."""
    if not weight:
        return {}
    bonuses: dict[str, float] = {}
    writing = asks_for_prose(description) or lists_labels(description)
    unclaimed = set(unclaimed)
    if (CODING_CATEGORY in unclaimed and asks_for_code(description)) or (
            writing and WRITING_TYPE not in registered and WRITING_CATEGORIES <= unclaimed):
        bonuses[OUT_OF_SCOPE] = weight
    direction = document_cues(description).direction \
        if DOCUMENT_TYPE in registered or WRITING_TYPE in registered else 0
    if DOCUMENT_TYPE in registered and direction:
        bonuses[DOCUMENT_TYPE] = weight * direction
    if WRITING_TYPE in registered and (writing or direction > 0):
        # a question about stored documents, not work on a given text
        bonuses[WRITING_TYPE] = weight if writing else -weight
    return bonuses
