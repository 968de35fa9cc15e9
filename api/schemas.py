"""Request and response models of the HTTP API (the library passes dataclasses)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_DATE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class Filters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sources: list[str] = Field(default_factory=list, max_length=100, description="Article sources to keep.")
    published_after: str | None = Field(None, description="ISO date: keep articles published on/after it.")
    published_before: str | None = Field(None, description="ISO date: keep articles published on/before it.")
    as_of: str | None = Field(
        None,
        description="ISO day the question is asked on: later articles are left out, recent ones preferred.",
    )

    @field_validator("published_after", "published_before")
    @classmethod
    def _iso_date(cls, value: str | None) -> str | None:
        if value is not None and not _DATE.match(value):
            raise ValueError("must be an ISO date such as 2024-05-31")
        return value

    @field_validator("as_of")
    @classmethod
    def _iso_day(cls, value: str | None) -> str | None:
        if value is not None and not _DAY.match(value):
            raise ValueError("must be an ISO day such as 2024-05-31")
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
    support: float = Field(description="How well the quote supports the sentence that cites it, in [0, 1].")
    supported: bool = Field(description="Whether that support reaches the threshold.")


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


class CheckOut(BaseModel):
    """How a language model's answer fared against the passages (null for extractive answers)."""

    sentences: int = Field(description="Sentences in the model's answer.")
    supported: int = Field(description="Sentences the passages support.")
    dropped: int = Field(description="Unsupported sentences removed from the answer.")
    markers_corrected: int = Field(description="[n] markers that pointed at the wrong passage and were replaced.")


class AskResponse(BaseModel):
    question: str
    answer: str | None
    abstained: bool
    reason: str | None
    citations: list[CitationOut]
    passages: list[PassageOut]
    generator: str
    timings_ms: dict[str, float]
    check: CheckOut | None


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


class DocumentIn(BaseModel):
    """An article to store: the fields of a line of a ``.jsonl`` ingest file."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, max_length=1000, description="Document id; default: derived from the content.")
    title: str | None = Field(None, max_length=10_000)
    text: str = Field(description="The article text; it is cleaned before it is stored.")
    url: str | None = Field(None, max_length=10_000)
    published_at: str | None = Field(None, max_length=100, description="ISO date or date-time.")
    source: str | None = Field(None, max_length=1000)
    author: str | None = Field(None, max_length=1000)


class DocumentsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    documents: list[DocumentIn] = Field(min_length=1, max_length=10_000)


class ProblemOut(BaseModel):
    where: str = Field(description="The record or file (and line) that was skipped.")
    message: str


class WriteResult(BaseModel):
    """What a write did, and the index it left."""

    ids: list[str] = Field(description="The ids of the documents in the request that are now stored, in order.")
    added: list[str]
    updated: list[str]
    unchanged: list[str]
    deleted: list[str]
    problems: list[ProblemOut]
    chunks_embedded: int
    documents: int = Field(description="Documents in the index after the write.")
    chunks: int
    generation: str | None


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


class Ready(BaseModel):
    ready: bool
    generation: str | None = None
    documents: int
    chunks: int


class NotReady(BaseModel):
    ready: bool
    detail: str


# -- the OpenAI-compatible endpoint (/v1) ----------------------------------------------------


class ContentPart(BaseModel):
    """One part of a message's content; only ``{"type": "text", "text": ...}`` parts are understood."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=["text"])
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool_calls, ...

    role: str = Field(examples=["user"])
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        """The content as plain text, text parts joined by newlines; ValueError for other parts."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        other = sorted({part.type for part in self.content if part.type != "text" or part.text is None})
        if other:
            raise ValueError(f"only text content parts are understood, not {', '.join(map(repr, other))}")
        return "\n".join(part.text or "" for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """An OpenAI chat completion request. The last user message is the question and ``model``
    names the generator; other OpenAI fields (temperature, max_tokens, top_p, n, stop, user, ...)
    are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, examples=["extractive"], description="Generator name; see GET /v1/models.")
    messages: list[ChatMessage]
    stream: bool = False
    stream_options: StreamOptions | None = None


class ModelOut(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelOut]


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChoiceOut(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str
    logprobs: None = None


class UsageOut(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletionOut(BaseModel):
    """An OpenAI ``chat.completion`` plus two fields of this service: ``citations`` (as in
    POST /ask) and ``rag``, the whole POST /ask response."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChoiceOut]
    usage: UsageOut
    citations: list[CitationOut]
    rag: AskResponse


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorOut(BaseModel):
    error: OpenAIErrorDetail
