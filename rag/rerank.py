"""Second-stage ranking of fused candidates, without a cross-encoder.

Every candidate among the first ``rerank_depth`` of the fused list gets a score from
features that are cheap to compute with what the index already holds:

* ``fused``: its fused (first-stage) score, divided by the best one;
* ``dense``: cosine similarity of its stored vector and the question's;
* ``coverage``: the share of the question's terms (stemmed, stop words out, each
  weighted by its BM25 IDF) found in the chunk or its article's title;
* ``sentence``: the same share for the chunk's best single sentence, a proximity
  signal: the terms of a good answer sit close together;
* ``recency`` (only when the question has an "as of" date): ``0.5 ** (age / half life)``
  for an article ``age`` days older than that date.

The score is a weighted sum (``RerankWeights``); candidates below the depth keep
their order after the re-ranked ones. ``distinct_leads`` picks the best chunk of each
of the first few articles, which retrieval moves to the top, so that a question needing
two articles finds the second one's evidence near the top too (without a cap on the
other chunks of the first). ``diversify`` then lets at most ``per_doc`` chunks of one
article into the first ``k`` places, so that questions needing several articles see
several.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np

from rag.lexical import SentenceTerms, tokenize
from rag.sentences import split_sentences


@dataclass(frozen=True)
class RerankWeights:
    fused: float = 1.0
    dense: float = 1.0
    coverage: float = 1.0
    sentence: float = 2.0
    recency: float = 1.5
    half_life_days: float = 14.0


@dataclass(frozen=True)
class QueryTerms:
    terms: tuple[str, ...]
    weights: np.ndarray  # IDF per term, summing to 1

    @classmethod
    def of(cls, snapshot: Any, query: str, ignore: Sequence[str] = ()) -> QueryTerms:
        skip = set(tokenize([" ".join(ignore)])[0]) if ignore else set()
        terms = tuple(t for t in dict.fromkeys(tokenize([query])[0]) if t not in skip)
        idf = np.asarray(snapshot.lexical.idf(terms), dtype=np.float64) if terms else np.zeros(0)
        total = idf.sum()
        return cls(terms, idf / total if total > 0 else idf)


def _row_terms(snapshot: Any, rows: Sequence[int]) -> list[tuple[frozenset[str], list[frozenset[str]]]]:
    """Per row: the stems of its article's title and of each of its sentences (cached)."""
    cache: dict[int, tuple[frozenset[str], list[frozenset[str]]]] = snapshot.derived.setdefault("row_terms", {})
    missing = [r for r in dict.fromkeys(rows) if r not in cache]
    if missing:
        texts: list[str] = []
        layout: list[tuple[int, int]] = []
        for row in missing:
            chunk = snapshot.chunks[row]
            sentences = [chunk.text[s:e] for s, e in split_sentences(chunk.text)] or [chunk.text]
            layout.append((len(texts), len(sentences)))
            texts.append(snapshot.documents[chunk.doc_id].article.title)
            texts.extend(sentences)
        tokens = tokenize(texts)
        for row, (at, n) in zip(missing, layout, strict=True):
            cache[row] = (frozenset(tokens[at]), [frozenset(t) for t in tokens[at + 1: at + 1 + n]])
    return [cache[r] for r in rows]


def _title_terms(snapshot: Any, rows: Sequence[int]) -> list[frozenset[str]]:
    """Per row, the stems of its article's title (cached per article)."""
    cache: dict[str, frozenset[str]] = snapshot.derived.setdefault("title_terms", {})
    docs = [snapshot.chunks[r].doc_id for r in rows]
    missing = [d for d in dict.fromkeys(docs) if d not in cache]
    if missing:
        titles = tokenize([snapshot.documents[d].article.title for d in missing])
        cache.update((d, frozenset(t)) for d, t in zip(missing, titles, strict=True))
    return [cache[d] for d in docs]


def _coverage(
    snapshot: Any, saved: SentenceTerms, rows: Sequence[int], terms: QueryTerms
) -> tuple[np.ndarray, np.ndarray]:
    """``coverage`` and ``sentence`` of the rows from the saved tokens, with no tokenising:
    which query terms each sentence holds, as a (sentences x terms) table."""
    ids = [saved.ids[saved.offsets[r]:saved.offsets[r + 1]] for r in rows]
    sizes = [saved.sizes[saved.size_offsets[r]:saved.size_offsets[r + 1]] for r in rows]
    tokens, sentence_sizes = np.concatenate(ids), np.concatenate(sizes).astype(np.int64)
    first_sentence = np.cumsum([0, *(len(z) for z in sizes[:-1])])
    query_ids = np.array([saved.term_id.get(t, -1) for t in terms.terms], dtype=np.int64)
    order = np.argsort(query_ids)
    ordered = query_ids[order]
    at = np.minimum(np.searchsorted(ordered, tokens), len(ordered) - 1)
    match = ordered[at] == tokens
    holds = np.zeros((len(sentence_sizes), len(query_ids)), dtype=bool)
    sentence_of_token = np.repeat(np.arange(len(sentence_sizes)), sentence_sizes)
    holds[sentence_of_token[match], order[at[match]]] = True
    sentence = np.maximum.reduceat(holds @ terms.weights, first_sentence)
    in_row = np.logical_or.reduceat(holds, first_sentence, axis=0)
    for i, title in enumerate(_title_terms(snapshot, rows)):
        in_row[i] |= [t in title for t in terms.terms]
    return in_row @ terms.weights, sentence


def _age_days(published_at: str | None, as_of: date) -> float | None:
    try:
        published = date.fromisoformat((published_at or "")[:10])
    except ValueError:
        return None
    return max((as_of - published).days, 0)


def features(
    snapshot: Any, query_vector: np.ndarray | None, terms: QueryTerms, candidates: Sequence[tuple[int, float]],
    as_of: date | None = None, half_life_days: float = 7.0,
) -> dict[str, np.ndarray]:
    rows = [row for row, _ in candidates]
    fused = np.asarray([score for _, score in candidates], dtype=np.float64)
    top = fused.max() if len(fused) else 0.0
    out = {"fused": fused / top if top > 0 else fused}
    if query_vector is not None and rows:
        out["dense"] = snapshot.row_vectors(rows) @ query_vector.astype(np.float32).ravel()
    else:
        out["dense"] = np.zeros(len(rows))
    coverage = np.zeros(len(rows))
    sentence = np.zeros(len(rows))
    saved = snapshot.sentence_terms() if terms.terms and rows else None
    if saved is not None:
        coverage, sentence = _coverage(snapshot, saved, rows, terms)
    elif terms.terms:
        for i, (title, sentences) in enumerate(_row_terms(snapshot, rows)):
            in_any = title.union(*sentences)
            coverage[i] = sum(w for t, w in zip(terms.terms, terms.weights, strict=True) if t in in_any)
            sentence[i] = max(
                (sum(w for t, w in zip(terms.terms, terms.weights, strict=True) if t in s) for s in sentences),
                default=0.0,
            )
    out["coverage"], out["sentence"] = coverage, sentence
    recency = np.zeros(len(rows))
    if as_of is not None:
        for i, row in enumerate(rows):
            age = _age_days(snapshot.documents[snapshot.chunks[row].doc_id].article.published_at, as_of)
            recency[i] = 0.5 ** (age / half_life_days) if age is not None else 0.0
    out["recency"] = recency
    return out


def rerank(
    snapshot: Any, query_vector: np.ndarray | None, terms: QueryTerms, fused: list[tuple[int, float]],
    depth: int, weights: RerankWeights, as_of: date | None = None,
) -> list[tuple[int, float]]:
    """The first ``depth`` candidates re-scored and re-ordered; the rest follow unchanged."""
    head, tail = fused[:depth], fused[depth:]
    if not head:
        return fused
    f = features(snapshot, query_vector, terms, head, as_of, weights.half_life_days)
    score = (weights.fused * f["fused"] + weights.dense * f["dense"] + weights.coverage * f["coverage"]
             + weights.sentence * f["sentence"] + weights.recency * f["recency"])
    order = sorted(range(len(head)), key=lambda i: (-score[i], head[i][0]))
    floor = float(score.min()) if len(score) else 0.0
    # Rows below the depth keep their order, scored below every re-ranked one.
    return [(head[i][0], float(score[i])) for i in order] + [
        (row, floor - (n + 1) * 1e-6) for n, (row, _) in enumerate(tail)
    ]


_SENTENCE_CACHE_ROWS = 20_000


def sentence_vectors(snapshot: Any, rows: Sequence[int], embed: Callable[[list[str]], np.ndarray]) -> list[np.ndarray]:
    """Per row, the embeddings of its sentences (computed on first use, then kept)."""
    cache: dict[int, np.ndarray] = snapshot.derived.setdefault("sentence_vectors", {})
    if len(cache) > _SENTENCE_CACHE_ROWS:  # bounded: about 12 kB a row
        cache.clear()
    missing = [r for r in dict.fromkeys(rows) if r not in cache]
    if missing:
        texts: list[str] = []
        counts: list[int] = []
        for row in missing:
            text = snapshot.chunks[row].text
            sentences = [text[s:e] for s, e in split_sentences(text)] or [text]
            texts.extend(sentences)
            counts.append(len(sentences))
        vectors = embed(texts)
        at = 0
        for row, n in zip(missing, counts, strict=True):
            cache[row] = vectors[at:at + n]
            at += n
    return [cache[r] for r in rows]


def rerank_by_sentences(
    snapshot: Any, query_vector: np.ndarray, ranked: list[tuple[int, float]], top: int, weight: float,
    embed: Callable[[list[str]], np.ndarray],
) -> list[tuple[int, float]]:
    """The first ``top`` candidates re-scored with the cosine of their best sentence."""
    head, tail = ranked[:top], ranked[top:]
    if not head:
        return ranked
    q = query_vector.astype(np.float32).ravel()
    best = [float((v @ q).max()) for v in sentence_vectors(snapshot, [row for row, _ in head], embed)]
    scored = sorted(((row, score + weight * b) for (row, score), b in zip(head, best, strict=True)),
                    key=lambda item: -item[1])
    return scored + tail


def distinct_leads(snapshot: Any, ranked: list[tuple[int, float]], articles: int) -> list[int]:
    """Rows of the best-ranked chunk of each of the first ``articles`` distinct articles
    in ``ranked``, in ranked order."""
    rows: list[int] = []
    seen: set[str] = set()
    for row, _ in ranked:
        if len(rows) >= articles:
            break
        doc = snapshot.chunks[row].doc_id
        if doc not in seen:
            seen.add(doc)
            rows.append(row)
    return rows


def diversify(snapshot: Any, ranked: list[tuple[int, float]], per_doc: int, k: int) -> list[tuple[int, float]]:
    """At most ``per_doc`` chunks of one article among the first ``k``; the others move
    down, in their order, after those ``k``."""
    if per_doc <= 0:
        return ranked
    chosen: list[tuple[int, float]] = []
    held: list[tuple[int, float]] = []
    count: dict[str, int] = {}
    for item in ranked:
        doc = snapshot.chunks[item[0]].doc_id
        if len(chosen) < k and count.get(doc, 0) < per_doc:
            chosen.append(item)
            count[doc] = count.get(doc, 0) + 1
        else:
            held.append(item)
    return chosen + held
