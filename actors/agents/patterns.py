"""User-supplied regular expressions, run on RE2 (the `google-re2` package).

Guarantees: every pattern a task supplies (a JSON Schema `pattern`, `patternProperties` or
`format: regex`, a quality rule's `regex`) is compiled here and nowhere else, by RE2, whose
matching time is linear in the text whatever the pattern: no pattern can hold a replica for
seconds (the backtracking blow-ups of `(a+)+$` or `(a|a)*$` cannot happen). RE2 has no
backreferences and no lookaround; a pattern that uses them, or that is not a regular
expression at all, is `InvalidTaskInput` naming the field where the task gave it. Compiled
programs are bounded in memory (`MAX_PROGRAM_BYTES`), so a pattern like `a{1000}{1000}` is
refused rather than built.
"""

from __future__ import annotations

import re
from typing import Any

import re2

from actors.errors import InvalidTaskInput

MAX_PROGRAM_BYTES = 8 << 20
MAX_SHOWN_CHARS = 80
_SURROGATE = re.compile("[\ud800-\udfff]")  # a fixed pattern: safe on Python's engine


class CompiledPattern:
    """A pattern compiled by RE2. JSON text may hold lone surrogates, which UTF-8 (RE2's text)
    cannot carry: `search` sees each of them as U+FFFD instead of failing."""

    def __init__(self, compiled: Any) -> None:
        self._compiled = compiled
        self.pattern: str = compiled.pattern

    def search(self, text: str) -> Any:
        try:
            return self._compiled.search(text)
        except UnicodeEncodeError:
            return self._compiled.search(_SURROGATE.sub("\ufffd", text))


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False  # the error is the task's, reported to it, not logged to stderr
    options.max_mem = MAX_PROGRAM_BYTES
    return options


def _reason(pattern: str, error: re2.error) -> str:
    """Why RE2 refused `pattern`, in the words a user knows."""
    detail = error.args[0] if error.args else ""
    detail = detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)
    escaped = detail.rsplit("invalid escape sequence: \\", 1)[-1][:1] if (
        "invalid escape sequence: \\" in detail) else ""
    if "(?P=" in pattern or escaped.isdigit() or escaped == "k":
        return (f"uses a backreference ({detail}); patterns run on RE2, a linear-time engine "
                "without backreferences or lookaround")
    if any(f"invalid perl operator: {op}" in detail for op in ("(?=", "(?!", "(?<")):
        return (f"uses lookaround ({detail}); patterns run on RE2, a linear-time engine "
                "without backreferences or lookaround")
    if "too large" in detail or "bad repetition" in detail:
        return f"is too large to run ({detail}); repeat less"
    return f"is not a valid regular expression ({detail})"


def shown(pattern: str) -> str:
    """The pattern as an error message quotes it: clipped to `MAX_SHOWN_CHARS`."""
    text = repr(pattern)
    return text if len(text) <= MAX_SHOWN_CHARS else text[:MAX_SHOWN_CHARS - 3] + "..."


def compile_pattern(pattern: Any, field: str) -> CompiledPattern:
    """`pattern` compiled by RE2, or `InvalidTaskInput` naming `field` (for example
    `schema.properties.code.pattern` or `rules[2].regex`)."""
    if not isinstance(pattern, str):
        raise InvalidTaskInput(f"{field} must be a regular expression (text), got "
                               f"{type(pattern).__name__}", {"field": field})
    try:
        return CompiledPattern(re2.compile(pattern, options=_options()))
    except re2.error as exc:
        raise InvalidTaskInput(f"{field}: the pattern {shown(pattern)} {_reason(pattern, exc)}",
                               {"field": field, "pattern": pattern[:500]}) from None
    except UnicodeEncodeError:
        raise InvalidTaskInput(f"{field}: the pattern {shown(pattern)} holds a lone surrogate "
                               "(\\ud800-\\udfff), which is not a character",
                               {"field": field}) from None


def is_pattern(text: str) -> bool:
    """Whether RE2 takes `text` as a pattern (what `format: regex` asserts here)."""
    try:
        re2.compile(text, options=_options())
    except (re2.error, UnicodeEncodeError):
        return False
    return True
