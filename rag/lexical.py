"""The lexical side of retrieval: BM25 (bm25s) over stemmed, stop-worded tokens."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    import Stemmer

    return Stemmer.Stemmer("english")


def tokenize(texts: Sequence[str]) -> list[list[str]]:
    """Lower-cased, English stop words removed, Snowball-stemmed word tokens."""
    import bm25s

    if not texts:
        return []
    tokens = bm25s.tokenize(
        list(texts), stopwords="en", stemmer=_stemmer(), return_ids=False, show_progress=False
    )
    return [list(t) for t in tokens]


class LexicalIndex:
    """BM25 over the chunk table; row ``i`` is chunk ``i`` of the snapshot."""

    def __init__(self, bm25: Any, size: int):
        self._bm25 = bm25
        self.size = size

    @classmethod
    def build(cls, texts: Sequence[str]) -> LexicalIndex:
        import bm25s

        bm25 = bm25s.BM25()
        if texts:
            bm25.index(tokenize(texts), show_progress=False)
        return cls(bm25, len(texts))

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        if self.size:
            self._bm25.save(str(directory), show_progress=False)

    @classmethod
    def load(cls, directory: Path, size: int) -> LexicalIndex:
        import bm25s

        if size == 0:
            return cls(bm25s.BM25(), 0)
        return cls(bm25s.BM25.load(str(directory), mmap=False), size)

    def document_frequency(self, tokens: Sequence[str]) -> list[int]:
        """How many chunks hold each (already tokenised) term; 0 for unknown terms."""
        if self.size == 0:
            return [0] * len(tokens)
        vocab = self._bm25.vocab_dict
        indptr = self._bm25.scores["indptr"]
        out = []
        for token in tokens:
            t = vocab.get(token)
            out.append(int(indptr[t + 1] - indptr[t]) if t is not None and t + 1 < len(indptr) else 0)
        return out

    def idf(self, tokens: Sequence[str]) -> list[float]:
        """BM25's inverse document frequency of each term (unknown terms score as the rarest)."""
        n = max(self.size, 1)
        return [float(np.log(1 + (n - df + 0.5) / (df + 0.5))) for df in self.document_frequency(tokens)]

    def search(self, query: str, k: int, mask: np.ndarray | None = None) -> list[tuple[int, float]]:
        """Rows and BM25 scores of the best ``k`` chunks with a positive score."""
        tokens = tokenize([query])[0] if query.strip() else []
        if not tokens or self.size == 0:
            return []
        k = min(k, self.size)
        rows, scores = self._bm25.retrieve(
            [tokens], k=k, show_progress=False, weight_mask=mask, n_threads=0
        )
        return [(int(r), float(s)) for r, s in zip(rows[0], scores[0], strict=True) if s > 0]
