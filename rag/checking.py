"""Checking an LLM's answer against the passages it was given.

A language model's ``[n]`` markers are claims about where its sentences come
from, not facts. :func:`check_answer` takes the raw answer and, for every
sentence in it, finds the span of the passages that best supports it (a
sentence, or two neighbouring ones, scored with :mod:`rag.support`). That span
becomes the sentence's citation, quoted exactly with its article offsets and
its support score. A marker that points at a passage that does not exist, or at
one whose best span is clearly worse than the best span overall, is replaced
(and counted). Sentences below the support threshold are dropped or kept with
``supported=False``; an answer with no supported sentence becomes a refusal.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from rag.embedding import Embedder
from rag.generators.base import abstain, cite
from rag.sentences import split_sentences
from rag.support import SourceSentence, content_terms, passage_sentences, support_matrix
from rag.types import AnswerCheck, Citation, GeneratedAnswer, Passage

# [1], [1, 3], [1][2], [Passage 2], [Source 2]: what models write to cite passage numbers.
_MARKER = re.compile(r"\[\s*(?:passage|source|doc(?:ument)?)?\s*(\d+(?:\s*[,;]\s*\d+)*)\s*\]", re.IGNORECASE)
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,;:!?])")
_LEADING_LIST = re.compile(r"^\s*(?:[-*•]+|\d+[.)])\s+")
# What a model writes when the passages do not answer the question.
_REFUSAL = re.compile(
    r"insufficient information|not enough information|no information|cannot (?:be )?(?:answer|determin)"
    r"|can't (?:answer|determin)|(?:do|does) not (?:contain|mention|provide|say|specify|include)"
    r"|(?:is|are) not (?:mentioned|provided|stated|specified|given|available)"
    r"|i (?:do not|don't) know|unable to (?:answer|find|determine)",
    re.IGNORECASE,
)
# A name or a number: a capitalised word or a figure.
_NAME = re.compile(r"^[\"'“‘(]?(?:[A-Z][\w'’.-]*|\d[\d,.%]*)")
# A claim restates its source, so its words weigh as much as its meaning (a question, in
# the extractive generator, shares fewer words with its answer).
_CLAIM_SEMANTIC_WEIGHT = 0.5
# A marker is kept when its passage's best span is this close to the best span overall.
_MARKER_TOLERANCE = 0.05


@dataclass(frozen=True)
class AnswerSentence:
    """A sentence of the model's answer with the passage numbers its markers named."""

    text: str
    markers: tuple[int, ...]


@dataclass(frozen=True)
class _Span:
    passage: int
    start: int  # within the passage text
    end: int
    text: str


def parse_answer(raw: str) -> list[AnswerSentence]:
    """Split a model's answer into sentences and the ``[n]`` markers each carries.

    Markers written after a sentence's full stop ("... rose. [2] Then ...") belong
    to that sentence, not the next one. Sentences with no content words (a line
    of markers alone, "It is.") are left out."""
    out: list[AnswerSentence] = []
    for start, end in split_sentences(raw):
        piece = raw[start:end]
        leading = re.match(r"^(?:\s*" + _MARKER.pattern + r")+", piece, re.IGNORECASE)
        if leading and out:
            last = out[-1]
            out[-1] = AnswerSentence(last.text, last.markers + _numbers(leading.group(0)))
            piece = piece[leading.end():]
        markers = _numbers(piece)
        text = _LEADING_LIST.sub("", _SPACE_BEFORE_PUNCT.sub(r"\1", _MARKER.sub(" ", piece)))
        text = " ".join(text.split())
        if content_terms(text):
            out.append(AnswerSentence(text, markers))
    return out


def _numbers(text: str) -> tuple[int, ...]:
    return tuple(int(n) for group in _MARKER.findall(text) for n in re.split(r"[,;]", group))


def is_refusal(sentence: str) -> bool:
    return bool(_REFUSAL.search(sentence))


def check_answer(
    raw: str,
    passages: Sequence[Passage],
    embedder: Embedder,
    min_support: float,
    unsupported: Literal["drop", "flag"] = "drop",
) -> GeneratedAnswer:
    """The checked form of the model's answer ``raw`` to a question over ``passages``
    (numbered from 1 in the prompt)."""
    sentences = parse_answer(raw)
    claims, seen = [], set()
    for sentence in sentences:  # small models loop; a repeated sentence is said once
        said = sentence.text.lower()
        if not is_refusal(sentence.text) and said not in seen:
            seen.add(said)
            claims.append(sentence)
    if not claims:
        if sentences:
            return abstain("the model found no answer in the retrieved passages")
        return abstain("the model returned no answer")
    spans = _candidate_spans(passage_sentences(passages))
    if not spans:
        return abstain("no passages were retrieved, so the corpus holds no answer")
    scores = support_matrix(embedder, [c.text for c in claims], [s.text for s in spans], _CLAIM_SEMANTIC_WEIGHT)
    scores *= _names_found(claims, spans)

    citations: dict[tuple[int, int, int, bool], Citation] = {}
    parts: list[str] = []
    supported = dropped = corrected = 0
    for i, claim in enumerate(claims):
        choice, was_corrected = _choose_span(scores[i], claim.markers, spans, len(passages))
        corrected += was_corrected
        score = float(scores[i, choice])
        ok = score >= min_support
        supported += ok
        if not ok and unsupported == "drop":
            dropped += 1
            continue
        span = spans[choice]
        key = (span.passage, span.start, span.end, ok)
        if key not in citations:
            base = cite(len(citations) + 1, passages[span.passage], span.start, span.end)
            citations[key] = replace(base, support=round(score, 4), supported=ok)
        parts.append(f"{claim.text} [{citations[key].n}]")

    check = AnswerCheck(len(claims), supported, dropped, corrected)
    if not supported:
        best = float(scores.max())
        return GeneratedAnswer(
            None, (),
            "the model's answer is not supported by the retrieved passages: its best-supported sentence "
            f"scores {best:.2f}, below the threshold {min_support:.2f}",
            check,
        )
    return GeneratedAnswer(" ".join(parts), tuple(citations.values()), None, check)


def _names_found(claims: Sequence[AnswerSentence], spans: Sequence[_Span]) -> np.ndarray:
    """``found[i, j]``: the squared share of the names and numbers in claim ``i`` that
    span ``j`` contains (1 when the claim has none). Similar wording with a different name in
    it ("Some of them were Movistar, ...") must not pass as support."""
    span_terms = [content_terms(s.text) for s in spans]
    found = np.ones((len(claims), len(spans)))
    for i, claim in enumerate(claims):
        words = claim.text.split()
        names = " ".join(w for w in words if _NAME.match(w))  # a capitalised stop word drops out below
        terms = content_terms(names) if names else set()
        if terms:
            # squared: one wrong name in three must sink the score, not trim a third off it
            found[i] = [(len(terms & st) / len(terms)) ** 2 for st in span_terms]
    return found


def _candidate_spans(sentences: Sequence[SourceSentence]) -> list[_Span]:
    """Every sentence, and every two neighbouring sentences of one passage (a claim
    often joins a sentence with the one that completes it)."""
    spans = [_Span(s.passage, s.start, s.end, s.text) for s in sentences]
    for prev, cur in itertools.pairwise(sentences):
        if prev.passage == cur.passage and cur.number == prev.number + 1:
            spans.append(_Span(prev.passage, prev.start, cur.end, f"{prev.text} {cur.text}"))
    return spans


def _choose_span(
    scores: np.ndarray, markers: tuple[int, ...], spans: Sequence[_Span], n_passages: int
) -> tuple[int, bool]:
    """The span to cite for one claim, and whether the model's markers were overruled.

    A single sentence is preferred to a pair that scores no better than it."""
    best = _best(scores, range(len(spans)), spans)
    if not markers:
        return best, False
    valid = {m - 1 for m in markers if 1 <= m <= n_passages}
    named = [j for j, s in enumerate(spans) if s.passage in valid]
    if named:
        best_named = _best(scores, named, spans)
        if scores[best_named] >= scores[best] - _MARKER_TOLERANCE:
            return best_named, len(valid) < len(set(markers))
    return best, True


def _best(scores: np.ndarray, candidates: Sequence[int] | range, spans: Sequence[_Span]) -> int:
    ranked = sorted(candidates, key=lambda j: (-round(float(scores[j]), 3), spans[j].end - spans[j].start))
    return ranked[0]
