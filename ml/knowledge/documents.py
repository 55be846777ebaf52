"""The text of a document: plain text, Markdown, HTML or PDF, within size limits.

Guarantees of `extract`:
- The media type comes from `media_type` when given (parameters such as `; charset=` are
  ignored), else from the name's extension; anything else is `InvalidRequest` naming the
  document and the types accepted.
- Plain text and Markdown are decoded as UTF-8 (a byte-order mark is dropped) and kept as they
  are, Markdown headings and all; only line endings become `\\n`.
- HTML gives its visible text: `script`, `style`, `noscript`, `template` and `head` contents
  are dropped, block elements end lines, entities are decoded.
- A PDF gives the text of its pages, separated by blank lines. An encrypted, corrupt or
  textless PDF is `InvalidRequest` naming the document, and nothing partial is returned.
- Content over `max_bytes`, text over `max_chars`, a PDF over `max_pdf_pages`, or a document
  with no text at all is `InvalidRequest` naming the document; nothing is returned.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import warnings
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import PurePath

from storage.errors import InvalidRequest

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_CHARS = 2_000_000
DEFAULT_MAX_PDF_PAGES = 1000

TEXT, MARKDOWN, HTML, PDF = "text/plain", "text/markdown", "text/html", "application/pdf"
MEDIA_TYPES = (TEXT, MARKDOWN, HTML, PDF)
EXTENSIONS = {".txt": TEXT, ".text": TEXT, ".md": MARKDOWN, ".markdown": MARKDOWN,
              ".html": HTML, ".htm": HTML, ".pdf": PDF}
_ALIASES = {"text/x-markdown": MARKDOWN, "application/xhtml+xml": HTML,
            "application/x-pdf": PDF}

_HIDDEN = frozenset({"script", "style", "noscript", "template", "head", "svg"})
_BLOCKS = frozenset({
    "p", "div", "br", "li", "ul", "ol", "tr", "table", "section", "article", "header",
    "footer", "nav", "aside", "main", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote",
    "dt", "dd", "figcaption", "hr", "title", "td", "th",
})
_SPACES = re.compile(r"[ \t\f\v\u00a0]+")
_BLANK_RUNS = re.compile(r"\n{3,}")


@dataclass(frozen=True)
class ExtractedDocument:
    """A document's text with what identifies its content: the SHA-256 and size of the bytes."""

    name: str
    media_type: str
    text: str
    sha256: str
    size_bytes: int


def media_type_of(name: str, media_type: str | None = None) -> str:
    """The media type of a document named `name`, `media_type` when given."""
    if media_type:
        declared = media_type.split(";", 1)[0].strip().lower()
        declared = _ALIASES.get(declared, declared)
        if declared in MEDIA_TYPES:
            return declared
        raise InvalidRequest(f"document {name!r}: media type {media_type!r} is not one of "
                             f"{', '.join(MEDIA_TYPES)}", {"document": name,
                                                           "media_type": media_type})
    suffix = PurePath(name).suffix.lower()
    if suffix in EXTENSIONS:
        return EXTENSIONS[suffix]
    raise InvalidRequest(f"document {name!r}: cannot tell its type from the name; use one of "
                         f"{', '.join(sorted(EXTENSIONS))} or give a media type",
                         {"document": name})


def extract(name: str, content: bytes, media_type: str | None = None, *,
            max_bytes: int = DEFAULT_MAX_BYTES, max_chars: int = DEFAULT_MAX_CHARS,
            max_pdf_pages: int = DEFAULT_MAX_PDF_PAGES) -> ExtractedDocument:
    """The text of the document `name` with bytes `content`; see the module's guarantees."""
    kind = media_type_of(name, media_type)
    if len(content) > max_bytes:
        raise InvalidRequest(f"document {name!r} is {len(content)} bytes; the limit is "
                             f"{max_bytes}", {"document": name, "size_bytes": len(content),
                                              "max_bytes": max_bytes})
    if kind == PDF:
        text = pdf_text(name, content, max_pages=max_pdf_pages)
    else:
        text = _decode(name, content)
        if kind == HTML:
            text = html_text(text)
    if not text.strip():
        raise InvalidRequest(f"document {name!r} has no text", {"document": name})
    if len(text) > max_chars:
        raise InvalidRequest(f"document {name!r} has {len(text)} characters of text; the "
                             f"limit is {max_chars}", {"document": name,
                                                       "max_chars": max_chars})
    return ExtractedDocument(name, kind, text, hashlib.sha256(content).hexdigest(),
                             len(content))


def _decode(name: str, content: bytes) -> str:
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"document {name!r} is not UTF-8 text (byte {exc.start} is "
                             "invalid)", {"document": name}) from exc
    return text.replace("\r\n", "\n").replace("\r", "\n")


class _VisibleText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self.hidden_depth += 1
        elif tag in _BLOCKS:
            self.parts.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self.hidden_depth = max(0, self.hidden_depth - 1)
        elif tag in _BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.hidden_depth:
            self.parts.append(data)


def html_text(markup: str) -> str:
    """The visible text of an HTML page: one line per block, spaces collapsed."""
    parser = _VisibleText()
    parser.feed(markup)
    parser.close()
    lines = (_SPACES.sub(" ", line).strip() for line in "".join(parser.parts).split("\n"))
    text = "\n".join(line if line else "" for line in lines)
    return _BLANK_RUNS.sub("\n\n", text).strip()


def pdf_text(name: str, content: bytes, *, max_pages: int = DEFAULT_MAX_PDF_PAGES) -> str:
    """The text of a PDF's pages, separated by blank lines; `InvalidRequest` naming `name` when
    it is encrypted, corrupt, too long or has no extractable text."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    pypdf_logger = logging.getLogger("pypdf")
    level = pypdf_logger.level
    pypdf_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reader = PdfReader(io.BytesIO(content), strict=False)
            if reader.is_encrypted:
                raise InvalidRequest(f"document {name!r} is an encrypted PDF; upload it "
                                     "without a password", {"document": name})
            if len(reader.pages) > max_pages:
                raise InvalidRequest(f"document {name!r} has {len(reader.pages)} pages; the "
                                     f"limit is {max_pages}", {"document": name})
            pages = [page.extract_text() or "" for page in reader.pages]
    except InvalidRequest:
        raise
    except (PyPdfError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            RecursionError, OSError, AssertionError) as exc:
        raise InvalidRequest(f"document {name!r} is not a readable PDF: "
                             f"{type(exc).__name__}: {exc}", {"document": name}) from exc
    finally:
        pypdf_logger.setLevel(level)
    text = "\n\n".join(page.replace("\r\n", "\n").strip() for page in pages)
    if not text.strip():
        raise InvalidRequest(f"document {name!r} is a PDF with no extractable text (a scan "
                             "needs OCR first)", {"document": name})
    return text
