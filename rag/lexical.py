"""The lexical side of retrieval: BM25 (bm25s) over stemmed, stop-worded tokens."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rag.sentences import split_sentences


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    import Stemmer

    return Stemmer.Stemmer("english")


@lru_cache(maxsize=1)
def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


# bm25s's rule, kept so that tokens match indexes built by earlier versions exactly.
_WORD = re.compile(r"(?u)\b\w\w+\b")
_MAX_STEMS = 1_000_000
_stems: dict[str, str] = {}  # word -> stem, remembered between calls
_stem_lock = threading.Lock()  # a Stemmer object must not be used by two threads at once


def tokenize(texts: Sequence[str]) -> list[list[str]]:
    """Lower-cased, English stop words removed, Snowball-stemmed word tokens.

    The same tokens as ``bm25s.tokenize(texts, stopwords="en", stemmer=<english>)``
    (a test holds the two equal), several times faster on the short texts a search
    tokenises, because each word is stemmed once per process."""
    global _stems
    stop = _stopwords()
    words = [[w for w in _WORD.findall(text.lower()) if w not in stop] for text in texts]
    stems = _stems
    new = {w for ws in words for w in ws if w not in stems}
    if new:
        with _stem_lock:
            if len(stems) + len(new) > _MAX_STEMS:  # a new table; calls holding the old one finish with it
                stems = _stems = {}
                new = {w for ws in words for w in ws}
            unique = sorted(new)
            stems.update(zip(unique, _stemmer().stemWords(unique), strict=True))
    return [[stems[w] for w in ws] for ws in words]


TERMS_VOCABULARY = "terms.vocabulary.json"
TERMS_IDS = "terms.ids.npy"
TERMS_OFFSETS = "terms.offsets.npy"
TERMS_SENTENCES = "terms.sentences.npy"
TERMS_SENTENCE_OFFSETS = "terms.sentence_offsets.npy"


def sentence_texts(text: str) -> list[str]:
    """A chunk's sentences as the lexical features read them (the whole text if it has none)."""
    return [text[s:e] for s, e in split_sentences(text)] or [text]


@dataclass(frozen=True)
class ChunkTerms:
    """The BM25 tokens of chunks, and how many of each chunk's tokens each of its sentences
    holds (the tokens of a chunk are those of its sentences, one after the other)."""

    tokens: list[list[str]]
    sentence_sizes: list[list[int]]

    @classmethod
    def of(cls, texts: Sequence[str]) -> ChunkTerms:
        sentences = [sentence_texts(t) for t in texts]
        flat = tokenize([s for group in sentences for s in group])
        tokens: list[list[str]] = []
        sizes: list[list[int]] = []
        at = 0
        for group in sentences:
            parts = flat[at:at + len(group)]
            at += len(group)
            tokens.append([t for part in parts for t in part])
            sizes.append([len(part) for part in parts])
        return cls(tokens, sizes)

    def select(self, keep: Sequence[bool] | np.ndarray) -> ChunkTerms:
        """The chunks whose ``keep`` is true."""
        picked = np.flatnonzero(np.asarray(keep, dtype=bool))
        return ChunkTerms([self.tokens[i] for i in picked], [self.sentence_sizes[i] for i in picked])

    def extend(self, other: ChunkTerms) -> ChunkTerms:
        return ChunkTerms(self.tokens + other.tokens, self.sentence_sizes + other.sentence_sizes)

    def __len__(self) -> int:
        return len(self.tokens)


class SentenceTerms:
    """Saved tokens read back: every chunk's term ids (``ids[offsets[row]:offsets[row + 1]]``)
    and how many of them each of its sentences holds (``sizes[size_offsets[row]:size_offsets[row + 1]]``),
    with the vocabulary. Re-ranking reads them memory-mapped, so it tokenises nothing; a commit
    reads them whole to carry kept chunks' tokens over."""

    def __init__(self, vocabulary: list[str], ids: np.ndarray, offsets: np.ndarray,
                 sizes: np.ndarray, size_offsets: np.ndarray):
        self.vocabulary = vocabulary
        self.ids, self.offsets, self.sizes, self.size_offsets = ids, offsets, sizes, size_offsets

    @cached_property
    def term_id(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.vocabulary)}

    @classmethod
    def of(cls, terms: ChunkTerms) -> SentenceTerms:
        """The same arrays built in memory from tokens (what :meth:`save` writes)."""
        vocabulary = sorted({t for chunk in terms.tokens for t in chunk})
        number = {t: i for i, t in enumerate(vocabulary)}
        ids = np.fromiter((number[t] for chunk in terms.tokens for t in chunk), dtype=np.int32)
        offsets = np.cumsum([0, *(len(chunk) for chunk in terms.tokens)], dtype=np.int64)
        sizes = np.fromiter((n for chunk in terms.sentence_sizes for n in chunk), dtype=np.int32)
        size_offsets = np.cumsum([0, *(len(chunk) for chunk in terms.sentence_sizes)], dtype=np.int64)
        return cls(vocabulary, ids, offsets, sizes, size_offsets)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / TERMS_VOCABULARY).write_text(json.dumps(self.vocabulary, ensure_ascii=False), encoding="utf-8")
        np.save(directory / TERMS_IDS, self.ids, allow_pickle=False)
        np.save(directory / TERMS_OFFSETS, self.offsets, allow_pickle=False)
        np.save(directory / TERMS_SENTENCES, self.sizes, allow_pickle=False)
        np.save(directory / TERMS_SENTENCE_OFFSETS, self.size_offsets, allow_pickle=False)

    @classmethod
    def read(cls, directory: Path, mmap: bool = True) -> SentenceTerms | None:
        """None when the generation saved no sentence sizes (older indexes) or they do not fit
        its tokens."""
        mode: Literal["r"] | None = "r" if mmap else None
        try:
            vocabulary = json.loads((directory / TERMS_VOCABULARY).read_text(encoding="utf-8"))
            ids = np.load(directory / TERMS_IDS, mmap_mode=mode, allow_pickle=False)
            offsets = np.load(directory / TERMS_OFFSETS, allow_pickle=False)
            sizes = np.load(directory / TERMS_SENTENCES, mmap_mode=mode, allow_pickle=False)
            size_offsets = np.load(directory / TERMS_SENTENCE_OFFSETS, allow_pickle=False)
        except (OSError, ValueError):
            return None
        fits = (len(offsets) == len(size_offsets) and offsets[-1] == len(ids)
                and size_offsets[-1] == len(sizes) and int(sizes.sum()) == len(ids))
        return cls(vocabulary, ids, offsets, sizes, size_offsets) if fits else None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def chunk_terms(self) -> ChunkTerms:
        words = np.array(self.vocabulary, dtype=object)[self.ids] if len(self.ids) else np.array([], dtype=object)
        o, z = self.offsets, self.size_offsets
        rows = range(len(self))
        return ChunkTerms([words[o[i]:o[i + 1]].tolist() for i in rows],
                          [self.sizes[z[i]:z[i + 1]].tolist() for i in rows])


class LexicalIndex:
    """BM25 over the chunk table; row ``i`` is chunk ``i`` of the snapshot.

    The tokens of every chunk are saved beside the BM25 arrays, so the next commit
    tokenises only new chunks (tokenising is most of the cost of rebuilding BM25)."""

    def __init__(self, bm25: Any, size: int, terms: ChunkTerms | None = None):
        self._bm25 = bm25
        self.size = size
        self._terms = terms

    @classmethod
    def build(cls, terms: ChunkTerms) -> LexicalIndex:
        """BM25 over chunks given as their tokens (see :class:`ChunkTerms`)."""
        import bm25s

        bm25 = bm25s.BM25()
        if terms.tokens:
            bm25.index(terms.tokens, show_progress=False)
        return cls(bm25, len(terms), terms)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        if self.size:
            self._bm25.save(str(directory), show_progress=False)
        SentenceTerms.of(self._terms or ChunkTerms([], [])).save(directory)

    @staticmethod
    def load_terms(directory: Path) -> ChunkTerms | None:
        """The saved tokens of every chunk with their sentence sizes, or None if this index
        saved none (or, before sentence sizes were saved, no sizes)."""
        saved = SentenceTerms.read(directory, mmap=False)
        return saved.chunk_terms() if saved is not None else None

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
