"""Request bodies of the knowledge routes (`serve_apps.routes.knowledge`): strict, every field
bounded, checked before anything reaches the platform."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from serve_apps.schemas import StrictBody

COLLECTION_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"


class SearchBody(StrictBody):
    """A search of one of the caller's collections (`collection`: else the one `query` names,
    else `default`, else the tenant's only one). `where` matches document metadata."""

    query: str = Field(min_length=1, max_length=2000)
    collection: str | None = Field(default=None, pattern=COLLECTION_PATTERN)
    k: int = Field(default=5, ge=1, le=50)
    where: dict[str, Any] | None = None


class AnswerBody(StrictBody):
    """A question answered from one of the caller's collections with citations; `mode`
    grounded asks the language model (when one is configured; `auto` does when it is)."""

    question: str = Field(min_length=1, max_length=2000)
    collection: str | None = Field(default=None, pattern=COLLECTION_PATTERN)
    k: int = Field(default=3, ge=1, le=10)
    mode: Literal["auto", "extractive", "grounded"] = "auto"
    where: dict[str, Any] | None = None
