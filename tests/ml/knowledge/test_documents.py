"""Text from documents: types by name or media type, visible HTML text, PDFs read or refused
with a clear error, size limits."""

from __future__ import annotations

import io

import pytest
from pypdf import PdfWriter
from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

from ml.knowledge.documents import extract, media_type_of
from storage.errors import InvalidRequest


def pdf_with_text(*lines: str) -> bytes:
    """A real one-page PDF whose page shows `lines` in Helvetica."""
    writer = PdfWriter()
    page = writer.add_blank_page(width=612, height=792)
    font = DictionaryObject({NameObject("/Type"): NameObject("/Font"),
                             NameObject("/Subtype"): NameObject("/Type1"),
                             NameObject("/BaseFont"): NameObject("/Helvetica")})
    page[NameObject("/Resources")] = DictionaryObject({NameObject("/Font"): DictionaryObject(
        {NameObject("/F1"): writer._add_object(font)})})
    body = " ".join(f"BT /F1 12 Tf 72 {720 - 20 * i} Td ({line}) Tj ET"
                    for i, line in enumerate(lines))
    stream = DecodedStreamObject()
    stream.set_data(body.encode())
    page[NameObject("/Contents")] = writer._add_object(stream)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def test_markdown_is_kept_as_written_with_its_headings() -> None:
    source = "# Refunds\r\n\r\nWithin **30 days**.\r\n"
    document = extract("refunds.md", source.encode("utf-8-sig"))
    assert document.media_type == "text/markdown"
    assert document.text == "# Refunds\n\nWithin **30 days**.\n"
    assert document.size_bytes == len(source.encode("utf-8-sig"))
    assert len(document.sha256) == 64


def test_html_gives_only_the_visible_text() -> None:
    page = ("<html><head><title>Hidden title</title><style>p{color:red}</style></head><body>"
            "<script>alert('x')</script><h1>Shipping</h1><p>Free above 50&nbsp;&euro;.</p>"
            "<ul><li>Express</li><li>Standard</li></ul><noscript>no js</noscript></body></html>")
    document = extract("page.html", page.encode())
    assert document.text == "Shipping\n\nFree above 50 €.\n\nExpress\n\nStandard"
    for hidden in ("alert", "color", "Hidden title", "no js"):
        assert hidden not in document.text


def test_the_declared_media_type_wins_over_the_name() -> None:
    assert media_type_of("notes", "text/markdown; charset=utf-8") == "text/markdown"
    assert extract("upload.bin", b"<p>hi there</p>", "text/html").text == "hi there"


def test_an_unknown_type_is_refused_naming_the_document() -> None:
    with pytest.raises(InvalidRequest, match="report.docx"):
        extract("report.docx", b"PK...")
    with pytest.raises(InvalidRequest, match="image/png"):
        extract("scan", b"...", "image/png")


def test_a_real_pdf_gives_the_text_of_its_page() -> None:
    document = extract("policy.pdf", pdf_with_text("Refunds take 14 days.", "Call support."))
    assert document.media_type == "application/pdf"
    assert "Refunds take 14 days." in document.text and "Call support." in document.text


@pytest.mark.parametrize("content", [b"%PDF-1.7\n1 0 obj << /Type /Catalog", b"not a pdf at all",
                                     b""], ids=["truncated", "garbage", "empty"])
def test_a_corrupt_pdf_is_refused_naming_it(content: bytes) -> None:
    with pytest.raises(InvalidRequest) as refused:
        extract("broken.pdf", content)
    assert "broken.pdf" in str(refused.value)
    assert refused.value.details == {"document": "broken.pdf"}


def test_half_of_a_real_pdf_is_refused() -> None:
    whole = pdf_with_text("Refunds take 14 days.")
    with pytest.raises(InvalidRequest, match="half.pdf"):
        extract("half.pdf", whole[: len(whole) // 2])


def test_an_encrypted_pdf_is_refused_with_the_reason() -> None:
    writer = PdfWriter(clone_from=io.BytesIO(pdf_with_text("secret")))
    writer.encrypt("s3cret")
    buffer = io.BytesIO()
    writer.write(buffer)
    with pytest.raises(InvalidRequest, match="locked.pdf.*encrypted"):
        extract("locked.pdf", buffer.getvalue())


def test_size_limits_are_parameters_and_refusals_say_the_limit() -> None:
    with pytest.raises(InvalidRequest, match="the limit is 10") as refused:
        extract("big.txt", b"x" * 11, max_bytes=10)
    assert refused.value.details["size_bytes"] == 11
    with pytest.raises(InvalidRequest, match="characters of text; the limit is 5"):
        extract("long.txt", b"abcdef", max_chars=5)


def test_text_that_is_not_utf8_or_is_blank_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="not UTF-8"):
        extract("latin.txt", "café".encode("latin-1"))
    with pytest.raises(InvalidRequest, match="has no text"):
        extract("blank.md", b"  \n\n ")
