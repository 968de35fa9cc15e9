#!/usr/bin/env python
"""In-process latency of ``RagPipeline.search`` and ``RagPipeline.ask``, plus ingest throughput.

By default the seed corpus (``seeds/``) is indexed into a fresh temporary directory
outside the repository with the library's default settings (only ``index_dir``
differs); ``--corpus PATH`` indexes any file or directory the reader accepts instead,
and ``--index DIR`` measures an index that already exists (nothing is ingested then).

Measured:

* model load: loading the embedding model (done before ingest, so it is not counted there);
* ingest: ``RagPipeline.ingest(rebuild=True)`` of the corpus (chunking, embedding, BM25,
  commit), reported as seconds and chunks per second;
* ``search``: one ``search(question, k)`` call (query embedding, dense + BM25 retrieval,
  fusion), wall time;
* ``ask``: one ``ask(question, k)`` call with the extractive generator (retrieval plus
  answer extraction), wall time, with the pipeline's own ``retrieve`` / ``generate`` split.

After ``--warmup`` untimed rounds, every round times ``search`` then ``ask`` for each of
the ``--questions`` questions; ``--repeat`` rounds give questions x repeat samples per
operation. Reported: median, p95 (linear interpolation), mean, min and max in ms.

Reproduce (from the repository root)::

    .venv/bin/python bench/latency.py
    .venv/bin/python bench/latency.py --index /tmp/rag-bench/realtimeqa-t200-40 \\
        --questions-file ../shared/eval/realtimeqa-gold-dev/queries.jsonl

``RAG_*`` environment variables and a ``.env`` file are read as usual by ``Settings``;
the effective configuration is printed with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import print_table, resolve_from_repo, write_json

from rag.config import Settings
from rag.pipeline import RagPipeline

DEFAULT_CORPUS = "seeds"
# About the seed article (Xiaomi entering banking); any questions work, these have answers there.
SEED_QUESTIONS = (
    "Who will be vice president of Xiaomi's financial services unit?",
    "Which companies did Xiaomi partner with for Mi Credit?",
    "Where did Zhao Weixing work before joining Xiaomi?",
    "In which country was Xiaomi Mi Credit announced?",
    "Which technology companies have been approaching the financial system?",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--corpus", default=None,
                        help=f"file or directory to index into a temporary directory; relative paths are "
                             f"taken from the repository root (default: {DEFAULT_CORPUS})")
    source.add_argument("--index", type=Path, default=None,
                        help="use this existing index as it is instead of building one")
    parser.add_argument("--questions-file", type=Path, default=None,
                        help="questions to ask: .jsonl records with a 'question' field or a text file with "
                             "one question per line; relative paths are taken from the repository root "
                             "(default: five built-in questions about the seed article)")
    parser.add_argument("--questions", type=int, default=5, help="how many questions to use (default: 5)")
    parser.add_argument("--repeat", type=int, default=20,
                        help="timed rounds over the questions (default: 20)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default: 2)")
    parser.add_argument("--k", type=int, default=None, help="passages per call (default: Settings.top_k)")
    parser.add_argument("--generator", default="extractive", help="generator for ask (default: extractive)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary index and print its path")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the results as JSON here")
    return parser.parse_args(argv)


def load_questions(path: Path | None, limit: int) -> list[str]:
    if path is None:
        return list(SEED_QUESTIONS)[:limit]
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.suffix.lower() != ".jsonl":
        return lines[:limit]
    return [str(json.loads(line)["question"]) for line in lines[:limit]]


def summarise(samples_ms: list[float]) -> dict[str, float]:
    values = np.asarray(samples_ms, dtype=float)
    return {
        "n": len(samples_ms),
        "median_ms": float(np.median(values)),
        "p95_ms": float(np.percentile(values, 95)),
        "mean_ms": float(values.mean()),
        "min_ms": float(values.min()),
        "max_ms": float(values.max()),
    }


def show_table(stats: dict[str, dict[str, float]]) -> None:
    headers = ["operation", "n", "median ms", "p95 ms", "mean ms", "min ms", "max ms"]
    keys = ["n", "median_ms", "p95_ms", "mean_ms", "min_ms", "max_ms"]
    rows = [[name, *(f"{s[key]:.0f}" if key == "n" else f"{s[key]:.1f}" for key in keys)]
            for name, s in stats.items()]
    print_table(headers, rows)


def measure(pipeline: RagPipeline, questions: list[str], args: argparse.Namespace) -> dict[str, Any]:
    samples: dict[str, list[float]] = {"search": [], "ask": [], "ask: retrieve": [], "ask: generate": []}
    abstained = 0
    for round_no in range(args.warmup + args.repeat):
        timed = round_no >= args.warmup
        for question in questions:
            started = time.perf_counter()
            pipeline.search(question, args.k)
            searched = time.perf_counter()
            answer = pipeline.ask(question, args.k, generator=args.generator)
            asked = time.perf_counter()
            if timed:
                samples["search"].append((searched - started) * 1000)
                samples["ask"].append((asked - searched) * 1000)
                samples["ask: retrieve"].append(answer.timings_ms["retrieve"])
                samples["ask: generate"].append(answer.timings_ms["generate"])
                abstained += answer.abstained
    return {"stats": {name: summarise(values) for name, values in samples.items()}, "abstained": abstained}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.repeat < 1 or args.questions < 1 or args.warmup < 0:
        print("error: --repeat and --questions must be positive, --warmup not negative", file=sys.stderr)
        return 2
    questions_path = resolve_from_repo(args.questions_file) if args.questions_file else None
    questions = load_questions(questions_path, args.questions)
    if not questions:
        print("error: no questions", file=sys.stderr)
        return 2

    scratch: Path | None = None
    if args.index is not None:
        index_dir = args.index.expanduser().resolve()
    else:
        scratch = Path(tempfile.mkdtemp(prefix="rag-bench-latency-"))
        index_dir = scratch / "index"
    corpus = None if args.index is not None else resolve_from_repo(args.corpus or DEFAULT_CORPUS)

    try:
        pipeline = RagPipeline(Settings(index_dir=index_dir))
        started = time.perf_counter()
        pipeline.embedder.embed_query("load the model")
        model_load_s = time.perf_counter() - started

        ingest: dict[str, Any] | None = None
        if corpus is not None:
            report = pipeline.ingest([corpus], rebuild=True, progress=False)
            for problem in report.problems:
                print(f"skipped {problem}", file=sys.stderr)
            rate = report.chunks_embedded / report.seconds if report.seconds else 0.0
            ingest = {"corpus": str(corpus), "documents": report.documents, "chunks": report.chunks,
                      "seconds": round(report.seconds, 3), "chunks_per_s": round(rate, 2)}
        elif not pipeline.store.exists():
            print(f"error: no index at {index_dir}", file=sys.stderr)
            return 2

        started = time.perf_counter()
        snapshot = pipeline.snapshot()
        load_index_s = time.perf_counter() - started
        pipeline.generator(args.generator)
        result = measure(pipeline, questions, args)
    finally:
        if scratch is not None and not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)

    import torch

    s = pipeline.settings
    config = {
        "index_dir": f"{index_dir}{' (temporary, removed)' if scratch is not None and not args.keep else ''}",
        "model": snapshot.manifest["model"]["name"],
        "bf16": pipeline.embedder.bf16,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "documents": len(snapshot.documents),
        "chunks": len(snapshot.chunks),
        "chunk_tokens": s.chunk_tokens,
        "chunk_overlap": s.chunk_overlap,
        "candidates": s.candidates,
        "fusion": s.fusion,
        "k": args.k if args.k is not None else s.top_k,
        "answer_passages": s.answer_passages,
        "generator": args.generator,
        "questions": len(questions),
        "warmup_rounds": args.warmup,
        "timed_rounds": args.repeat,
    }
    print("configuration: " + ", ".join(f"{key}={value}" for key, value in config.items()))
    print(f"model load: {model_load_s:.2f} s; index load: {load_index_s:.2f} s")
    if ingest is not None:
        print(f"ingest of {ingest['corpus']}: {ingest['documents']} documents, {ingest['chunks']} chunks "
              f"in {ingest['seconds']:.2f} s = {ingest['chunks_per_s']:.1f} chunks/s (model already loaded)")
    print(f"ask abstained on {result['abstained']} of {result['stats']['ask']['n']} timed calls")
    print()
    show_table(result["stats"])
    if scratch is not None and args.keep:
        print(f"\nkept the index at {index_dir}")

    if args.json:
        payload = {"config": config, "model_load_s": round(model_load_s, 3),
                   "index_load_s": round(load_index_s, 3), "ingest": ingest, "questions": questions, **result}
        write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
