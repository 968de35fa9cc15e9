#!/usr/bin/env python
"""Answering and abstention of the extractive generator on MultiHop-RAG's dev split.

MultiHop-RAG (Tang and Yang, COLM 2024) has 609 news articles and, in the dev split,
639 questions; the 75 of type ``null_query`` have no answer in the corpus. For each
question the default pipeline retrieves passages and the extractive generator
answers or abstains. Reported:

* refusal recall: share of null queries on which it abstains;
* false refusals: share of answerable queries on which it abstains;
* refusal precision: share of abstentions that were on null queries;
* cited gold article: share of answered, answerable queries where at least one
  citation quotes one of the question's gold evidence articles;
* the same three refusal numbers for a sweep of ``RAG_MIN_SUPPORT`` thresholds,
  from the best sentence support of each question (one pass, no re-running).

The extractive generator quotes sentences, so the benchmark's answer accuracy (a short
entity, yes/no or a choice) is not reported here.

Reproduce (from the repository root)::

    .venv/bin/python bench/answers.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from _common import REPO_ROOT, build_index, resolve_from_repo

from rag.config import Settings
from rag.generators.extractive import ExtractiveGenerator
from rag.pipeline import RagPipeline

DEFAULT_EVAL_DIR = "../shared/eval/multihop-rag-dev"
DEFAULT_INDEX = Path("/tmp/rag-bench/multihop-t200-40")
THRESHOLDS = (0.30, 0.35, 0.40, 0.45, 0.50, 0.55, 0.60)


@dataclass(frozen=True)
class Outcome:
    null: bool
    abstained: bool
    best_support: float
    cited_gold: bool


def run(pipeline: RagPipeline, queries: list[dict[str, object]]) -> tuple[list[Outcome], list[float]]:
    generator = pipeline.generator("extractive")
    assert isinstance(generator, ExtractiveGenerator)
    outcomes, times = [], []
    for i, query in enumerate(queries, start=1):
        question = str(query["question"])
        started = time.perf_counter()
        answer = pipeline.ask(question)
        times.append((time.perf_counter() - started) * 1000)
        _, scores = generator.rank_sentences(question, answer.passages[: pipeline.settings.answer_passages])
        gold = {str(e["doc_id"]) for e in query.get("evidence", [])}  # type: ignore[attr-defined]
        outcomes.append(Outcome(
            null=query["type"] == "null_query",
            abstained=answer.abstained,
            best_support=float(scores.max()) if len(scores) else 0.0,
            cited_gold=any(c.doc_id in gold for c in answer.citations),
        ))
        if i % 50 == 0:
            print(f"  {i}/{len(queries)} questions", file=sys.stderr, flush=True)
    return outcomes, times


def refusal_numbers(outcomes: list[Outcome], abstains: list[bool]) -> tuple[float, float, float]:
    null = [a for o, a in zip(outcomes, abstains, strict=True) if o.null]
    answerable = [a for o, a in zip(outcomes, abstains, strict=True) if not o.null]
    abstained_null = sum(null)
    total_abstained = sum(abstains)
    recall = abstained_null / len(null) if null else 0.0
    false_refusals = sum(answerable) / len(answerable) if answerable else 0.0
    precision = abstained_null / total_abstained if total_abstained else 0.0
    return recall, false_refusals, precision


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("eval_dir", nargs="?", default=DEFAULT_EVAL_DIR)
    parser.add_argument("--index", type=Path, default=DEFAULT_INDEX, help="scratch index outside the repository")
    parser.add_argument("--limit", type=int, default=None, help="only the first N questions")
    args = parser.parse_args(argv)
    eval_dir = resolve_from_repo(args.eval_dir)
    index_dir = args.index.expanduser().resolve()
    if index_dir.is_relative_to(REPO_ROOT):
        print(f"error: the index {index_dir} must be outside the repository", file=sys.stderr)
        return 2
    with open(eval_dir / "queries.jsonl", encoding="utf-8") as fh:
        queries = [json.loads(line) for line in fh if line.strip()][: args.limit]

    pipeline = RagPipeline(Settings(index_dir=index_dir))
    build_index(pipeline, eval_dir / "corpus.jsonl", rebuild=False)
    outcomes, times = run(pipeline, queries)

    s = pipeline.settings
    print(f"\nconfiguration: questions={len(queries)} (null {sum(o.null for o in outcomes)}), "
          f"top_k={s.top_k}, answer_passages={s.answer_passages}, min_support={s.min_support}, "
          f"fusion={s.fusion}, chunk_tokens={s.chunk_tokens}, bf16={pipeline.embedder.bf16}")
    recall, false_refusals, precision = refusal_numbers(outcomes, [o.abstained for o in outcomes])
    answered = [o for o in outcomes if not o.null and not o.abstained]
    cited = statistics.fmean(o.cited_gold for o in answered) if answered else 0.0
    print(f"refusal recall (null queries abstained): {recall:.3f}")
    print(f"false refusals (answerable abstained):    {false_refusals:.3f}")
    print(f"refusal precision:                       {precision:.3f}")
    print(f"answered questions citing a gold article: {cited:.3f} of {len(answered)}")
    print(f"ask latency: median {statistics.median(times):.0f} ms, "
          f"p95 {statistics.quantiles(times, n=20)[-1]:.0f} ms")
    print("\nmin_support  refusal recall  false refusals  refusal precision")
    for t in THRESHOLDS:
        r, f, p = refusal_numbers(outcomes, [o.best_support < t for o in outcomes])
        print(f"{t:11.2f}  {r:14.3f}  {f:14.3f}  {p:17.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
