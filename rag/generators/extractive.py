"""The extractive generator: answers with sentences quoted from the passages.

No language model is involved. The sentences of the top passages that share
most of the question's content words (``answer_candidates`` of them, with the
sentences they lean on or that lean on them) are scored against the question by
embedding similarity and by that coverage; embedding only those, not every
sentence, is most of what makes an answer cheap. The best sentence, with a
neighbour when one only makes sense together with it ("Some of them were ..."),
and any other sentence nearly as good, form the answer. Each answer sentence is a verbatim quote and
is cited with its exact offsets. When no sentence reaches ``min_support`` the
generator abstains: an honest "not in the corpus" beats a confident guess.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

import numpy as np

from rag.generators.base import BaseGenerator, GeneratorContext, abstain, cite
from rag.support import SourceSentence, content_terms, passage_sentences, question_support
from rag.types import GeneratedAnswer, Passage

# A sentence opening with one of these leans on the sentence before it.
_ANAPHORIC_START = re.compile(
    r"^(?:some|many|most|all|few|several|each|both|none|one|two|three)\s+of\s+(?:them|these|those)\b"
    r"|^(?:they|these|those|this|that|it|its|he|she|his|her|their|such|among\s+them|the\s+latter|"
    r"the\s+former|also|however|but)\b",
    re.IGNORECASE,
)
_NEAR_BEST = 0.08  # other sentences within this of the best one join the answer


class ExtractiveGenerator(BaseGenerator):
    name = "extractive"
    deterministic = True  # the same question and passages always give the same answer

    def __init__(self, context: GeneratorContext):
        self.embedder = context.embedder
        self.max_sentences = context.max_answer_sentences
        self.min_support = context.min_support
        self.candidates = context.answer_candidates

    def rank_sentences(self, question: str, passages: Sequence[Passage]) -> tuple[list[SourceSentence], np.ndarray]:
        """The passages' sentences and the support each gives the question, in [0, 1]."""
        sentences = passage_sentences(passages)
        if not sentences:
            return sentences, np.zeros(0)
        scores = np.zeros(len(sentences))
        picked = self.candidates_for(question, sentences)
        scores[picked] = self.score(question, [sentences[i].text for i in picked])
        # A sentence that leans on its predecessor inherits part of its score.
        for i, s in enumerate(sentences):
            if i and _continues(sentences[i - 1], s):
                scores[i] = max(scores[i], 0.95 * scores[i - 1])
        return sentences, scores

    def generate(self, question: str, passages: Sequence[Passage]) -> GeneratedAnswer:
        sentences, scores = self.rank_sentences(question, passages)
        if not sentences:
            return abstain("no passages were retrieved, so the corpus holds no answer")
        best = int(np.argmax(scores))
        if scores[best] < self.min_support:
            return abstain(
                "the corpus does not appear to answer this question: the best matching sentence "
                f"scores {scores[best]:.2f}, below the support threshold {self.min_support:.2f}"
            )
        # The best sentence with the sentences it needs (always kept together), then others nearly as good.
        group = self._with_context(sentences, best)
        chosen = list(group)
        for i in np.argsort(-scores, kind="stable"):
            if len(chosen) >= self.max_sentences or scores[i] < max(self.min_support, scores[best] - _NEAR_BEST):
                break
            if int(i) not in chosen:
                chosen.append(int(i))
        # Shown in reading order: the best sentence's group as in the article, then the others.
        ordered = sorted(i for i in chosen if i in group) + [i for i in chosen if i not in group]
        citations = [
            cite(n, passages[sentences[i].passage], sentences[i].start, sentences[i].end)
            for n, i in enumerate(ordered, start=1)
        ]
        text = " ".join(f"{c.quote} [{c.n}]" for c in citations)
        return GeneratedAnswer(text, tuple(citations))

    def stream(self, question: str, passages: Sequence[Passage]) -> Iterator[str | GeneratedAnswer]:
        """The answer's sentences one at a time, each with its marker, then the answer."""
        answer = self.generate(question, passages)
        for i, c in enumerate(answer.citations):
            yield f"{' ' if i else ''}{c.quote} [{c.n}]"
        yield answer

    def candidates_for(self, question: str, sentences: Sequence[SourceSentence]) -> list[int]:
        """The sentences worth embedding, in order: the ``self.candidates`` sharing the largest share
        of the question's content words (ties go to the higher-ranked passage, then the earlier
        sentence), with the sentence each leans on and one leaning on it. All when
        ``self.candidates`` is 0 or there are no more sentences than that."""
        if not self.candidates or len(sentences) <= self.candidates:
            return list(range(len(sentences)))
        terms = content_terms(question)
        share = [len(terms & content_terms(s.text)) / len(terms) if terms else 0.0 for s in sentences]
        best = sorted(range(len(sentences)), key=lambda i: (-share[i], sentences[i].passage, i))
        chosen = set(best[: self.candidates])
        for i in list(chosen):
            if i > 0 and _continues(sentences[i - 1], sentences[i]):
                chosen.add(i - 1)
            if i + 1 < len(sentences) and _continues(sentences[i], sentences[i + 1]):
                chosen.add(i + 1)
        return sorted(chosen)

    def score(self, question: str, texts: Sequence[str]) -> np.ndarray:
        """Support of each text for the question, in [0, 1] (see :mod:`rag.support`)."""
        return question_support(self.embedder, question, texts)

    @staticmethod
    def _with_context(sentences: Sequence[SourceSentence], best: int) -> list[int]:
        """The best sentence, preceded by the sentence it leans on and followed by one leaning on it."""
        chosen = [best]
        if best > 0 and _continues(sentences[best - 1], sentences[best]):
            chosen.insert(0, best - 1)
        if best + 1 < len(sentences) and _continues(sentences[best], sentences[best + 1]):
            chosen.append(best + 1)
        return chosen


def _continues(prev: SourceSentence, cur: SourceSentence) -> bool:
    """``cur`` directly follows ``prev`` in their article and opens with a reference back.
    (The two may come from overlapping passages: a shared sentence is kept only once.)"""
    return cur.follows(prev) and bool(_ANAPHORIC_START.match(cur.text))
