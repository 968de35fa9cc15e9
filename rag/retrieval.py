"""Hybrid retrieval: dense (FAISS inner product) and lexical (BM25) candidates,
fused into one ranking, with optional filters on source and publication date.

Fusion methods (``Settings.fusion``), compared on the dev sets in ``bench/retrieval.py``:

* ``rrf``: reciprocal rank fusion, ``sum 1 / (rrf_k + rank)`` over the two lists;
* ``weighted``: a convex mix of the two scores, each min-max normalised over its candidates;
* ``dense`` / ``bm25``: one retriever alone (baselines).

After fusion: when the question names sources of the index (``rag.decompose``), one
sub-query per named source, restricted to it, is fused the same way and merged with
the main list by reciprocal rank (a part with fewer than ``part_min_terms`` content
words of its own, such as "and TechCrunch" in "according to Fortune, The Verge, and
TechCrunch", asks the whole question of its source instead); then the first
``rerank_depth`` candidates are re-ranked (``rag.rerank``; with a recency prior when
the search has an as-of day), the best chunk of each sub-query leads, and, as such a
question relates several reports, the best chunks of the first ``distinct_articles``
articles come before any second chunk of an article. Last, near-duplicate articles are
folded (``rag.dedup``, if set) and at most ``per_doc`` chunks of one article are let
into the top ``k`` (if set).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Literal

import numpy as np

from rag.decompose import SubQuery, day_mask, source_mask, sub_queries
from rag.dedup import collapse
from rag.lexical import tokenize
from rag.rerank import QueryTerms, RerankWeights, distinct_leads, diversify, rerank, rerank_by_sentences
from rag.store import IndexSnapshot
from rag.types import Passage, SearchFilters

Fusion = Literal["rrf", "weighted", "dense", "bm25"]


@dataclass(frozen=True)
class RetrievalParams:
    candidates: int = 50
    fusion: Fusion = "rrf"
    rrf_k: int = 20
    dense_weight: float = 0.5
    source_queries: bool = True
    source_candidates: int = 40
    part_min_terms: int = 8
    sentence_rerank: int = 0
    sentence_weight: float = 2.0
    rerank_depth: int = 100
    weights: RerankWeights = field(default_factory=RerankWeights)
    distinct_articles: int = 2
    per_doc: int = 0
    collapse_duplicates: bool = False
    duplicate_threshold: float = 0.8


def allowed_rows(snapshot: IndexSnapshot, filters: SearchFilters) -> np.ndarray:
    """Boolean mask over chunk rows that pass the filters."""
    sources = {s.lower() for s in filters.sources}
    ok_doc: dict[str, bool] = {}
    for doc_id, stored in snapshot.documents.items():
        art = stored.article
        keep = True
        if sources and (art.source or "").lower() not in sources:
            keep = False
        published = (art.published_at or "")[:10]
        if filters.published_after and (not published or published < filters.published_after[:10]):
            keep = False
        if filters.published_before and (not published or published > filters.published_before[:10]):
            keep = False
        if filters.as_of and published and published > filters.as_of[:10]:
            keep = False  # not yet published on that day; undated articles stay
        ok_doc[doc_id] = keep
    return np.fromiter((ok_doc[c.doc_id] for c in snapshot.chunks), dtype=bool, count=len(snapshot.chunks))


# With the IVF index, a filter that keeps few rows is searched by brute force over those rows'
# exact vectors: the IVF search finds the nearest allowed rows only in the lists it probes, and
# its recall falls as the allowed share does (bench/ann.py at 200k chunks, nprobe 64: 0.84 when
# 0.5% of articles are allowed, 0.96 at 2%, 0.98 at 10%), while brute force costs by the number
# of rows (about 12 ms for 4-20k rows on 2 shared cores). Brute force is used up to this many
# rows, or this share of the index, whichever is more.
EXACT_FILTER_ROWS = 10_000
EXACT_FILTER_SHARE = 0.02
# The IVF index's scores are of quantised vectors: it fetches this many times ``k`` candidates,
# which are re-scored with their exact vectors, so that scores are exact cosines as with the
# flat index and the order within the ``k`` is right.
ANN_REFINE = 2


@contextmanager
def _one_faiss_thread() -> Iterator[None]:
    """FAISS on one thread in this block, on this thread only (OpenMP keeps the setting per
    thread), and as before afterwards. One query gains little from a second thread, and on a
    busy 2-core machine its threads waiting on each other made a search of 20k chunks take
    20 ms instead of 11."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def dense_search(
    snapshot: IndexSnapshot, query_vector: np.ndarray, k: int, mask: np.ndarray | None = None
) -> list[tuple[int, float]]:
    """Rows and cosine scores of the ``k`` nearest chunks: exact with the flat index,
    approximate (IVF-SQ8, re-scored exactly) with the IVF index. With ``mask``, only
    its rows are candidates, with either index. FAISS searches on one thread."""
    with _one_faiss_thread():
        return _dense_search(snapshot, query_vector, k, mask)


def _dense_search(
    snapshot: IndexSnapshot, query_vector: np.ndarray, k: int, mask: np.ndarray | None
) -> list[tuple[int, float]]:
    import faiss

    n = len(snapshot.chunks)
    if n == 0 or k <= 0:
        return []
    query = np.ascontiguousarray(query_vector.reshape(1, -1), dtype=np.float32)
    allowed = None
    if mask is not None:
        allowed = np.flatnonzero(mask)
        if len(allowed) == 0:
            return []
    if snapshot.kind == "flat":
        params = None
        if allowed is not None:
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(snapshot.faiss_ids[allowed]))  # type: ignore[call-arg]
        scores, ids = snapshot.vectors.search(query, min(k, n), params=params)
        return [
            (snapshot.row_by_faiss_id[int(i)], float(s))
            for i, s in zip(ids[0], scores[0], strict=True)
            if i >= 0
        ]
    if allowed is not None and len(allowed) <= max(EXACT_FILTER_ROWS, EXACT_FILTER_SHARE * n):
        return _exact_over(snapshot, query[0], k, allowed)
    wanted = min(k, n if allowed is None else len(allowed))
    selector = faiss.IDSelectorBatch(snapshot.faiss_ids[allowed]) if allowed is not None else None
    rows = np.zeros(0, dtype=np.int64)
    # When the probed lists hold fewer than ``k`` (allowed) rows, search them all: rare and slower.
    for nprobe in dict.fromkeys((min(snapshot.nprobe, snapshot.vectors.nlist), snapshot.vectors.nlist)):
        params = faiss.SearchParametersIVF(sel=selector, nprobe=nprobe)  # type: ignore[call-arg]
        _, ids = snapshot.vectors.search(query, min(n, k * ANN_REFINE), params=params)
        rows = np.fromiter((snapshot.row_by_faiss_id[int(i)] for i in ids[0] if i >= 0), dtype=np.int64)
        if len(rows) >= wanted:
            break
    return _exact_over(snapshot, query[0], k, rows)


def _exact_over(snapshot: IndexSnapshot, query: np.ndarray, k: int, rows: np.ndarray) -> list[tuple[int, float]]:
    """The ``k`` best of ``rows`` by the cosine of their exact vectors, best first (ties by row)."""
    scores = snapshot.row_vectors(rows) @ query
    top = np.argpartition(-scores, k - 1)[:k] if len(rows) > k else np.arange(len(rows))
    best = sorted(top.tolist(), key=lambda i: (-float(scores[i]), int(rows[i])))
    return [(int(rows[i]), float(scores[i])) for i in best]


def fuse(
    dense: list[tuple[int, float]], lexical: list[tuple[int, float]], params: RetrievalParams
) -> list[tuple[int, float]]:
    """Combine two ranked ``(row, score)`` lists into one, best first."""
    if params.fusion == "dense":
        return dense
    if params.fusion == "bm25":
        return lexical
    if params.fusion == "rrf":
        return reciprocal_rank([dense, lexical], params.rrf_k)
    fused: dict[int, float] = {}
    for ranking, weight in ((dense, params.dense_weight), (lexical, 1.0 - params.dense_weight)):
        for row, score in _min_max(ranking):
            fused[row] = fused.get(row, 0.0) + weight * score
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))


def _min_max(ranking: list[tuple[int, float]]) -> list[tuple[int, float]]:
    if not ranking:
        return []
    scores = [s for _, s in ranking]
    low, high = min(scores), max(scores)
    span = high - low
    return [(row, (s - low) / span if span > 0 else 1.0) for row, s in ranking]


def search(
    snapshot: IndexSnapshot,
    embed_query: Callable[[str], np.ndarray],
    query: str,
    k: int,
    params: RetrievalParams,
    filters: SearchFilters | None = None,
    embed_texts: Callable[[list[str]], np.ndarray] | None = None,
) -> list[Passage]:
    """The ``k`` best passages for ``query``, best first. ``embed_texts`` embeds
    sentences for ``params.sentence_rerank``."""
    filters = filters or SearchFilters()
    mask = allowed_rows(snapshot, filters) if not filters.is_empty() else None
    pool = max(params.candidates, k)
    query_vector = embed_query(query) if params.fusion != "bm25" or params.rerank_depth else None
    ranked = _fused(snapshot, query_vector, query, pool, params, mask)
    as_of = _day(filters.as_of)
    subs = sub_queries(snapshot, query) if params.source_queries and not filters.sources else []
    leaders: list[int] = []
    if subs:
        lists = [ranked]
        for sub in subs:
            sub = replace(sub, text=part_text(sub, query, params.part_min_terms))
            lists.append(_sub_query(snapshot, embed_query, sub, params, mask, as_of, query_vector is not None))
        led: set[str] = set()  # one leader per part, each from its own article
        for sub_ranked in lists[1:]:
            best = next((row for row, _ in sub_ranked if snapshot.chunks[row].doc_id not in led), None)
            if best is not None:
                leaders.append(best)
                led.add(snapshot.chunks[best].doc_id)
        ranked = reciprocal_rank(lists, params.rrf_k)
    if params.rerank_depth:
        terms = QueryTerms.of(snapshot, query, ignore=[sub.mention for sub in subs])
        ranked = rerank(snapshot, query_vector, terms, ranked, params.rerank_depth, params.weights, as_of)
    if params.sentence_rerank and embed_texts is not None and query_vector is not None:
        ranked = rerank_by_sentences(snapshot, query_vector, ranked, params.sentence_rerank,
                                     params.sentence_weight, embed_texts)
    ranked = lead_with(ranked, leaders)
    if params.distinct_articles and subs:
        ranked = lead_with(ranked, distinct_leads(snapshot, ranked, params.distinct_articles))
    if params.collapse_duplicates:
        head = max(k, 30)
        folded = collapse(snapshot, ranked[:head], params.duplicate_threshold)
        seen = {row for row, _ in folded}
        ranked = folded + [item for item in ranked[head:] if item[0] not in seen]
    ranked = diversify(snapshot, ranked, params.per_doc, k)
    return [to_passage(snapshot, row, score) for row, score in ranked[:k]]


def _fused(
    snapshot: IndexSnapshot, query_vector: np.ndarray | None, query: str, pool: int, params: RetrievalParams,
    mask: np.ndarray | None,
) -> list[tuple[int, float]]:
    dense = []
    if params.fusion != "bm25" and query_vector is not None:
        dense = dense_search(snapshot, query_vector, pool, mask)
    lexical = snapshot.lexical.search(query, pool, mask) if params.fusion != "dense" else []
    if mask is not None:  # bm25s gives masked rows a zero score; drop any that slip through
        lexical = [(row, s) for row, s in lexical if mask[row]]
    return fuse(dense, lexical, params)


def part_text(sub: SubQuery, question: str, min_terms: int) -> str:
    """What a sub-query searches for: its part of the question, or the whole question
    when the part has fewer than ``min_terms`` distinct content words (stemmed, stop
    words out) besides the words of the source's name: too few to find its article."""
    words, name = tokenize([sub.text, sub.mention])
    return sub.text if len(set(words) - set(name)) >= min_terms else question


def _sub_query(
    snapshot: IndexSnapshot, embed_query: Callable[[str], np.ndarray], sub: SubQuery, params: RetrievalParams,
    mask: np.ndarray | None, as_of: date | None, dense: bool,
) -> list[tuple[int, float]]:
    """Candidates for one part of a question, restricted to the source (and day) it names."""
    rows = source_mask(snapshot, list(sub.sources))
    if sub.day is not None:
        on_day = rows & day_mask(snapshot, sub.day)
        rows = on_day if on_day.any() else rows
    if mask is not None:
        rows = rows & mask
    if not rows.any():
        return []
    vector = embed_query(sub.text) if dense else None
    ranked = _fused(snapshot, vector, sub.text, params.source_candidates, params, rows)
    if params.rerank_depth:
        terms = QueryTerms.of(snapshot, sub.text, ignore=[sub.mention])
        ranked = rerank(snapshot, vector, terms, ranked, params.rerank_depth, params.weights, as_of)
    return ranked


def lead_with(ranked: list[tuple[int, float]], leaders: list[int]) -> list[tuple[int, float]]:
    """Move the ``leaders`` rows (the best answer to each part of a question) to the top,
    in their ranked order, so that evidence for every part is near the top."""
    if not leaders:
        return ranked
    wanted = set(leaders)
    first = [item for item in ranked if item[0] in wanted]
    if not first:
        return ranked
    # Scores stay in descending order: the leaders score just above the best of the list.
    top = max(score for _, score in ranked)
    n = len(first)
    return [(row, top + (n - i) * 1e-6) for i, (row, _) in enumerate(first)] + [
        item for item in ranked if item[0] not in wanted
    ]


def reciprocal_rank(lists: list[list[tuple[int, float]]], rrf_k: int) -> list[tuple[int, float]]:
    """Reciprocal rank fusion of several ranked lists."""
    fused: dict[int, float] = {}
    for ranking in lists:
        for rank, (row, _) in enumerate(ranking, start=1):
            fused[row] = fused.get(row, 0.0) + 1.0 / (rrf_k + rank)
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))


def _day(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value[:10]) if value else None
    except ValueError:
        return None


def to_passage(snapshot: IndexSnapshot, row: int, score: float) -> Passage:
    chunk = snapshot.chunks[row]
    article = snapshot.documents[chunk.doc_id].article
    return Passage(
        chunk_id=chunk.id,
        doc_id=chunk.doc_id,
        title=article.title,
        text=chunk.text,
        start=chunk.start,
        end=chunk.end,
        score=round(score, 6),
        url=article.url,
        published_at=article.published_at,
        source=article.source,
    )
