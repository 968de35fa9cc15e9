#!/usr/bin/env python
"""Retrieval ablation on the two news-QA dev sets: each stage of the retriever,
measured with the metrics of ``rag eval`` (``rag.evaluation``).

Sets (``--eval-dir``, default ``../shared/eval``): MultiHop-RAG's dev split (609
articles, 564 questions with evidence; chunk-level metrics as that benchmark defines
them) and RealTimeQA's gold dev split (1,663 articles, 52 questions; document-level
metrics; each question's ``question_date`` is its "as of" day only where a row says so).

Rows, in order:

* ``baseline``: reciprocal rank fusion (k=60) of dense (all-MiniLM-L6-v2) and BM25 top-50
  lists over 200-token chunks (overlap 40), chunk text alone embedded; nothing else;
* ``+ RRF k=20``: the fusion constant of the default (it also merges the sub-query lists);
* ``+ titles``: the article title embedded with each chunk (a separate index);
* ``+ source sub-queries``: a sub-query per source the question names (``rag.decompose``);
* ``+ re-ranking``: term coverage and best-sentence proximity over the top 100 (``rag.rerank``);
* ``+ short parts ask the whole question``: a source's part of the question with fewer than 8
  content words of its own ("..., and TechCrunch") searches that source with the whole question;
* ``+ distinct articles first``: for questions that name sources, the best chunks of the first
  two articles come before any second chunk of one article;
* ``+ as-of day``: RealTimeQA's question dates as the as-of day, with the recency prior;
  this is the default configuration;
* alternatives to one part of the default, each alone: chunk sizes 128/32 and 250/50;
  fusion by weighted scores (dense weight 0.3 / 0.5 / 0.7) and by weights learned with
  logistic regression (two-fold cross-validation over questions, first stage only:
  ``learned`` rows compare with ``first stage`` rows); at most 1 or 2 chunks per
  article in the top k; near-duplicate folding; re-ranking by the embeddings of the
  best sentences of the top 20 candidates.

Indexes are built once in ``--bench-dir`` (default /tmp/rag-bench) and reused while
they match the corpus and settings. Reproduce from the repository root::

    .venv/bin/python bench/retrieval.py
    .venv/bin/python bench/retrieval.py --json /tmp/rag-bench/retrieval.json
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from _common import build_index, print_table, resolve_from_repo, write_json

from rag.config import Settings
from rag.evaluation import (
    GoldQuestion,
    chunk_metrics,
    distinct,
    document_metrics,
    load_gold,
    quoted_facts,
    run_eval,
    squash_whitespace,
)
from rag.pipeline import RagPipeline
from rag.retrieval import dense_search

SETS = {"multihop": "multihop-rag-dev", "realtimeqa": "realtimeqa-gold-dev"}
COLUMNS = (  # (set, summary part, metric)
    ("multihop", "chunk", "hits@10"), ("multihop", "chunk", "mrr@10"), ("multihop", "chunk", "map@10"),
    ("multihop", "document", "recall@10"), ("realtimeqa", "document", "recall@10"),
    ("realtimeqa", "document", "mrr@10"), ("realtimeqa", "document", "ndcg@10"),
)
FIRST_STAGE = {"source_queries": False, "rerank_depth": 0}
AS_CUT = {"part_min_terms": 0, "distinct_articles": 0}  # sub-queries exactly as the question is cut


@dataclass(frozen=True)
class Row:
    name: str
    index: dict[str, Any] = field(default_factory=dict)  # settings that change the index
    params: dict[str, Any] = field(default_factory=dict)  # RetrievalParams overrides
    dates: bool = True
    learned: bool = False


TITLES: dict[str, Any] = {"embed_titles": True}
ROWS = (
    Row("baseline (RRF k=60, 200-token chunks)", {"embed_titles": False}, FIRST_STAGE | {"rrf_k": 60},
        dates=False),
    Row("+ RRF k=20", {"embed_titles": False}, FIRST_STAGE, dates=False),
    Row("+ titles embedded", TITLES, FIRST_STAGE, dates=False),
    Row("+ source sub-queries", TITLES, {"rerank_depth": 0} | AS_CUT, dates=False),
    Row("+ re-ranking", TITLES, AS_CUT, dates=False),
    Row("+ short parts ask the whole question", TITLES, {"distinct_articles": 0}, dates=False),
    Row("+ distinct articles first (default without dates)", TITLES, {}, dates=False),
    Row("+ as-of day, recency prior (default)", TITLES, {}),
    Row("alt: chunks 128/32", TITLES | {"chunk_tokens": 128, "chunk_overlap": 32}, {}),
    Row("alt: chunks 250/50", TITLES | {"chunk_tokens": 250, "chunk_overlap": 50}, {}),
    Row("alt: first stage only, RRF", TITLES, FIRST_STAGE, dates=False),
    Row("alt: first stage only, weighted 0.3", TITLES, FIRST_STAGE | {"fusion": "weighted", "dense_weight": 0.3},
        dates=False),
    Row("alt: first stage only, weighted 0.5", TITLES, FIRST_STAGE | {"fusion": "weighted", "dense_weight": 0.5},
        dates=False),
    Row("alt: first stage only, weighted 0.7", TITLES, FIRST_STAGE | {"fusion": "weighted", "dense_weight": 0.7},
        dates=False),
    Row("alt: first stage only, learned (2-fold)", TITLES, FIRST_STAGE, dates=False, learned=True),
    Row("alt: weighted 0.3, all stages", TITLES, {"fusion": "weighted", "dense_weight": 0.3}),
    Row("alt: first stage only, dense", TITLES, FIRST_STAGE | {"fusion": "dense"}, dates=False),
    Row("alt: first stage only, BM25", TITLES, FIRST_STAGE | {"fusion": "bm25"}, dates=False),
    Row("alt: at most 1 chunk per article", TITLES, {"per_doc": 1}),
    Row("alt: at most 2 chunks per article", TITLES, {"per_doc": 2}),
    Row("alt: near-duplicates folded", TITLES, {"collapse_duplicates": True}),
    Row("alt: + sentence embeddings, top 20", TITLES, {"sentence_rerank": 20}),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--eval-dir", default="../shared/eval", help="folder holding the two dev sets")
    parser.add_argument("--bench-dir", type=Path, default=Path("/tmp/rag-bench"), help="where indexes are kept")
    parser.add_argument("--rows", default="", help="comma-separated row numbers to run (default: all)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the results as JSON here")
    return parser.parse_args(argv)


def index_name(name: str, index: dict[str, Any]) -> str:
    size = index.get("chunk_tokens", 200), index.get("chunk_overlap", 40)
    return f"{name}-{'t' if index.get('embed_titles') else 'n'}{size[0]}-{size[1]}"


# -- learned fusion ---------------------------------------------------------------------------


def _candidates(pipeline: RagPipeline, question: str, pool: int = 50) -> tuple[list[int], np.ndarray]:
    """First-stage candidate rows and their features: dense cosine, BM25 over the best
    BM25, and the reciprocal ranks in each list (0 when absent)."""
    snapshot = pipeline.snapshot()
    dense = dense_search(snapshot, pipeline.embedder.embed_query(question), pool)
    lexical = snapshot.lexical.search(question, pool)
    rows = list(dict.fromkeys([r for r, _ in dense] + [r for r, _ in lexical]))
    d_score = dict(dense)
    d_rank = {r: i for i, (r, _) in enumerate(dense, start=1)}
    top = max((s for _, s in lexical), default=1.0) or 1.0
    b_score = {r: s / top for r, s in lexical}
    b_rank = {r: i for i, (r, _) in enumerate(lexical, start=1)}
    feats = np.asarray([
        [d_score.get(r, 0.0), b_score.get(r, 0.0),
         60.0 / (60 + d_rank[r]) if r in d_rank else 0.0, 60.0 / (60 + b_rank[r]) if r in b_rank else 0.0]
        for r in rows
    ], dtype=np.float64)
    return rows, feats


def _fit_logistic(x: np.ndarray, y: np.ndarray, steps: int = 2000, lr: float = 0.5) -> np.ndarray:
    """Weights (bias last) of an L2-regularised logistic regression, by gradient descent."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(xb.shape[1])
    positive = max(y.mean(), 1e-6)
    sample = np.where(y > 0, 0.5 / positive, 0.5 / max(1 - positive, 1e-6))  # balance the classes
    for _ in range(steps):
        p = 1 / (1 + np.exp(-xb @ w))
        w -= lr * ((xb.T @ (sample * (p - y))) / len(y) + 1e-3 * w)
    return w


def learned_fusion(pipeline: RagPipeline, questions: list[GoldQuestion]) -> dict[str, Any]:
    """Document and chunk metrics of a ranking by learned weights, two-fold over questions."""
    snapshot = pipeline.snapshot()
    squashed: dict[str, str] = {}
    data = []
    for q in questions:
        rows, feats = _candidates(pipeline, q.question)
        facts = quoted_facts(pipeline, q, squashed)
        if facts:
            squashed_facts = [squash_whitespace(f) for f in facts]
            relevant = [any(f in squash_whitespace(snapshot.chunks[r].text) for f in squashed_facts) for r in rows]
        else:
            relevant = [snapshot.chunks[r].doc_id in q.gold_docs for r in rows]
        data.append((q, rows, feats, np.asarray(relevant, dtype=np.float64), facts))
    document: list[dict[str, float]] = []
    chunk: list[dict[str, float]] = []
    for fold in (0, 1):
        train = [d for i, d in enumerate(data) if i % 2 != fold]
        test = [d for i, d in enumerate(data) if i % 2 == fold]
        w = _fit_logistic(np.vstack([d[2] for d in train]), np.concatenate([d[3] for d in train]))
        for q, rows, feats, _, facts in test:
            order = np.argsort(-(feats @ w[:-1]), kind="stable")
            ranked = [rows[i] for i in order]
            if q.gold_docs:
                document.append(document_metrics(distinct([snapshot.chunks[r].doc_id for r in ranked]), q.gold_docs))
            if facts:
                chunk.append(chunk_metrics([snapshot.chunks[r].text for r in ranked], facts))
    def mean(ms: list[dict[str, float]]) -> dict[str, Any]:
        return {"questions": len(ms)} | {k: round(statistics.fmean(m[k] for m in ms), 4) for k in (ms[0] if ms else {})}
    return {"document": mean(document), "chunk": mean(chunk)}


# -- running -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    eval_dir = resolve_from_repo(args.eval_dir)
    wanted = {int(n) for n in args.rows.split(",") if n.strip()} if args.rows else set(range(1, len(ROWS) + 1))
    questions = {name: load_gold(eval_dir / folder / "queries.jsonl") for name, folder in SETS.items()}
    pipelines: dict[str, RagPipeline] = {}
    embedder = None
    results: list[dict[str, Any]] = []
    for number, row in enumerate(ROWS, start=1):
        if number not in wanted:
            continue
        summary: dict[str, Any] = {}
        for name, folder in SETS.items():
            key = index_name(name, row.index)
            if key not in pipelines:
                settings = Settings(index_dir=args.bench_dir / key, **row.index)
                pipelines[key] = RagPipeline(settings, embedder=embedder)
                build_index(pipelines[key], eval_dir / folder / "corpus.jsonl", rebuild=False)
                embedder = pipelines[key].embedder
            pipeline = pipelines[key]
            default = RagPipeline(pipeline.settings, embedder=pipeline.embedder).retrieval_params
            pipeline.retrieval_params = dataclasses.replace(default, **row.params)
            if row.learned:
                summary[name] = learned_fusion(pipeline, [q for q in questions[name] if q.gold_docs])
            else:
                evaluated = run_eval(pipeline, questions[name], depth=50, question_dates=row.dates)
                summary[name] = evaluated.summary
            print(f"  {number:2d}. {row.name}: {name} done", file=sys.stderr, flush=True)
        results.append({"row": number, "name": row.name, "index": row.index, "params": row.params,
                        "question_dates": row.dates, "summary": summary})

    headers = ["retriever", *(f"{'MH' if s == 'multihop' else 'RTQA'} {'chunk' if p == 'chunk' else 'doc'} {m}"
                              for s, p, m in COLUMNS)]
    table = [[r["name"], *(_cell(r["summary"][s][p].get(m)) for s, p, m in COLUMNS)] for r in results]
    print()
    print_table(headers, table)
    if args.json:
        write_json(args.json, {"rows": results})
    return 0


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    sys.exit(main())
