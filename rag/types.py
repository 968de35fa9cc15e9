"""Domain types passed through the library: all frozen dataclasses.

Offsets (``start``/``end``) are always character offsets into the *cleaned*
article text, so ``article.text[start:end]`` is the quoted span.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Article:
    """A cleaned news article, the unit that is stored, served and cited."""

    id: str
    title: str
    text: str
    url: str | None = None
    published_at: str | None = None
    source: str | None = None
    author: str | None = None
    origin: str | None = None  # file (and line) the article was read from

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Chunk:
    """A contiguous span of an article: ``text == article.text[start:end]``."""

    id: str
    doc_id: str
    position: int
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Passage:
    """A retrieved chunk with the metadata of its article and its fused score."""

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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Citation:
    """One cited span: ``quote`` is exactly ``article.text[start:end]``.

    ``support`` (in [0, 1]) says how well the span supports the answer sentence
    that cites it; a verbatim quote supports itself fully. ``supported`` is
    whether that reaches the threshold: a citation with ``supported=False`` is the
    closest span found for a sentence the sources do not back."""

    n: int
    doc_id: str
    title: str
    quote: str
    start: int
    end: int
    url: str | None = None
    published_at: str | None = None
    support: float = 1.0
    supported: bool = True

    def to_dict(self) -> dict[str, Any]:
        # The API's field order, so that `rag ask --json` prints the same object.
        return {
            "n": self.n,
            "doc_id": self.doc_id,
            "title": self.title,
            "url": self.url,
            "published_at": self.published_at,
            "quote": self.quote,
            "start": self.start,
            "end": self.end,
            "support": round(self.support, 4),
            "supported": self.supported,
        }


@dataclass(frozen=True)
class AnswerCheck:
    """How a generated answer's sentences fared against the passages.

    ``markers_corrected`` counts the model's ``[n]`` markers that pointed at a
    passage that does not exist or does not support the sentence, and were replaced."""

    sentences: int
    supported: int
    dropped: int = 0
    markers_corrected: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class GeneratedAnswer:
    """What a generator returns: answer text (None when it abstains) and its citations."""

    answer: str | None
    citations: tuple[Citation, ...] = ()
    reason: str | None = None
    check: AnswerCheck | None = None

    @property
    def abstained(self) -> bool:
        return self.answer is None


@dataclass(frozen=True)
class SearchFilters:
    """Optional restrictions on retrieval; dates are ISO strings compared as text."""

    sources: tuple[str, ...] = ()
    published_after: str | None = None
    published_before: str | None = None
    # The day the question is asked: later articles are left out and recent ones preferred.
    as_of: str | None = None

    def is_empty(self) -> bool:
        return not self.sources and not self.published_after and not self.published_before and not self.as_of


@dataclass(frozen=True)
class Answer:
    """The full result of a question, as served by the API and the CLI's ``--json``."""

    question: str
    answer: str | None
    reason: str | None
    citations: tuple[Citation, ...]
    passages: tuple[Passage, ...]
    generator: str
    timings_ms: dict[str, float] = field(default_factory=dict)
    check: AnswerCheck | None = None

    @property
    def abstained(self) -> bool:
        return self.answer is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "answer": self.answer,
            "abstained": self.abstained,
            "reason": self.reason,
            "citations": [c.to_dict() for c in self.citations],
            "passages": [p.to_dict() for p in self.passages],
            "generator": self.generator,
            "timings_ms": dict(self.timings_ms),
            "check": self.check.to_dict() if self.check else None,
        }
