"""Request and response models of the HTTP API (the library passes dataclasses)."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

_DATE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?")


class Filters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sources: list[str] = Field(default_factory=list, max_length=100, description="Article sources to keep.")
    published_after: str | None = Field(None, description="ISO date: keep articles published on/after it.")
    published_before: str | None = Field(None, description="ISO date: keep articles published on/before it.")

    @field_validator("published_after", "published_before")
    @classmethod
    def _iso_date(cls, value: str | None) -> str | None:
        if value is not None and not _DATE.match(value):
            raise ValueError("must be an ISO date such as 2024-05-31")
        return value


class AskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The length limit is RAG_MAX_QUESTION_CHARS, checked by the pipeline (422 past it).
    question: str = Field(..., min_length=1, examples=["Which lenders did Xiaomi partner with?"])
    k: int | None = Field(None, ge=1, le=100, description="Passages to retrieve.")
    generator: str | None = Field(
        None, min_length=1, max_length=100, description="Generator name; see GET /generators."
    )
    filters: Filters | None = None


class CitationOut(BaseModel):
    n: int
    doc_id: str
    title: str
    url: str | None
    published_at: str | None
    quote: str = Field(description="Exactly text[start:end] of the document.")
    start: int
    end: int


class PassageOut(BaseModel):
    chunk_id: str
    doc_id: str
    title: str
    text: str
    start: int
    end: int
    score: float
    url: str | None = None
    published_at: str | None = None
    source: str | None = None


class AskResponse(BaseModel):
    question: str
    answer: str | None
    abstained: bool
    reason: str | None
    citations: list[CitationOut]
    passages: list[PassageOut]
    generator: str
    timings_ms: dict[str, float]


class SearchResponse(BaseModel):
    results: list[PassageOut]


class DocumentSummary(BaseModel):
    id: str
    title: str
    url: str | None
    published_at: str | None
    source: str | None


class DocumentOut(DocumentSummary):
    text: str = Field(description="The cleaned article text that citation offsets point into.")


class DocumentPage(BaseModel):
    total: int
    offset: int
    limit: int
    documents: list[DocumentSummary]


class GeneratorOut(BaseModel):
    name: str
    target: str


class GeneratorList(BaseModel):
    default: str
    generators: list[GeneratorOut]


class Health(BaseModel):
    status: str
    index: bool
    documents: int | None = None
    chunks: int | None = None
    generation: str | None = None


class ErrorOut(BaseModel):
    detail: str
