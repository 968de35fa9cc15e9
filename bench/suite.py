#!/usr/bin/env python
"""One benchmark run over the RealTime QA corpus: ingest, queries in process and over HTTP,
and memory and disk as the index grows. Each part can be run alone (``--parts``).

* ``ingest``: ``RagPipeline.ingest([corpus], rebuild=True)`` into a fresh index, ``--repeat``
  times (3 by default, 1 with ``--limit``), with the model loaded and a few articles ingested
  untimed first. Reported per run and as median [min-max]: articles and chunks per second end to
  end, and where the time went: in the embedding model (every ``embed_*`` call of the embedder,
  its own tokenising included), in its tokenizer as chunking calls it (``count_tokens``), and in
  everything else (reading, cleaning, chunking, BM25, FAISS, writing and syncing the files).
* ``queries``: ``pipeline.search(q, k)`` and ``pipeline.ask(q, k, generator="extractive")`` in
  process, ``--queries`` calls each (the questions of ``--questions-file``, repeated in turn when
  there are fewer) after ``--warmup`` untimed ones; p50/p95/p99/mean in ms. The re-ranker keeps
  per-snapshot data about rows it has read, so a repeated question costs less: the p50 of
  questions' first calls and of repeated ones are also given.
* ``http``: a real ``rag serve`` on 127.0.0.1 (``bench/load.py``'s ``rag_server``), warmed up,
  then ``GET /search?q=..&k=..`` and ``POST /ask`` (extractive) each with 1 and with 16
  concurrent clients (``--clients``; one thread and one httpx client each, on the same
  machine) for ``--http-seconds`` (or until ``--http-requests``): p50/p95/p99 and successful
  requests per second by route and client count, errors counted and shown, and the server's
  peak RSS. The server gets this process's ``RAG_*`` variables, so both run the same settings.
* ``memory``: the server's resident memory and the index's bytes on disk at ``--sizes`` chunks
  (20k, 200k, 1M), from synthetic indexes built through the real pipeline with stand-in
  vectors and cached under ``--bench-dir`` (``bench/scale.py`` says how); the real index of the
  query parts, when there is one, is measured the same way for comparison.

Both query parts run with ``RAG_CACHE_SIZE=0`` unless ``--cache-size`` says otherwise: the
questions repeat (RealTime QA's dev split has 52), and remembered results would time the cache,
not the search.

The index for the query parts is the last one ``ingest`` built, else ``--index DIR``, else
``<bench-dir>/realtimeqa-t<tokens>-<overlap>`` (built if it does not hold the corpus). The
configuration (settings that matter, threads, CPUs, package versions, git commit) is printed
first and written with the results. Timings are wall times on a shared machine: compare ratios.

Reproduce (from the repository root; estimated at 1.5 hours on 2 cores: 45-60 minutes for the
three ingest runs, 5 for the HTTP part, 15-20 for the memory part, most of it building the 1M
synthetic index, which is cached for later runs; that build needs about 20 GB of memory, and is
skipped, and reported so, when the machine has less to spare)::

    .venv/bin/python bench/suite.py --out /tmp/rag-bench/suite.json

A quick run of every part::

    .venv/bin/python bench/suite.py --limit 50 --queries 10 --http-seconds 5 --sizes 20000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from _common import (
    REPO_ROOT,
    CallTimes,
    build_index,
    first_articles,
    latency_stats,
    machine_and_versions,
    print_table,
    resolve_from_repo,
    timed_calls,
    write_json,
)
from latency import load_questions
from load import Sample, rag_server, sample_rss
from scale import DEFAULT_SIZES, measure_served, measure_sizes, show_memory

from rag.config import Settings
from rag.embedding import DEFAULT_MODEL_NAME, Embedder, packaged_model_path
from rag.pipeline import RagPipeline

PARTS = ("ingest", "queries", "http", "memory")
DEFAULT_CORPUS = "../shared/eval/realtimeqa-gold-dev/corpus.jsonl"
DEFAULT_QUESTIONS = "../shared/eval/realtimeqa-gold-dev/queries.jsonl"
EMBED_METHODS = ("embed_passages", "embed_query", "embed_sentences")  # the model's work
# Settings recorded with the results (those this version of rag has).
SHOWN_SETTINGS = ("embed_backend", "embed_batch_size", "embed_threads", "chunk_tokens", "chunk_overlap",
                  "embed_titles", "top_k", "candidates", "fusion", "rrf_k", "source_queries", "rerank_depth",
                  "max_chunks_per_article", "answer_passages", "answer_candidates", "max_answer_sentences",
                  "min_support", "cache_size", "ann_threshold", "ann_nlist", "ann_nprobe")
ROUTES = ("GET /search", "POST /ask")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="what to run (default: all)")
    parser.add_argument("--corpus", default=DEFAULT_CORPUS, help=f"a .jsonl corpus (default: {DEFAULT_CORPUS})")
    parser.add_argument("--limit", type=int, default=None, help="only the first N articles (a quick run)")
    parser.add_argument("--repeat", type=int, default=None, help="ingest runs (default: 3, or 1 with --limit)")
    parser.add_argument("--index", type=Path, default=None,
                        help="an existing index for the query parts (e.g. /tmp/rag-bench/realtimeqa-t200-40)")
    parser.add_argument("--questions-file", default=DEFAULT_QUESTIONS, help="questions (.jsonl or one per line)")
    parser.add_argument("--queries", type=int, default=100, help="timed calls per operation in process")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls (and HTTP requests) per operation first")
    parser.add_argument("--k", type=int, default=None, help="passages per search or answer (default: RAG_TOP_K)")
    parser.add_argument("--cache-size", type=int, default=0,
                        help="RAG_CACHE_SIZE for the query parts, in process and in the server (default: 0, so "
                             "that a repeated question is answered afresh rather than remembered)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16], help="concurrent HTTP clients")
    parser.add_argument("--http-seconds", type=float, default=60, help="seconds per route and client count")
    parser.add_argument("--http-requests", type=int, default=None,
                        help="stop a route and client count after this many requests (if before --http-seconds)")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES), help="chunks, memory part")
    parser.add_argument("--searches", type=int, default=10, help="timed searches per index in the memory part")
    parser.add_argument("--bench-dir", type=Path, default=Path("/tmp/rag-bench"),
                        help="cache of built indexes (default: /tmp/rag-bench)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic corpora")
    parser.add_argument("--rebuild-synthetic", action="store_true",
                        help="build the synthetic indexes again even if cached ones match their recipe")
    parser.add_argument("--batch-chunks", type=int, default=0,
                        help="build synthetic indexes by commits of about this many chunks (default: 0, one commit)")
    parser.add_argument("--ignore-memory-check", action="store_true",
                        help="build a synthetic size even when its estimated peak memory exceeds what is available")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (indexes, server logs)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here (after every part)")
    args = parser.parse_args(argv)
    positive = [args.queries, args.http_seconds, *args.clients, *args.sizes, args.searches, args.batch_chunks + 1,
                *(n for n in (args.limit, args.repeat, args.http_requests) if n is not None)]
    if min(positive) <= 0 or args.warmup < 0 or args.cache_size < 0:
        parser.error("counts, sizes and seconds must be positive (--warmup and --cache-size: not negative)")
    if args.k is not None and not 1 <= args.k <= 100:
        parser.error("--k must be between 1 and 100")
    if args.repeat is None:
        args.repeat = 1 if args.limit else 3
    return args


def spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3)}


# -- ingest ---------------------------------------------------------------------------------------


def run_ingest(settings: Settings, embedder: Embedder, corpus: Path, repeat: int, workdir: Path) -> dict[str, Any]:
    """Ingest ``corpus`` into a fresh index ``repeat`` times; the last index is kept."""
    started = time.perf_counter()
    embedder.embed_query("warm up")
    embedder.count_tokens(["warm up"])
    model_load_s = time.perf_counter() - started
    warm = RagPipeline(settings.model_copy(update={"index_dir": workdir / "ingest-warm-up"}), embedder=embedder)
    few = first_articles(corpus, 3, workdir / "warm-up.jsonl") if corpus.suffix == ".jsonl" else REPO_ROOT / "seeds"
    warm.ingest([few], rebuild=True)  # first-use costs (imports, BM25, FAISS) out of the timed runs
    shutil.rmtree(workdir / "ingest-warm-up", ignore_errors=True)

    runs: list[dict[str, Any]] = []
    index_dir = workdir / "ingest-0"
    with timed_calls(embedder, [*EMBED_METHODS, "count_tokens"], CallTimes()) as times:
        for run in range(1, repeat + 1):
            shutil.rmtree(index_dir, ignore_errors=True)  # only the last run's index is kept
            index_dir = workdir / f"ingest-{run}"
            pipeline = RagPipeline(settings.model_copy(update={"index_dir": index_dir}), embedder=embedder)
            times.reset()
            began = time.perf_counter()
            report = pipeline.ingest([corpus], rebuild=True)
            wall = time.perf_counter() - began
            for problem in report.problems:
                print(f"  skipped {problem}", file=sys.stderr)
            model = sum(times.seconds[name] for name in EMBED_METHODS)
            tokenizer = times.seconds["count_tokens"]
            runs.append({"run": run, "articles": report.documents, "chunks": report.chunks,
                         "chunks_embedded": report.chunks_embedded, "problems": len(report.problems),
                         "wall_s": round(wall, 2), "articles_per_s": round(report.documents / wall, 2),
                         "chunks_per_s": round(report.chunks_embedded / wall, 2), "model_s": round(model, 2),
                         "tokenizer_s": round(tokenizer, 2), "other_s": round(wall - model - tokenizer, 2),
                         "outside_model_share": round((wall - model) / wall, 4),
                         "embed_calls": dict(times.calls)})
            print(f"  ingest run {run}/{repeat}: {wall:.1f} s, {report.chunks_embedded / wall:.1f} chunks/s",
                  flush=True)
    summary = {key: spread([r[key] for r in runs])
               for key in ("wall_s", "articles_per_s", "chunks_per_s", "model_s", "tokenizer_s", "other_s",
                           "outside_model_share")}
    return {"corpus": str(corpus), "model_load_s": round(model_load_s, 2), "runs": runs, "summary": summary,
            "index": str(index_dir), "threads_after": threads()}


def show_ingest(result: dict[str, Any]) -> None:
    def row(name: str, r: dict[str, Any]) -> list[str]:
        return [name, f"{r['wall_s']:.1f}", f"{r['articles_per_s']:.2f}", f"{r['chunks_per_s']:.1f}",
                f"{r['model_s']:.1f}", f"{r['tokenizer_s']:.1f}", f"{r['other_s']:.1f}",
                f"{100 * r['outside_model_share']:.1f}"]

    first = result["runs"][0]
    print(f"ingest of {result['corpus']}: {first['articles']:,} articles, {first['chunks']:,} chunks "
          f"(model loaded first, in {result['model_load_s']:.1f} s)")
    rows = [row(f"run {r['run']}", r) for r in result["runs"]]
    s = result["summary"]
    rows.append(row("median", {k: v["median"] for k, v in s.items()}))
    rows.append(["min-max", *(f"{s[k]['min']:.{p}f}-{s[k]['max']:.{p}f}" for k, p in (
        ("wall_s", 1), ("articles_per_s", 2), ("chunks_per_s", 1), ("model_s", 1), ("tokenizer_s", 1),
        ("other_s", 1))), f"{100 * s['outside_model_share']['min']:.1f}-{100 * s['outside_model_share']['max']:.1f}"])
    print_table(["", "wall s", "articles/s", "chunks/s", "model s", "tokenizer s", "other s", "outside model %"],
                rows)


# -- queries in process ---------------------------------------------------------------------------


def run_queries(pipeline: RagPipeline, questions: list[str], calls: int, warmup: int, k: int) -> dict[str, Any]:
    """``calls`` timed searches, then ``calls`` timed answers, after ``warmup`` of each. Calls
    whose question was asked before (in the warm-up or earlier in the same loop) are also
    reported apart: the re-ranker keeps data about rows it has read, so they cost less."""
    pipeline.generator("extractive")
    warm = questions[-warmup:] if warmup else []  # from the end: the timed calls start at the top
    for question in warm:
        pipeline.search(question, k)
        pipeline.ask(question, k, generator="extractive")
    asked = [questions[i % len(questions)] for i in range(calls)]
    seen = set(warm)
    repeated = []
    for question in asked:
        repeated.append(question in seen)
        seen.add(question)
    search_ms: list[float] = []
    for question in asked:
        began = time.perf_counter()
        pipeline.search(question, k)
        search_ms.append((time.perf_counter() - began) * 1000)
    ask_ms: list[float] = []
    parts: dict[str, list[float]] = {"retrieve": [], "generate": []}
    abstained = 0
    for question in asked:
        began = time.perf_counter()
        answer = pipeline.ask(question, k, generator="extractive")
        ask_ms.append((time.perf_counter() - began) * 1000)
        for name, values in parts.items():
            values.append(answer.timings_ms[name])
        abstained += answer.abstained

    def split(samples: list[float]) -> dict[str, dict[str, float]]:
        return {"first": latency_stats([t for t, r in zip(samples, repeated, strict=True) if not r]),
                "repeated": latency_stats([t for t, r in zip(samples, repeated, strict=True) if r])}

    return {"calls": calls, "distinct_questions": len(set(asked)), "warmup": warmup, "k": k,
            "search": latency_stats(search_ms), "ask": latency_stats(ask_ms),
            "ask_retrieve": latency_stats(parts["retrieve"]), "ask_generate": latency_stats(parts["generate"]),
            "by_question_seen": {"search": split(search_ms), "ask": split(ask_ms)},
            "abstained": abstained,
            "threads_after": threads()}


def stats_row(name: str, s: dict[str, float]) -> list[str]:
    return [name, str(s["n"]), *(f"{s[key]:.1f}" for key in ("p50_ms", "p95_ms", "p99_ms", "mean_ms", "min_ms",
                                                               "max_ms"))]


def show_queries(result: dict[str, Any]) -> None:
    print(f"in process: {result['calls']} calls per operation over {result['distinct_questions']} questions, "
          f"k={result['k']}, after {result['warmup']} warm-up calls; ask abstained {result['abstained']} times")
    print_table(["operation", "n", "p50 ms", "p95 ms", "p99 ms", "mean ms", "min ms", "max ms"],
                [stats_row(name, result[key]) for name, key in (
                    ("search", "search"), ("ask (extractive)", "ask"), ("  ask: retrieve", "ask_retrieve"),
                    ("  ask: generate", "ask_generate"))])
    seen = result["by_question_seen"]

    def p50(stats: dict[str, float]) -> str:
        return f"{stats['p50_ms']:.1f} (n={stats['n']})" if stats["n"] else "- (n=0)"

    print("p50 ms for a question's first call / for repeated questions: " + "; ".join(
        f"{op} {p50(seen[op]['first'])} / {p50(seen[op]['repeated'])}" for op in ("search", "ask")))


# -- queries over HTTP ----------------------------------------------------------------------------


class Budget:
    """At most ``limit`` requests in all (no limit: None), shared by the clients of a run."""

    def __init__(self, limit: int | None):
        self.left = limit
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.left is None:
                return True
            if self.left <= 0:
                return False
            self.left -= 1
            return True


def request(client: httpx.Client, route: str, question: str, k: int) -> httpx.Response:
    if route == "GET /search":
        return client.get("/search", params={"q": question, "k": k})
    return client.post("/ask", json={"question": question, "k": k, "generator": "extractive"})


def http_client(base_url: str, route: str, questions: list[str], k: int, start: float, seconds: float,
                budget: Budget, offset: int) -> list[Sample]:
    """One client: ``route`` with the questions in turn until the time or the budget is spent."""
    samples: list[Sample] = []
    i = offset
    with httpx.Client(base_url=base_url, timeout=300, trust_env=False) as client:
        while (now := time.perf_counter()) - start < seconds and budget.take():
            error = None
            try:
                response = request(client, route, questions[i % len(questions)], k)
                status = response.status_code
                if status != 200:
                    error = f"{status}: {response.text[:300]}"
            except httpx.HTTPError as exc:
                status, error = 0, f"{type(exc).__name__}: {exc}"
            samples.append(Sample(route, status, (time.perf_counter() - now) * 1000, now - start, error))
            i += 1
    return samples


def http_cell(base_url: str, pid: int, route: str, clients: int, questions: list[str], k: int,
              seconds: float, limit: int | None) -> dict[str, Any]:
    rss: list[tuple[float, int]] = []
    stop = threading.Event()
    start = time.perf_counter()
    sampler = threading.Thread(target=sample_rss, args=(pid, start, stop, rss), daemon=True)
    sampler.start()
    budget = Budget(limit)
    try:
        with ThreadPoolExecutor(max_workers=clients, thread_name_prefix="suite-client") as pool:
            step = max(1, len(questions) // clients)
            futures = [pool.submit(http_client, base_url, route, questions, k, start, seconds, budget, n * step)
                       for n in range(clients)]
            samples = [s for f in futures for s in f.result()]
        wall = time.perf_counter() - start
    finally:
        stop.set()
        sampler.join(timeout=5)
    ok = [s.ms for s in samples if s.status == 200]
    errors = Counter(s.error or "" for s in samples if s.status != 200)
    return {"route": route, "clients": clients, "requests": len(samples), "errors": sum(errors.values()),
            "error_examples": [{"error": e, "count": n} for e, n in errors.most_common(5)],
            **latency_stats(ok), "per_s": round(len(ok) / wall, 2), "wall_s": round(wall, 2),
            "server_rss_mib_max": round(max(kib for _, kib in rss) / 1024, 1) if rss else None}


def run_http(index_dir: Path, workdir: Path, questions: list[str], args: argparse.Namespace, k: int) -> dict[str, Any]:
    cells: list[dict[str, Any]] = []
    warmup_errors: list[str] = []
    started = time.perf_counter()
    environment = server_settings(args.cache_size)
    with rag_server(index_dir, workdir, settings=environment) as (process, base_url):
        ready_s = time.perf_counter() - started
        with httpx.Client(base_url=base_url, timeout=300, trust_env=False) as client:
            for i in range(args.warmup):
                for route in ROUTES:
                    response = request(client, route, questions[-1 - i % len(questions)], k)
                    if response.status_code != 200:
                        warmup_errors.append(f"{route} {response.status_code}: {response.text[:300]}")
        for clients in args.clients:
            for route in ROUTES:
                cell = http_cell(base_url, process.pid, route, clients, questions, k, args.http_seconds,
                                 args.http_requests)
                print(f"  {route} with {clients} client(s): {cell['requests']} requests, {cell['errors']} errors, "
                      f"p50 {cell['p50_ms']:.0f} ms, {cell['per_s']:.1f}/s", flush=True)
                cells.append(cell)
    return {"index": str(index_dir), "server_environment": environment, "ready_s": round(ready_s, 1),
            "seconds_per_cell": args.http_seconds,
            "requests_per_cell_limit": args.http_requests, "k": k, "warmup_requests_per_route": args.warmup,
            "warmup_errors": warmup_errors, "cells": cells}


def show_http(result: dict[str, Any]) -> None:
    limit = result["requests_per_cell_limit"]
    print(f"over HTTP (rag serve ready in {result['ready_s']:.0f} s; {result['seconds_per_cell']:g} s per row"
          f"{'' if limit is None else f' or {limit} requests'}), k={result['k']}, "
          f"server environment {result['server_environment']}:")
    rows = [[c["route"], str(c["clients"]), str(c["requests"]), str(c["errors"]), f"{c['p50_ms']:.1f}",
             f"{c['p95_ms']:.1f}", f"{c['p99_ms']:.1f}", f"{c['max_ms']:.1f}", f"{c['per_s']:.2f}",
             f"{c['server_rss_mib_max']:,.0f}" if c["server_rss_mib_max"] else "-"] for c in result["cells"]]
    print_table(["route", "clients", "requests", "errors", "p50 ms", "p95 ms", "p99 ms", "max ms", "ok per s",
                 "server RSS max MiB"], rows)
    for error in result["warmup_errors"]:
        print(f"  warm-up error: {error}")
    for c in result["cells"]:
        for e in c["error_examples"]:
            print(f"  {c['route']} x{c['clients']}: {e['count']} x {e['error']}")


# -- the run --------------------------------------------------------------------------------------


def configuration(settings: Settings, embedder: Embedder, k: int, args: argparse.Namespace) -> dict[str, Any]:
    shown = {name: getattr(settings, name) for name in SHOWN_SETTINGS if name in Settings.model_fields}
    return {
        "parts": args.parts, "corpus": args.corpus, "limit": args.limit,
        "model": DEFAULT_MODEL_NAME if embedder.model_path == packaged_model_path() else str(embedder.model_path),
        "bf16": embedder.bf16, "embed_backend_resolved": embedder.backend, "k": k, "generator": "extractive",
        "settings": shown, "query_cache_size": args.cache_size,
        "rag_environment": {key: value for key, value in os.environ.items() if key.startswith("RAG_")},
        **machine_and_versions(),
    }


def threads() -> dict[str, int]:
    """Threads torch and FAISS use now, for those already loaded. Neither is imported here: the
    order the library loads them in decides them (torch first, as the library does, and
    ``torch.set_num_threads`` also sets FAISS's OpenMP threads), so a benchmark must not change it."""
    found = {}
    if "torch" in sys.modules:
        found["torch"] = int(sys.modules["torch"].get_num_threads())
    if "faiss" in sys.modules:
        found["faiss"] = int(sys.modules["faiss"].omp_get_max_threads())
    return found


def query_settings(settings: Settings, index_dir: Path, cache_size: int) -> Settings:
    """The settings of the in-process query pipeline (versions of rag without a cache have no such setting)."""
    update: dict[str, Any] = {"index_dir": index_dir}
    if "cache_size" in Settings.model_fields:
        update["cache_size"] = cache_size
    return settings.model_copy(update=update)


def server_settings(cache_size: int) -> dict[str, str]:
    """The RAG_* variables of the ``rag serve`` processes: this process's own, so that they run
    with the settings of the in-process parts, and RAG_CACHE_SIZE=``cache_size``."""
    return {key: value for key, value in os.environ.items() if key.startswith("RAG_")} | {
        "RAG_CACHE_SIZE": str(cache_size)}


def query_index(args: argparse.Namespace, settings: Settings, embedder: Embedder, corpus: Path,
                from_ingest: Path | None) -> Path:
    """The index the query parts use: ``--index``, the ingest part's, or a cached build."""
    if args.index is not None:
        return args.index.expanduser().resolve()
    if from_ingest is not None:
        return from_ingest
    name = f"realtimeqa-t{settings.chunk_tokens}-{settings.chunk_overlap}"
    name += "" if settings.embed_titles else "-notitles"
    name += "" if embedder.backend == "torch" else f"-{embedder.backend}"
    name += f"-first{args.limit}" if args.limit else ""
    index_dir = args.bench_dir.expanduser().resolve() / name
    build_index(RagPipeline(settings.model_copy(update={"index_dir": index_dir}), embedder=embedder), corpus,
                rebuild=False)
    return index_dir


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings()
    # Built as the pipeline builds it (the model loads on first use): for --index, with the backend
    # that index was built with; else as for a new index (RAG_EMBED_BACKEND, by default onnx).
    where = args.index.expanduser().resolve() if args.index is not None else Path(tempfile.mkdtemp()) / "new"
    embedder = RagPipeline(settings.model_copy(update={"index_dir": where})).embedder
    k = args.k if args.k is not None else settings.top_k
    questions = load_questions(resolve_from_repo(args.questions_file), 100_000)
    if not questions:
        print("error: no questions", file=sys.stderr)
        return 2
    config = configuration(settings, embedder, k, args)
    print("configuration: " + json.dumps(config))
    if config["rag_environment"] and "memory" in args.parts:
        print("note: RAG_* variables are set; the synthetic indexes of the memory part are built and served with "
              "the default settings all the same (but for RAG_ANN_THRESHOLD)", file=sys.stderr)
    results: dict[str, Any] = {"configuration": config}

    def save() -> None:
        if args.out:
            write_json(args.out, results)

    workdir = Path(tempfile.mkdtemp(prefix="rag-bench-suite-"))
    try:
        corpus = resolve_from_repo(args.corpus)
        if args.limit:
            corpus = first_articles(corpus, args.limit, workdir / f"corpus-first{args.limit}.jsonl")
        from_ingest: Path | None = None
        if "ingest" in args.parts:
            print(f"\n== ingest ({args.repeat} run{'s' if args.repeat > 1 else ''})", flush=True)
            results["ingest"] = run_ingest(settings, embedder, corpus, args.repeat, workdir)
            from_ingest = Path(results["ingest"]["index"])
            show_ingest(results["ingest"])
            save()
        index_dir: Path | None = None
        if {"queries", "http"} & set(args.parts) or (args.index is not None or from_ingest is not None):
            index_dir = query_index(args, settings, embedder, corpus, from_ingest)
        if "queries" in args.parts and index_dir is not None:
            print(f"\n== queries in process on {index_dir}", flush=True)
            pipeline = RagPipeline(query_settings(settings, index_dir, args.cache_size), embedder=embedder)
            results["queries"] = run_queries(pipeline, questions, args.queries, args.warmup, k)
            show_queries(results["queries"])
            save()
        if "http" in args.parts and index_dir is not None:
            print(f"\n== queries over HTTP on {index_dir}", flush=True)
            results["http"] = run_http(index_dir, workdir, questions, args, k)
            show_http(results["http"])
            save()
        if "memory" in args.parts:
            print("\n== memory and disk", flush=True)
            rows: list[dict[str, Any]] = []
            if index_dir is not None:
                real = measure_served(index_dir, workdir / "serve-real", questions, args.searches,
                                      server_settings(args.cache_size))
                rows.append({"kind": "real", "label": f"real: {index_dir.name}", **real})
            rows.extend(measure_sizes(args.sizes, args.bench_dir.expanduser().resolve(),
                                      resolve_from_repo(args.corpus), args.seed, settings.ann_threshold,
                                      questions, args.searches, workdir, rebuild=args.rebuild_synthetic,
                                      batch_chunks=args.batch_chunks, check_memory=not args.ignore_memory_check))
            results["memory"] = rows
            print()
            show_memory(rows)
            save()
    finally:
        if args.keep:
            print(f"\nkept the scratch directory {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    http = results.get("http")
    failed = sum(c["errors"] for c in http["cells"]) + len(http["warmup_errors"]) if http else 0
    if failed:
        print(f"error: {failed} HTTP requests failed (see above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
