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

Labels beyond the sentiment scale. "rate the sentiment of each tweet: positive, negative or
neutral" measures sentiment; "label each review as positive, negative or mixed" sorts into a label
set of the request's own, which text analysis cannot give (`lists_labels`).

What a given text says. "what is the main argument of this passage? '...'" and "summarise this
paragraph for a non-technical reader: ..." ask what a text given with the task means, or to re-tell
it for a reader: the `llm` agent's work, though their words sit near text analysis's
(`asks_about_given_text`; measurements such as sentiment, readability, keywords or similarity
excepted). "add these notes to the board-minutes collection: ..." gives a text too, but to be
filed in a collection: the `knowledge` agent's (`stores_documents`).

Writing code, changing systems. "write a JavaScript function that validates a form" shares its
operation word with validation, and "deploy the api service to production" a knowledge example's
("the steps to deploy a new service"); that they ask for a program (`asks_for_code`) or for a
change to running systems (`asks_for_operations`: deploy, restart, scale, merge, ...) is what
makes them no agent's work.

The cues read the instruction (`ml.semantic_router.instruction_text`), where a passage given in
quotes or after a colon reads `"text"`, so the words of the passage do not pass for the request's.

`cue_bonuses` turns the cues into what the router adds to the similarity of a type's examples:
- `knowledge`: `+weight` when the task names a stored document and gives no text inline,
  `-weight` when it gives a text inline and names no stored document; `+weight` when it asks
  to file texts in a collection, whatever text it gives;
- `llm`: `+weight` when it asks for prose, lists its labels or asks what a given text says, else
  `-weight` when it names a stored document and gives no text (a question for `knowledge`, not
  work on a given text);
- `text_analysis`: `-weight` when it asks for prose, lists its labels, asks what a given text
  says or files texts (none of them a measurement);
- the out-of-scope phrases: `+weight` when it asks for code, or for prose, labels or what a
  given text says while `llm` is not registered; each only while no registered type claims that category of phrases
  (`ml.out_of_scope`: a third-party translator takes "languages", and keeps its requests);
- a change to running systems, while no registered type claims "it_support" or "programming":
  `+weight` to the out-of-scope phrases and `-weight` to every registered type, and no other cue.
A type that is not registered gets nothing. Pure functions over compiled patterns.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection

from ml.out_of_scope import OUT_OF_SCOPE

DOCUMENT_TYPE = "knowledge"
WRITING_TYPE = "llm"
MEASURING_TYPE = "text_analysis"
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
    r"proofread|polish|simplify|shorten|tighten|soften|translate|brainstorm|come up with|think of|suggest (?:[\w-]+ ){0,3}?"
    r"(?:names?|titles?|taglines?|slogans?|headlines?|subject lines?|ideas?)|"
    r"turn (?:this|these|my|the)\b.*\binto|"
    r"make (?:this|these|my|the)\b.*\b(?:sound|more|less|shorter|longer|friendlier|clearer))\b",
    re.I)
# what a writing verb may take that is not prose: code, music, pictures
_CODE = re.compile(r"\b(?:functions?|scripts?|quer(?:y|ies)|code|programs?|class(?:es)?|"
                   r"unit tests?|migrations?|regex|regular expressions?|apis?|sql|python|"
                   r"java(?:script)?|typescript|rust|bash|html|css|documentation|melod(?:y|ies)|"
                   r"music|tunes?|images?|pictures?|photos?|logos?|drawings?|videos?|clips?|"
                   r"audio|recordings?|urls?|links?)\b", re.I)
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
    # a summary written for a reader: "... in two sentences for a non-technical reader"
    r"\b(?:summar\w*|sum (?:it |this |them )?up|condense|boil (?:it |this )?down)\b[^.?!]*\bfor\s+"
    r"(?:a|an|the|my|our|your)?\s*(?:[\w-]+\s+){0,2}(?:readers?|audiences?|lay ?(?:person|people|"
    r"men)|beginners?|newcomers?|kids|child(?:ren)?|executives?|customers?|clients?|non-experts?|"
    r"board|managers?|students?|(?:grand)?parents?|grandma|investors?|public|outsiders?)\b",
    r"\banswers?\s+(?:a\s+|the\s+|this\s+|my\s+)?questions?\s+(?:about|on|from|using)\s+"
    r"(?:this|these|the following|the attached|the)\s+(?:text|passage|email|letter|contract|"
    r"article|paragraph|document|report)\b",
)), re.I)
_CODING = re.compile(
    r"\s*(?:(?:please|can you|could you|help me)\s+)*(?:write|implement|code|create|build|"
    r"generate|fix|debug|refactor|optimi[sz]e)\s+(?:[\w'+#.-]+\s+){0,4}?(?:functions?|scripts?|"
    r"methods?|class(?:es)?|regex|regular expressions?|unit tests?|programs?|sql|quer(?:y|ies)|"
    r"migrations?|endpoints?|modules?|snippets?|code)\b", re.I)
# the labels a sentiment measurement gives: listed alone, they ask for text analysis
_SENTIMENT_LABELS = frozenset({"positive", "negative", "neutral", "very", "mostly", "sentiment"})
# "into praise, complaint or question", "as bug report, feature request or praise",
# "as 'billing', 'bug' or 'feature request'"
_LABEL = r"['\"“‘]?(?:[\w-]+\s+){0,2}[\w-]+['\"”’]?"
_LABELS = re.compile(rf"\b(?:into|as|with)\s+({_LABEL}\s*,\s*{_LABEL}\s*,?\s+(?:or|and)\s+{_LABEL})",
                     re.I)
_LABEL_WORD = re.compile(r"[\w-]+")

# a question, possibly after where its answer is to come from ("In this text, who ...")
_QUESTION = re.compile(
    r"^\W*(?:(?:in|from|according to|based on|given|per|using)\s+(?:only\s+)?[^,?]{0,40},\s*)?"
    r"(?:what|what's|whats|who|whom|whose|when|where|why|which|how|does|do|did|is|are|was|were|"
    r"can|could|should|would|will|has|have)\b|\?", re.I)
# what text analysis measures of a text, validation checks and communication delivers: a
# question about these is no question about what the text says
_MEASURING = re.compile(
    r"\b(?:sentiments?|tone|mood|emotions?|emotional|positive|negative|neutral|readab\w*|read|"
    r"reading|grade|level|counts?|words|sentences|characters|length|keywords?|key ?phrases?|"
    r"key points|topics?|themes?|similar\w*|paraphrases?|duplicates?|same|summar\w*|gist|"
    r"tl;?dr|statistics|stats|lexical|valid\w*|conform\w*|schema|format\w*|match(?:es)?|"
    r"deliver\w*|sent|inbox|sounds?|feel\w*|angry|happy|unhappy|upset|sad|frustrated|"
    r"satisfied|pleased|annoyed|polite|rude|hostile|friendly|sarcastic|excited|worried)\b", re.I)
# a passage given with the task, as `ml.semantic_router.instruction_text` leaves it
_PASSAGE = re.compile(r"\"text\"")
# "add these notes to the board-minutes collection", "upload this PDF to our knowledge base"
_FILING = re.compile(
    r"\s*(?:(?:please|can you|could you|kindly)\s+)*(?:add|put|store|save|upload|ingest|index|"
    r"import|file|archive)\b[^?]{0,150}?\b(?:to|into|in|under|onto)\s+(?:the\s+|our\s+|my\s+|"
    r"a\s+|an\s+)?(?:[\w'\"-]+\s+){0,3}?(?:collections?|knowledge ?base|wiki|docs|"
    r"documentation|document store)\b", re.I)
# changing running systems: deploying, restarting, installing, scaling, merging code
_OPERATIONS = re.compile(
    r"\s*(?:(?:please|can you|could you|go ahead and)\s+)*(?:deploy|redeploy|roll\s*back|"
    r"roll\s+out|restart|reboot|provision|install|uninstall|reinstall|upgrade|downgrade|"
    r"spin\s+(?:up|down)|tear\s+down|shut\s+down|scale\s+(?:up|down|out|in)|"
    r"scale\s+(?:the\s+)?(?:[\w-]+\s+){0,2}(?:services?|servers?|clusters?|deployments?|pods?|"
    r"nodes?|instances?)|merge\s+(?:[\w#-]+\s+){0,3}?(?:pull requests?|prs?|branch(?:es)?)|"
    r"push\s+(?:[\w#-]+\s+){0,3}?to\s+(?:main|master|origin|production|prod|staging)|"
    r"release\s+(?:[\w.-]+\s+){0,4}?to\s+(?:production|prod|staging))\b", re.I)
OPERATIONS_CATEGORIES = frozenset({"it_support", "programming"})


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
    """Whether `description` asks to sort texts into labels it lists ("into A, B or C"), but
    for the sentiment scale alone ("as positive, negative or neutral": measuring sentiment is
    text analysis; "positive, negative or mixed" is a label set of the request's own)."""
    found = _LABELS.search(description[:1000])
    if found is None:
        return False
    labels = {word.lower() for word in _LABEL_WORD.findall(found.group(1))} - {"or", "and"}
    return not labels <= _SENTIMENT_LABELS


def asks_about_given_text(description: str) -> bool:
    """Whether `description` asks a question about what a text given with it says ("what is
    the main argument of this passage?", "in this text, who signed?"), not about what text
    analysis measures of it (sentiment, readability, keywords, similarity, ...) nor whether it
    is valid or was delivered; a question about a stored document is `knowledge`'s."""
    return _asks_about(description, document_cues(description))


def _asks_about(description: str, cues: DocumentCues) -> bool:
    text = description[:1000]
    if cues.stored or _QUESTION.search(text) is None or _MEASURING.search(text) is not None:
        return False
    return cues.inline or _PASSAGE.search(text) is not None


def stores_documents(description: str) -> bool:
    """Whether `description` asks to add texts to a collection of documents ("add these notes to
    the board-minutes collection"): work for `knowledge`, whatever text it gives inline."""
    return _FILING.match(description[:1000]) is not None


def asks_for_operations(description: str) -> bool:
    """Whether `description` asks to change running systems ("deploy the api to production",
    "restart the pods", "merge my pull request"): no agent's work."""
    return _OPERATIONS.match(description[:1000]) is not None


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
    documents = document_cues(description)
    filing = DOCUMENT_TYPE in registered and stores_documents(description)
    writing = not filing and (asks_for_prose(description) or lists_labels(description)
                              or _asks_about(description, documents))
    unclaimed = set(unclaimed)
    if OPERATIONS_CATEGORIES <= unclaimed and asks_for_operations(description):
        # no registered type changes running systems (monitoring only reads their state)
        return {OUT_OF_SCOPE: weight, **{name: -weight for name in registered}}
    if (CODING_CATEGORY in unclaimed and asks_for_code(description)) or (
            writing and WRITING_TYPE not in registered and WRITING_CATEGORIES <= unclaimed):
        bonuses[OUT_OF_SCOPE] = weight
    direction = 1 if filing else documents.direction
    if DOCUMENT_TYPE in registered and direction:
        bonuses[DOCUMENT_TYPE] = weight * direction
    if WRITING_TYPE in registered and (writing or direction > 0):
        # a question about stored documents, not work on a given text
        bonuses[WRITING_TYPE] = weight if writing else -weight
    if MEASURING_TYPE in registered and (writing or filing):
        # new prose, labels of the request's own or the meaning of a text: not measurements
        bonuses[MEASURING_TYPE] = -weight
    return bonuses
