"""The generator protocol.

A generator turns a question and the retrieved passages into a
:class:`~rag.types.GeneratedAnswer` whose citations quote exact spans of the
passages' articles. Generators are found by name in the ``rag.generators``
entry-point group; each entry point names a callable (usually the class) that
takes a :class:`GeneratorContext` and returns a :class:`Generator`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from rag.config import Settings
from rag.embedding import Embedder
from rag.types import Citation, GeneratedAnswer, Passage


@dataclass(frozen=True)
class GeneratorContext:
    """What the pipeline hands a generator when it is created."""

    embedder: Embedder
    max_answer_sentences: int = 3
    min_support: float = 0.40
    answer_candidates: int = 8  # sentences the extractive generator embeds per answer; 0: all
    settings: Settings | None = None  # everything else; LLM generators need it


@runtime_checkable
class Generator(Protocol):
    name: str

    def generate(self, question: str, passages: Sequence[Passage]) -> GeneratedAnswer:
        """Answer ``question`` from ``passages`` (best first), or abstain with a reason."""
        ...

    def stream(self, question: str, passages: Sequence[Passage]) -> Iterator[str | GeneratedAnswer]:
        """Yield pieces of answer text as they are produced, then the final answer."""
        ...


class BaseGenerator:
    """Convenience base: ``stream`` yields the finished answer's text, then the answer."""

    name = "base"

    def generate(self, question: str, passages: Sequence[Passage]) -> GeneratedAnswer:
        raise NotImplementedError

    def stream(self, question: str, passages: Sequence[Passage]) -> Iterator[str | GeneratedAnswer]:
        answer = self.generate(question, passages)
        if answer.answer:
            yield answer.answer
        yield answer


def cite(n: int, passage: Passage, start: int, end: int) -> Citation:
    """A citation of ``passage.text[start:end]`` with offsets moved into the article."""
    if not 0 <= start < end <= len(passage.text):
        raise ValueError(f"span {start}:{end} is outside the passage")
    return Citation(
        n=n,
        doc_id=passage.doc_id,
        title=passage.title,
        quote=passage.text[start:end],
        start=passage.start + start,
        end=passage.start + end,
        url=passage.url,
        published_at=passage.published_at,
    )


def abstain(reason: str) -> GeneratedAnswer:
    return GeneratedAnswer(answer=None, citations=(), reason=reason)
