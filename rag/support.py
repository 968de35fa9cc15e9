"""How well a piece of text is supported by a sentence of the retrieved passages.

Support mixes two signals, both in [0, 1]: the cosine similarity of the two
texts' embeddings, and the share of the first text's content words (stemmed,
stop words and question words removed) that the sentence contains. The
extractive generator scores sentences against the question with it; the
citation checker scores sentences against each sentence of an LLM's answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rag.embedding import Embedder
from rag.lexical import tokenize
from rag.sentences import split_sentences
from rag.types import Passage

# Stems of words that ask rather than inform; they say nothing about the answer.
_QUESTION_STEMS = {
    "which", "what", "who", "whom", "whose", "when", "where", "why", "how", "much", "mani",
    "name", "tell", "accord", "articl", "report", "news", "mention", "say", "said",
    "describ", "explain", "list", "give", "kind", "type", "happen", "doe", "did", "do",
}
SEMANTIC_WEIGHT = 0.65


@dataclass(frozen=True)
class SourceSentence:
    """A sentence of a retrieved passage; offsets are within the passage text."""

    passage: int  # index into the passages
    number: int  # position of the sentence within its passage
    start: int
    end: int
    text: str
    doc_id: str = ""
    doc_start: int = -1  # offset in the article
    prev_doc_start: int | None = None  # article offset of the sentence before it, if the passage holds it

    def follows(self, other: SourceSentence) -> bool:
        """Whether this sentence comes right after ``other`` in their article."""
        return (self.doc_id == other.doc_id and self.prev_doc_start is not None
                and self.prev_doc_start == other.doc_start)


def content_terms(text: str) -> set[str]:
    return set(tokenize([text])[0]) - _QUESTION_STEMS if text.strip() else set()


def passage_sentences(passages: Sequence[Passage]) -> list[SourceSentence]:
    """Sentences of the passages in order; a sentence that overlapping passages share
    is kept once, in the passage ranked higher."""
    out: list[SourceSentence] = []
    seen: set[tuple[str, int]] = set()
    for i, passage in enumerate(passages):
        previous: int | None = None
        for number, (start, end) in enumerate(split_sentences(passage.text)):
            key = (passage.doc_id, passage.start + start)
            if key not in seen:
                seen.add(key)
                out.append(SourceSentence(i, number, start, end, passage.text[start:end],
                                          passage.doc_id, passage.start + start, previous))
            previous = passage.start + start
    return out


def support_matrix(
    embedder: Embedder, texts: Sequence[str], sources: Sequence[str], semantic_weight: float = SEMANTIC_WEIGHT
) -> np.ndarray:
    """``scores[i, j]``: how well ``sources[j]`` supports ``texts[i]``, in [0, 1]:
    ``semantic_weight`` times the cosine similarity plus the rest times the share of
    the content words of ``texts[i]`` found in ``sources[j]``."""
    if not texts or not sources:
        return np.zeros((len(texts), len(sources)))
    vectors = embedder.embed_sentences([*texts, *sources])
    return _mix(vectors[: len(texts)] @ vectors[len(texts):].T, texts, sources, semantic_weight)


def question_support(embedder: Embedder, question: str, sources: Sequence[str]) -> np.ndarray:
    """``support_matrix(embedder, [question], sources)[0]``, with the question embedded as a
    query: when retrieval has just embedded it, the pipeline hands that vector on
    (:meth:`Embedder.given_queries`) and only the sources are embedded here."""
    if not sources:
        return np.zeros(0)
    semantic = embedder.embed_sentences(sources) @ embedder.embed_query(question)
    return _mix(semantic[None, :], [question], sources, SEMANTIC_WEIGHT)[0]


def _mix(cosine: np.ndarray, texts: Sequence[str], sources: Sequence[str], semantic_weight: float) -> np.ndarray:
    """The support scores from the texts' cosine similarities to the sources (see :func:`support_matrix`)."""
    semantic = np.clip(cosine, 0.0, 1.0)
    source_terms = [content_terms(s) for s in sources]
    scores = np.empty_like(semantic)
    for i, text in enumerate(texts):
        terms = content_terms(text)
        if not terms:
            scores[i] = semantic[i]
            continue
        coverage = np.array([len(terms & st) / len(terms) for st in source_terms])
        scores[i] = semantic_weight * semantic[i] + (1 - semantic_weight) * coverage
    return scores
