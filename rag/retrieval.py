"""Hybrid retrieval: dense (FAISS inner product) and lexical (BM25) candidates,
fused into one ranking, with optional filters on source and publication date.

Fusion methods (``Settings.fusion``), compared on the dev sets in ``bench/fusion.py``:

* ``rrf``: reciprocal rank fusion, ``sum 1 / (rrf_k + rank)`` over the two lists;
* ``weighted``: a convex mix of the two scores, each min-max normalised over its candidates;
* ``dense`` / ``bm25``: one retriever alone (baselines).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from rag.store import IndexSnapshot
from rag.types import Passage, SearchFilters

Fusion = Literal["rrf", "weighted", "dense", "bm25"]


@dataclass(frozen=True)
class RetrievalParams:
    candidates: int = 50
    fusion: Fusion = "rrf"
    rrf_k: int = 60
    dense_weight: float = 0.5


def allowed_rows(snapshot: IndexSnapshot, filters: SearchFilters) -> np.ndarray:
    """Boolean mask over chunk rows that pass the filters."""
    sources = {s.lower() for s in filters.sources}
    ok_doc: dict[str, bool] = {}
    for doc_id, stored in snapshot.documents.items():
        art = stored.article
        keep = True
        if sources and (art.source or "").lower() not in sources:
            keep = False
        date = (art.published_at or "")[:10]
        if filters.published_after and (not date or date < filters.published_after[:10]):
            keep = False
        if filters.published_before and (not date or date > filters.published_before[:10]):
            keep = False
        ok_doc[doc_id] = keep
    return np.fromiter((ok_doc[c.doc_id] for c in snapshot.chunks), dtype=bool, count=len(snapshot.chunks))


def dense_search(
    snapshot: IndexSnapshot, query_vector: np.ndarray, k: int, mask: np.ndarray | None = None
) -> list[tuple[int, float]]:
    """Rows and cosine scores of the ``k`` nearest chunks (exact search)."""
    import faiss

    n = len(snapshot.chunks)
    if n == 0 or k <= 0:
        return []
    params = None
    if mask is not None:
        ids = snapshot.faiss_ids[mask]
        if len(ids) == 0:
            return []
        params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(ids))  # type: ignore[call-arg]
    scores, ids = snapshot.vectors.search(query_vector.reshape(1, -1).astype(np.float32), min(k, n), params=params)
    return [
        (snapshot.row_by_faiss_id[int(i)], float(s))
        for i, s in zip(ids[0], scores[0], strict=True)
        if i >= 0
    ]


def fuse(
    dense: list[tuple[int, float]], lexical: list[tuple[int, float]], params: RetrievalParams
) -> list[tuple[int, float]]:
    """Combine two ranked ``(row, score)`` lists into one, best first."""
    if params.fusion == "dense":
        return dense
    if params.fusion == "bm25":
        return lexical
    fused: dict[int, float] = {}
    if params.fusion == "rrf":
        for ranking in (dense, lexical):
            for rank, (row, _) in enumerate(ranking, start=1):
                fused[row] = fused.get(row, 0.0) + 1.0 / (params.rrf_k + rank)
    else:
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
) -> list[Passage]:
    """The ``k`` best passages for ``query``, best first."""
    mask = allowed_rows(snapshot, filters) if filters and not filters.is_empty() else None
    pool = max(params.candidates, k)
    dense = (
        dense_search(snapshot, embed_query(query), pool, mask) if params.fusion != "bm25" else []
    )
    lexical = snapshot.lexical.search(query, pool, mask) if params.fusion != "dense" else []
    if mask is not None:  # bm25s gives masked rows a zero score; drop any that slip through
        lexical = [(row, s) for row, s in lexical if mask[row]]
    return [to_passage(snapshot, row, score) for row, score in fuse(dense, lexical, params)[:k]]


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
