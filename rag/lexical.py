"""The lexical side of retrieval: BM25 (bm25s) over stemmed, stop-worded tokens."""

from __future__ import annotations

import json
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


TERMS_VOCABULARY = "terms.vocabulary.json"
TERMS_IDS = "terms.ids.npy"
TERMS_OFFSETS = "terms.offsets.npy"


class LexicalIndex:
    """BM25 over the chunk table; row ``i`` is chunk ``i`` of the snapshot.

    The tokens of every chunk are saved beside the BM25 arrays, so the next commit
    tokenises only new chunks (tokenising is most of the cost of rebuilding BM25)."""

    def __init__(self, bm25: Any, size: int, terms: list[list[str]] | None = None):
        self._bm25 = bm25
        self.size = size
        self._terms = terms

    @classmethod
    def build(cls, terms: list[list[str]]) -> LexicalIndex:
        """BM25 over chunks given as their tokens (see :func:`tokenize`)."""
        import bm25s

        bm25 = bm25s.BM25()
        if terms:
            bm25.index(terms, show_progress=False)
        return cls(bm25, len(terms), terms)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        if self.size:
            self._bm25.save(str(directory), show_progress=False)
        terms = self._terms or []
        vocabulary = sorted({t for chunk in terms for t in chunk})
        number = {t: i for i, t in enumerate(vocabulary)}
        ids = np.fromiter((number[t] for chunk in terms for t in chunk), dtype=np.int32)
        offsets = np.cumsum([0, *(len(chunk) for chunk in terms)], dtype=np.int64)
        (directory / TERMS_VOCABULARY).write_text(json.dumps(vocabulary, ensure_ascii=False), encoding="utf-8")
        np.save(directory / TERMS_IDS, ids, allow_pickle=False)
        np.save(directory / TERMS_OFFSETS, offsets, allow_pickle=False)

    @staticmethod
    def load_terms(directory: Path) -> list[list[str]] | None:
        """The saved tokens of every chunk, or None if this index has none saved."""
        try:
            vocabulary = np.array(json.loads((directory / TERMS_VOCABULARY).read_text(encoding="utf-8")),
                                  dtype=object)
            ids = np.load(directory / TERMS_IDS, allow_pickle=False)
            offsets = np.load(directory / TERMS_OFFSETS, allow_pickle=False)
        except (OSError, ValueError):
            return None
        words = vocabulary[ids] if len(ids) else np.array([], dtype=object)
        return [words[offsets[i]:offsets[i + 1]].tolist() for i in range(len(offsets) - 1)]

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
