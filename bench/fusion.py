#!/usr/bin/env python
"""Document-level retrieval quality of each fusion method on a news-QA dev set.

The eval directory holds ``corpus.jsonl`` (records ``id, title, source, published_at,
url, text``) and ``queries.jsonl`` (records ``id, question, evidence: [{doc_id, fact}]``).
The corpus is indexed with the library's default settings (only ``index_dir`` differs)
in a scratch directory outside the repository; an existing index there is reused when
it was built with the same model and chunking from exactly the same documents.

For every fusion method (dense only, BM25 only, RRF with ``rrf_k`` 60, and weighted
fusion with dense weights 0.3 / 0.5 / 0.7) each query retrieves ``--k`` passages
(chunks), which are collapsed to a ranked list of distinct documents in order of first
appearance. Reported per method:

* ``R@n``: fraction of a query's gold documents among its first n distinct documents,
  averaged over queries (n = 1, 5, 10, 20);
* ``MRR@10``: reciprocal rank of the first gold document within the first 10 distinct
  documents (0 when none), averaged over queries;
* ``docs``: mean number of distinct documents the ``--k`` passages came from (R@20 is
  a lower bound for queries with fewer than 20);
* ``med ms``: median wall time of one ``RagPipeline.search`` call (query embedding
  included), measured in process.

Reproduce (from the repository root)::

    .venv/bin/python bench/fusion.py
    .venv/bin/python bench/fusion.py --json /tmp/rag-bench/fusion.json

``RAG_*`` environment variables and a ``.env`` file are read as usual by ``Settings``;
the effective configuration is printed with the results.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from _common import REPO_ROOT, build_index, print_table, resolve_from_repo, write_json

from rag.config import Settings
from rag.pipeline import RagPipeline

DEFAULT_EVAL_DIR = "../shared/eval/realtimeqa-gold-dev"
DEFAULT_INDEX = Path("/tmp/rag-bench/realtimeqa-index")
RECALL_AT = (1, 5, 10, 20)
MRR_AT = 10


@dataclass(frozen=True)
class Method:
    name: str
    fusion: str
    dense_weight: float | None = None


METHODS = (
    Method("dense", "dense"),
    Method("bm25", "bm25"),
    Method("rrf (k=60)", "rrf"),
    Method("weighted 0.3", "weighted", 0.3),
    Method("weighted 0.5", "weighted", 0.5),
    Method("weighted 0.7", "weighted", 0.7),
)


@dataclass(frozen=True)
class Query:
    id: str
    question: str
    gold: frozenset[str]


@dataclass
class MethodResult:
    method: str
    fusion: str
    dense_weight: float | None
    recall: dict[str, float]
    mrr_at_10: float
    mean_distinct_docs: float
    median_query_ms: float


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "eval_dir", nargs="?", default=DEFAULT_EVAL_DIR,
        help=f"directory with corpus.jsonl and queries.jsonl; relative paths are taken from the "
             f"repository root (default: {DEFAULT_EVAL_DIR})",
    )
    parser.add_argument("--index", type=Path, default=DEFAULT_INDEX,
                        help=f"scratch index directory, outside the repository (default: {DEFAULT_INDEX})")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the index even if it matches")
    parser.add_argument("--k", type=int, default=50,
                        help="passages (chunks) retrieved per query before collapsing to documents "
                             "(1-100, default: 50)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the results as JSON here")
    return parser.parse_args(argv)


def load_queries(path: Path) -> list[Query]:
    queries = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            record = json.loads(line)
            gold = frozenset(str(e["doc_id"]) for e in record.get("evidence", []) if e.get("doc_id"))
            if gold:
                queries.append(Query(str(record["id"]), str(record["question"]), gold))
    return queries


def distinct_docs(doc_ids: list[str]) -> list[str]:
    """Document ids in order of first appearance."""
    return list(dict.fromkeys(doc_ids))


def evaluate(pipeline: RagPipeline, method: Method, queries: list[Query], k: int) -> MethodResult:
    recalls: dict[int, list[float]] = {n: [] for n in RECALL_AT}
    reciprocal_ranks: list[float] = []
    doc_counts: list[int] = []
    times_ms: list[float] = []
    for query in queries:
        started = time.perf_counter()
        passages = pipeline.search(query.question, k)
        times_ms.append((time.perf_counter() - started) * 1000)
        ranked = distinct_docs([p.doc_id for p in passages])
        doc_counts.append(len(ranked))
        for n in RECALL_AT:
            recalls[n].append(len(query.gold & set(ranked[:n])) / len(query.gold))
        first = next((rank for rank, d in enumerate(ranked[:MRR_AT], start=1) if d in query.gold), None)
        reciprocal_ranks.append(1.0 / first if first else 0.0)
    return MethodResult(
        method=method.name,
        fusion=method.fusion,
        dense_weight=method.dense_weight,
        recall={f"R@{n}": statistics.fmean(values) for n, values in recalls.items()},
        mrr_at_10=statistics.fmean(reciprocal_ranks),
        mean_distinct_docs=statistics.fmean(doc_counts),
        median_query_ms=statistics.median(times_ms),
    )


def show_table(results: list[MethodResult]) -> None:
    headers = ["method", *(f"R@{n}" for n in RECALL_AT), f"MRR@{MRR_AT}", "docs", "med ms"]
    rows = [
        [r.method, *(f"{r.recall[f'R@{n}']:.3f}" for n in RECALL_AT), f"{r.mrr_at_10:.3f}",
         f"{r.mean_distinct_docs:.1f}", f"{r.median_query_ms:.1f}"]
        for r in results
    ]
    print_table(headers, rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    eval_dir = resolve_from_repo(args.eval_dir)
    corpus, queries_path = eval_dir / "corpus.jsonl", eval_dir / "queries.jsonl"
    for path in (corpus, queries_path):
        if not path.is_file():
            print(f"error: {path} not found", file=sys.stderr)
            return 2
    index_dir = args.index.expanduser().resolve()
    if index_dir.is_relative_to(REPO_ROOT):
        print(f"error: the index {index_dir} must be outside the repository {REPO_ROOT}", file=sys.stderr)
        return 2
    if not 1 <= args.k <= 100:
        print("error: --k must be between 1 and 100", file=sys.stderr)
        return 2

    queries = load_queries(queries_path)
    base = RagPipeline(Settings(index_dir=index_dir))
    ingest = build_index(base, corpus, args.rebuild)
    snapshot = base.snapshot()
    s = base.settings
    config = {
        "eval_dir": str(eval_dir),
        "index_dir": str(index_dir),
        "model": snapshot.manifest["model"]["name"],
        "bf16": base.embedder.bf16,
        "chunk_tokens": s.chunk_tokens,
        "chunk_overlap": s.chunk_overlap,
        "candidates": s.candidates,
        "rrf_k": s.rrf_k,
        "k_passages": args.k,
        "queries": len(queries),
        "gold_docs_per_query": round(statistics.fmean(len(q.gold) for q in queries), 2),
        "documents": len(snapshot.documents),
        "chunks": len(snapshot.chunks),
    }
    missing = sorted({d for q in queries for d in q.gold} - snapshot.documents.keys())
    if missing:
        print(f"warning: {len(missing)} gold doc ids are not in the index: {missing[:5]}", file=sys.stderr)

    results = []
    for method in METHODS:
        overrides: dict[str, Any] = {"fusion": method.fusion, "rrf_k": 60}
        if method.dense_weight is not None:
            overrides["dense_weight"] = method.dense_weight
        pipeline = RagPipeline(s.model_copy(update=overrides), embedder=base.embedder)
        pipeline.search(queries[0].question, args.k)  # warm up: load the snapshot, first-call overheads
        results.append(evaluate(pipeline, method, queries, args.k))

    print()
    print("configuration: " + ", ".join(f"{key}={value}" for key, value in config.items()))
    if ingest["reused"]:
        print(f"ingest: reused {ingest['generation']} ({ingest['chunks']} chunks); no embedding this run")
    else:
        print(f"ingest: {ingest['chunks']} chunks in {ingest['seconds']} s "
              f"= {ingest['chunks_per_s']} chunks/s")
    print()
    show_table(results)

    if args.json:
        payload = {"config": config, "ingest": ingest, "results": [asdict(r) for r in results]}
        write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
