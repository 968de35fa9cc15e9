#!/usr/bin/env python
"""Resident memory and disk size of a served index as it grows (by default 20k, 200k and
1M chunks), from synthetic articles ingested through the real pipeline.

Embedding a real corpus of 1M chunks would take most of a day on this machine, so these
indexes are synthetic, with only the embedding model replaced:

* articles: made-up text whose words are drawn from the word frequencies of the RealTime QA
  corpus (``--shape-corpus``), in sentences of 8-32 words and paragraphs of 2-5 sentences,
  with article lengths drawn from that corpus's lengths, and three invented names per article
  (2% of its words), so that the vocabulary keeps growing with the corpus as a real one does.
  Article ``i`` is the same in every size (seeded by ``--seed`` and ``i``);
* ``RagPipeline.add(articles, rebuild=True)`` does the rest for real: chunking with the real
  tokenizer, BM25 tokens and index, the chunk table, documents and the FAISS index (exact flat
  below ``RAG_ANN_THRESHOLD``, 150k chunks; IVF-SQ8 plus the exact ``vectors.npy`` from there on);
* the embedder is a stand-in with the real one's identity, tokenizer and dimension whose
  passage vectors are clustered random unit vectors shaped like real ones (``bench/ann.py``'s
  generator) instead of the model's. Queries are embedded by the real model.

So sizes on disk and in memory are those of a real corpus of that many chunks; what differs is
the wording, not the amount. Each index is built once, by a subprocess of its own (whose peak
RSS is reported), into ``--bench-dir`` as ``synthetic-<chunks>-t<tokens>-<overlap>`` (with
``-ann<threshold>`` when ``--ann-threshold`` is not the default) and reused while its recipe,
settings and model are unchanged. Then a real ``rag serve`` (``bench/load.py``'s ``rag_server``)
is started on it, and reported are: seconds until /health reports the index loaded; the
server's VmRSS once loaded, after one search and after ``--searches`` more (whose p50 is given);
its peak (VmHWM); bytes of the current generation on disk, in all and per chunk; and the build's
time by stage.

Building takes memory: the builder grew by about 22 KB per chunk at 2k-20k chunks (19 KB with
``--batch-chunks``, whose last commit still holds the whole index), so 1M chunks need some 20 GB,
more than a 24 GB machine has to spare while anything else runs. Before each build the previous
one's figures are scaled up (time and memory), and a size whose estimated peak would not fit in
the memory available then is skipped and reported so (``--ignore-memory-check`` builds it
anyway). The 1M build itself should take 10-15 minutes on 2 cores (about 0.5 ms per chunk at
20k, plus training the IVF index).

Reproduce (from the repository root)::

    .venv/bin/python bench/scale.py --sizes 20000 200000 1000000 --out /tmp/rag-bench/scale.json

``bench/suite.py --parts memory`` runs the same measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from _common import (
    CallTimes,
    latency_stats,
    machine_and_versions,
    print_table,
    resolve_from_repo,
    timed_calls,
    write_json,
)
from latency import load_questions
from load import clean_env, rag_server, rss_kib

import rag.lexical
import rag.pipeline
from rag.chunking import chunk_article
from rag.config import Settings
from rag.embedding import Embedder
from rag.pipeline import RagPipeline
from rag.store import READABLE_VERSIONS
from rag.types import Article

# Part of every cache key: a change to how synthetic articles or vectors are made gets new indexes.
RECIPE_VERSION = 1
DEFAULT_SHAPE_CORPUS = "../shared/eval/realtimeqa-gold-dev/corpus.jsonl"
DEFAULT_QUESTIONS = "../shared/eval/realtimeqa-gold-dev/queries.jsonl"
DEFAULT_SIZES = (20_000, 200_000, 1_000_000)
# The settings every synthetic index is built with, and ``rag serve`` runs with (bench/load.py's
# rag_server removes RAG_* variables): the defaults, whatever this process's environment says.
DEFAULTS = Settings.model_construct()
META = "synthetic.json"  # beside the generations; the store leaves files it does not know alone
_WORD = re.compile(r"[A-Za-z]+(?:'[a-z]+)?|\d+")
_SYLLABLES = ("ba", "ko", "mir", "ten", "va", "dor", "sel", "qui", "bra", "nor", "zel", "tam", "rik", "os",
              "pel", "gan", "shu", "fi", "mar", "lek", "ro", "dun", "ask", "vel", "tor", "ila", "wen", "gro",
              "haz", "ut", "pry", "sol", "ent", "cal", "dree", "mo", "nix", "ur", "jas", "fen")


# -- synthetic articles -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CorpusShape:
    """What synthetic articles copy from a real corpus: word frequencies, lengths, sources."""

    words: np.ndarray  # object array of words, most frequent first
    cumulative: np.ndarray  # cumulative word probabilities, ending at 1.0
    chars_per_word: float
    lengths: np.ndarray  # characters of each real article's text
    sources: tuple[str, ...]  # one per real article, so a random pick follows their frequencies


def corpus_shape(path: Path) -> CorpusShape:
    counts: Counter[str] = Counter()
    lengths: list[int] = []
    sources: list[str] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            record = json.loads(line)
            text = str(record.get("text") or "")
            counts.update(_WORD.findall(text))
            lengths.append(len(text))
            sources.append(str(record.get("source") or "unknown"))
    if not counts:
        raise ValueError(f"no words in {path}")
    ranked = counts.most_common()
    cumulative = np.cumsum(np.array([n for _, n in ranked], dtype=np.float64))
    total_words = float(cumulative[-1])
    return CorpusShape(np.array([w for w, _ in ranked], dtype=object), cumulative / total_words,
                       sum(lengths) / total_words, np.array(lengths), tuple(sources))


def _name(rng: np.random.Generator) -> str:
    return "".join(_SYLLABLES[i] for i in rng.integers(0, len(_SYLLABLES), int(rng.integers(3, 5)))).capitalize()


def synthetic_article(shape: CorpusShape, seed: int, number: int) -> Article:
    """Article ``number`` of the synthetic corpus: the same for the same shape and seed."""
    rng = np.random.default_rng([seed, number])
    target = int(shape.lengths[rng.integers(len(shape.lengths))])
    n = int(target / shape.chars_per_word * 1.2) + 64
    words = shape.words[np.searchsorted(shape.cumulative, rng.random(n), side="right")]
    names = [_name(rng) for _ in range(3)]
    for at in np.flatnonzero(rng.random(n) < 0.02):
        words[at] = names[int(rng.integers(3))]
    for at in np.flatnonzero(rng.random(n) < 0.07):
        words[at] = f"{words[at]},"
    sentence_words = rng.integers(8, 33, n // 8 + 1)
    paragraph_sentences = rng.integers(2, 6, n // 16 + 1)
    paragraphs: list[str] = []
    sentences: list[str] = []
    used = size = s = 0
    while size < target and used + sentence_words[s] <= n:
        picked = list(words[used:used + sentence_words[s]])
        used += sentence_words[s]
        s += 1
        picked[0] = picked[0][:1].upper() + picked[0][1:]
        picked[-1] = picked[-1].rstrip(",")
        sentences.append(" ".join(picked) + ".")
        size += sum(map(len, picked)) + len(picked)
        if len(sentences) >= paragraph_sentences[len(paragraphs)]:
            paragraphs.append(" ".join(sentences))
            sentences = []
    if sentences:
        paragraphs.append(" ".join(sentences))
    title_words = [w.rstrip(",") for w in shape.words[np.searchsorted(shape.cumulative, rng.random(
        int(rng.integers(5, 12))), side="right")]]
    title = " ".join([names[0], *title_words])
    day = date(2020, 1, 1) + timedelta(days=int(rng.integers(0, 1500)))
    return Article(id=f"syn-{number:07d}", title=title, text="\n\n".join(paragraphs),
                   url=f"https://synthetic.example/articles/{number}", published_at=day.isoformat(),
                   source=shape.sources[int(rng.integers(len(shape.sources)))])


class StandInEmbedder(Embedder):
    """The real embedder (model identity, tokenizer, dimension, window, query encoding)
    except that passages get vectors from ``pool`` instead of the model's, in order: the first
    passages it is given get the first rows, and so on."""

    def __init__(self, pool: np.ndarray):
        super().__init__()
        self.pool = pool
        self.handed = 0

    def embed_passages(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        if self.handed + len(texts) > len(self.pool):
            wanted = self.handed + len(texts)
            raise RuntimeError(f"the pool holds {len(self.pool):,} vectors; {wanted:,} were asked for")
        vectors = np.array(self.pool[self.handed:self.handed + len(texts)], dtype=np.float32)
        self.handed += len(texts)
        return vectors


def vector_pool(n: int, dim: int, seed: int, path: Path) -> np.ndarray:
    """``n`` clustered unit vectors shaped like real chunk embeddings (``bench/ann.py``'s
    generator, ten chunks to an article), saved at ``path`` and returned memory-mapped."""
    from ann import corpus as clustered_vectors  # here: ann imports faiss, which must not load before torch

    vectors, _ = clustered_vectors(np.random.default_rng(seed), n, dim, 0)
    np.save(path, vectors, allow_pickle=False)
    del vectors
    return np.load(path, mmap_mode="r", allow_pickle=False)


# -- building (in a subprocess of its own) --------------------------------------------------------


def index_name(size: int, settings: Settings, ann_threshold: int) -> str:
    suffix = "" if ann_threshold == DEFAULTS.ann_threshold else f"-ann{ann_threshold}"
    return f"synthetic-{size}-t{settings.chunk_tokens}-{settings.chunk_overlap}{suffix}"


def recipe(size: int, shape_path: Path, seed: int, ann_threshold: int, model_sha256: str) -> dict[str, Any]:
    """What decides a synthetic index: an index built from another recipe is built again."""
    s = DEFAULTS
    return {"recipe_version": RECIPE_VERSION, "index_formats": list(READABLE_VERSIONS), "size": size, "seed": seed,
            "ann_threshold": ann_threshold,
            "chunk_tokens": s.chunk_tokens, "chunk_overlap": s.chunk_overlap, "embed_titles": s.embed_titles,
            "model_sha256": model_sha256,
            "shape_corpus": {"name": shape_path.name, "bytes": shape_path.stat().st_size}}


def build(size: int, index_dir: Path, shape_path: Path, seed: int, ann_threshold: int,
          batch_chunks: int) -> dict[str, Any]:
    """Build the synthetic index of about ``size`` chunks into ``index_dir`` (replacing it) and
    return its build figures. Run with a clean environment: the settings are the defaults.

    All articles go into one ``add(rebuild=True)``, as one ``rag ingest --rebuild`` would, unless
    ``batch_chunks`` is given: then they are added by commits of about that many chunks (the
    first a rebuild), which bounds the memory of chunking and tokenising to one batch but not
    that of the last commit, which holds the whole index (at 20k chunks the peak was 3% lower,
    the time 15% longer). Every commit then trains the IVF index afresh (``ann_retrain_growth``
    1.0), so the last one leaves the index that a single commit would."""
    started = time.perf_counter()
    shape = corpus_shape(shape_path)
    probe = Embedder()
    dim = probe.dimension  # loads the tokenizer and model, so that no stage below pays for it
    s = DEFAULTS.model_copy(update={"index_dir": index_dir, "ann_threshold": ann_threshold})
    # How many articles give ``size`` chunks: counted on the first ones (up to 1,000), the rest
    # estimated from their mean (the pipeline chunks them again; chunking twice would double its cost).
    counted = 0
    for articles in range(1, 1001):
        article = synthetic_article(shape, seed, articles - 1)
        counted += len(chunk_article(article, probe.count_tokens, s.chunk_tokens, s.chunk_overlap))
        if counted >= size:
            break
    per_article = counted / articles
    articles += max(0, round((size - counted) / per_article))
    log(f"  {articles:,} articles for {size:,} chunks (the first {min(articles, 1000):,} had {per_article:.1f} each)")
    work = index_dir.parent / f".{index_dir.name}.building"
    pool_path = index_dir.parent / f".{index_dir.name}.vectors.npy"
    shutil.rmtree(work, ignore_errors=True)
    began = time.perf_counter()
    embedder = StandInEmbedder(vector_pool(round(size * 1.2) + 1_000, dim, seed, pool_path))
    embedder.model = probe.model  # the loaded model and tokenizer, shared
    prepared = time.perf_counter()
    rss_before = (rss_kib(os.getpid()) or 0) / 1024  # now, not the peak: making the pool peaked higher
    log(f"  {len(embedder.pool):,} stand-in vectors in {prepared - began:.0f} s; adding the articles "
        f"{f'in commits of about {batch_chunks:,} chunks' if batch_chunks else 'in one commit'}")

    settings = s.model_copy(update={"index_dir": work, "ann_retrain_growth": 1.0})
    pipeline = RagPipeline(settings, embedder=embedder)
    times = CallTimes()
    generating = 0.0
    commits = 0
    per_batch = max(1, round(batch_chunks / per_article)) if batch_chunks else articles
    # BM25 tokenising is rag.lexical.tokenize, which versions of rag.pipeline call either by
    # their own name for it or through rag.lexical; both are timed, and a call is counted once.
    tokenizers = [m for m in (rag.lexical, rag.pipeline) if callable(getattr(m, "tokenize", None))]
    try:
        with ExitStack() as stack:
            stack.enter_context(timed_calls(embedder, ["count_tokens", "embed_passages"], times))
            stack.enter_context(timed_calls(pipeline.store, ["commit"], times))
            stack.enter_context(timed_calls(pipeline, ["snapshot"], times))
            for module in tokenizers:
                stack.enter_context(timed_calls(module, ["tokenize"], times))
            for first in range(0, articles, per_batch):
                generate = time.perf_counter()
                docs = [synthetic_article(shape, seed, i) for i in range(first, min(articles, first + per_batch))]
                generating += time.perf_counter() - generate
                report = pipeline.add(docs, rebuild=first == 0)
                commits += 1
                log(f"  commit {commits}: {report.chunks:,} chunks, {time.perf_counter() - prepared:.0f} s, "
                    f"RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB at most so far")
        ingest_s = time.perf_counter() - prepared
        manifest = pipeline.store.read_manifest()
        del docs, pipeline
        if index_dir.exists():
            remove_synthetic(index_dir)
        work.rename(index_dir)
    finally:
        pool_path.unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)
    stages = {"generate articles": generating, "tokenizer (count_tokens)": times.seconds["count_tokens"],
              "BM25 tokens": times.seconds.get("tokenize", 0.0),
              "commit (FAISS, BM25, files, fsync)": times.seconds["commit"],
              "loading the previous commit": times.seconds["snapshot"]}
    stages["chunking and the rest of add"] = ingest_s - sum(stages.values())
    stages = {"stand-in vectors (pool)": prepared - began, **stages}
    return {"articles": report.documents, "chunks": report.chunks, "commits": commits, "batch_chunks": batch_chunks,
            "estimate_chunks_per_article": per_article, "faiss": manifest.get("faiss"),
            "builder_rss_before_ingest_mib": round(rss_before, 1),
            "seconds": round(time.perf_counter() - started, 1), "ingest_s": round(ingest_s, 1),
            "stages_s": {k: round(v, 2) for k, v in stages.items()},
            "builder_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def remove_synthetic(index_dir: Path) -> None:
    """Remove a synthetic index this script built, and nothing else."""
    if not (index_dir / META).is_file() and any(index_dir.iterdir()):
        raise RuntimeError(f"{index_dir} exists but was not built by bench/scale.py; remove it or pick --bench-dir")
    shutil.rmtree(index_dir)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cached_meta(index_dir: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The metadata of the synthetic index at ``index_dir`` if it was built from recipe ``key``."""
    try:
        meta = json.loads((index_dir / META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("recipe") == key and (index_dir / "CURRENT").is_file() else None


def ensure_synthetic(size: int, bench_dir: Path, shape_path: Path, seed: int, ann_threshold: int,
                     model_sha256: str, rebuild: bool = False,
                     batch_chunks: int = 0) -> tuple[Path, dict[str, Any], bool]:
    """The synthetic index of ``size`` chunks: reused if its recipe matches (and not ``rebuild``),
    built otherwise (by a subprocess). Returns its directory, its metadata and whether it was
    built now. The recipe does not cover every change to rag's files: the metadata names the
    commit it was built from, and ``rebuild`` builds afresh."""
    key = recipe(size, shape_path, seed, ann_threshold, model_sha256)
    index_dir = bench_dir / index_name(size, DEFAULTS, ann_threshold)
    meta = None if rebuild else cached_meta(index_dir, key)
    if meta is not None:
        return index_dir, meta, False
    bench_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "build", str(size), str(index_dir),
               "--shape-corpus", str(shape_path), "--seed", str(seed), "--ann-threshold", str(ann_threshold),
               "--batch-chunks", str(batch_chunks)]
    done = subprocess.run(command, env=clean_env(), stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"building the synthetic index of {size:,} chunks failed (exit status {done.returncode})")
    meta = {"recipe": key, "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "git_commit": machine_and_versions()["git_commit"],
            "build": json.loads(done.stdout.strip().splitlines()[-1])}
    (index_dir / META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return index_dir, meta, True


# -- measuring ------------------------------------------------------------------------------------


def status_kib(pid: int, field: str) -> int | None:
    """A ``/proc/<pid>/status`` figure in KiB (VmHWM, ...); VmRSS is ``load.rss_kib``."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def generation_bytes(index_dir: Path) -> dict[str, int]:
    """Bytes of each file of the index's current generation, by path inside it."""
    generation = index_dir / (index_dir / "CURRENT").read_text(encoding="utf-8").strip()
    return {str(p.relative_to(generation)): p.stat().st_size for p in sorted(generation.rglob("*")) if p.is_file()}


def _mib(kib: int | None) -> float | None:
    return round(kib / 1024, 1) if kib is not None else None


def measure_served(index_dir: Path, workdir: Path, questions: list[str], searches: int,
                   settings: dict[str, str] | None = None) -> dict[str, Any]:
    """Start ``rag serve`` on ``index_dir``; its load time, RSS and search latency."""
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with rag_server(index_dir, workdir, timeout=3600, settings=settings) as (process, base_url):
        ready_s = time.perf_counter() - started
        loaded = rss_kib(process.pid)
        times: list[float] = []
        with httpx.Client(base_url=base_url, timeout=600, trust_env=False) as client:
            health = client.get("/health").json()
            for n in range(searches + 1):
                began = time.perf_counter()
                response = client.get("/search", params={"q": questions[n % len(questions)]})
                if response.status_code != 200:
                    raise RuntimeError(f"GET /search answered {response.status_code}: {response.text[:300]}")
                if n == 0:
                    first_ms = (time.perf_counter() - began) * 1000
                    after_one = rss_kib(process.pid)
                else:
                    times.append((time.perf_counter() - began) * 1000)
        after_all = rss_kib(process.pid)
        peak = status_kib(process.pid, "VmHWM")
    files = generation_bytes(index_dir)
    chunks = int(health.get("chunks") or 0)
    return {"index": str(index_dir), "documents": health.get("documents"), "chunks": chunks,
            "ready_s": round(ready_s, 1), "rss_mib": {"loaded": _mib(loaded), "after_one_search": _mib(after_one),
                                                      f"after_{searches + 1}_searches": _mib(after_all),
                                                      "peak": _mib(peak)},
            "first_search_ms": round(first_ms, 1), "search": latency_stats(times),
            "disk_bytes": sum(files.values()), "disk_bytes_per_chunk": round(sum(files.values()) / max(chunks, 1)),
            "files": files}


def mem_available_mib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


# A builder's memory growth and time per chunk, measured with one 20k-chunk commit here; used
# until a build of this run gives its own figures.
BUILD_KIB_PER_CHUNK = 22.0
BUILD_BASE_MIB = 550.0
BUILD_SECONDS_PER_CHUNK = 0.001


def build_memory_estimate(size: int, previous: dict[str, Any] | None) -> float:
    """MiB a builder of ``size`` chunks is expected to peak at: the base and growth per chunk of
    the previous build scaled linearly (or figures measured here, without one)."""
    if previous is None or "builder_rss_before_ingest_mib" not in previous:
        return BUILD_BASE_MIB + BUILD_KIB_PER_CHUNK * size / 1024
    base = previous["builder_rss_before_ingest_mib"]
    grown = previous["builder_peak_rss_mib"] - base
    return float(base + grown * size / max(previous["chunks"], 1))


def measure_sizes(sizes: Sequence[int], bench_dir: Path, shape_path: Path, seed: int, ann_threshold: int,
                  questions: list[str], searches: int, workdir: Path, rebuild: bool = False,
                  batch_chunks: int = 0, check_memory: bool = True) -> list[dict[str, Any]]:
    """Build (or reuse) and serve each synthetic size in turn, smallest first. Before a build,
    its time and peak memory are estimated from the previous one; a size whose estimated peak
    exceeds the memory available now is skipped (unless not ``check_memory``), so that the
    build does not push other processes out."""
    model_sha256 = Embedder().source_sha256
    results: list[dict[str, Any]] = []
    previous: dict[str, Any] | None = None
    for size in sorted(sizes):
        key = recipe(size, shape_path, seed, ann_threshold, model_sha256)
        cached = not rebuild and cached_meta(bench_dir / index_name(size, DEFAULTS, ann_threshold), key) is not None
        if not cached:
            need, available = build_memory_estimate(size, previous), mem_available_mib()
            per_chunk = previous["seconds"] / max(previous["chunks"], 1) if previous else BUILD_SECONDS_PER_CHUNK
            print(f"synthetic {size:,}: building (estimated, linear in the chunks: {per_chunk * size / 60:.1f} min "
                  f"or more, peak memory {need / 1024:.1f} GiB; {(available or float('nan')) / 1024:.1f} GiB "
                  "available now)", flush=True)
            if check_memory and available is not None and need > available - 1024:
                reason = (f"skipped: the build is expected to need {need / 1024:.1f} GiB and "
                          f"{available / 1024:.1f} GiB are available (--ignore-memory-check builds it anyway)")
                print(f"  {reason}", flush=True)
                results.append({"kind": "synthetic", "target_chunks": size, "skipped": reason})
                continue
        index_dir, meta, built = ensure_synthetic(size, bench_dir, shape_path, seed, ann_threshold, model_sha256,
                                                  rebuild, batch_chunks)
        previous = meta["build"]
        b = meta["build"]
        print(f"  {'built' if built else 'reused'} {index_dir}: {b['chunks']:,} chunks of {b['articles']:,} articles, "
              f"built in {b['seconds']:.0f} s (builder peak RSS {b['builder_peak_rss_mib']:,.0f} MiB) "
              f"at {meta.get('built_at')} from commit {meta.get('git_commit')}", flush=True)
        print("  build stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in b["stages_s"].items()), flush=True)
        served = measure_served(index_dir, workdir / f"serve-{size}", questions, searches)
        print(f"  served: ready in {served['ready_s']:.0f} s, RSS {served['rss_mib']}", flush=True)
        results.append({"kind": "synthetic", "target_chunks": size, "built_now": built, "build": meta["build"],
                        **served})
    return results


def row_label(row: dict[str, Any]) -> str:
    return str(row["label"]) if "label" in row else f"synthetic {row['target_chunks']:,}"


def show_memory(rows: list[dict[str, Any]]) -> None:
    """The memory table; RSS per chunk is the growth over the smallest synthetic index."""
    for r in rows:
        if "skipped" in r:
            print(f"{row_label(r)}: {r['skipped']}")
    rows = [r for r in rows if "skipped" not in r]
    if not rows:
        return
    synthetic = [r for r in rows if r["kind"] == "synthetic"]
    base = synthetic[0] if synthetic else None
    table = []
    for r in rows:
        rss = r["rss_mib"]
        per_chunk = "-"
        if base is not None and r is not base and r["kind"] == "synthetic" and r["chunks"] > base["chunks"]:
            grown = (rss["after_one_search"] - base["rss_mib"]["after_one_search"]) * 1024 * 1024
            per_chunk = f"{grown / (r['chunks'] - base['chunks']):,.0f}"
        table.append([row_label(r), f"{r['chunks']:,}",
                      f"{r['ready_s']:.0f}", f"{rss['loaded']:,.0f}", f"{rss['after_one_search']:,.0f}",
                      f"{rss['peak']:,.0f}", per_chunk, f"{r['disk_bytes'] / 2**20:,.0f}",
                      f"{r['disk_bytes_per_chunk']:,}", f"{r['search']['p50_ms']:.0f}",
                      f"{r['build']['seconds'] / 60:.1f}" if "build" in r else "-"])
    print_table(["index", "chunks", "ready s", "RSS loaded MiB", "RSS 1 search MiB", "peak MiB",
                 "RSS B/chunk growth", "disk MiB", "disk B/chunk", "search p50 ms", "build min"], table)
    kinds = sorted({name.split("/")[0] for r in rows for name in r["files"]})
    print()
    print_table(["index", *[f"{k} B/chunk" for k in kinds]],
                [[row_label(r),
                  *[f"{sum(v for n, v in r['files'].items() if n.split('/')[0] == k) / max(r['chunks'], 1):,.0f}"
                    for k in kinds]] for r in rows])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["build"]:  # the builder subprocess of ensure_synthetic: figures as JSON on stdout
        builder = argparse.ArgumentParser(prog="scale.py build")
        builder.add_argument("size", type=int)
        builder.add_argument("index", type=Path)
        builder.add_argument("--shape-corpus", type=Path, required=True)
        builder.add_argument("--seed", type=int, default=0)
        builder.add_argument("--ann-threshold", type=int, required=True)
        builder.add_argument("--batch-chunks", type=int, required=True)
        b = builder.parse_args(argv[1:])
        print(json.dumps(build(b.size, b.index, b.shape_corpus, b.seed, b.ann_threshold, b.batch_chunks)))
        return 0

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES),
                        help="chunks per synthetic index (default: 20000 200000 1000000)")
    parser.add_argument("--bench-dir", type=Path, default=Path("/tmp/rag-bench"),
                        help="where synthetic indexes are cached (default: /tmp/rag-bench)")
    parser.add_argument("--shape-corpus", default=DEFAULT_SHAPE_CORPUS,
                        help="the real corpus whose words and lengths synthetic articles copy")
    parser.add_argument("--questions-file", default=DEFAULT_QUESTIONS, help="questions to search with")
    parser.add_argument("--searches", type=int, default=10, help="timed searches per index after the first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ann-threshold", type=int, default=DEFAULTS.ann_threshold,
                        help="RAG_ANN_THRESHOLD for the builds (lower it to try the IVF index on a small size)")
    parser.add_argument("--rebuild", action="store_true", help="build again even if a cached index matches")
    parser.add_argument("--batch-chunks", type=int, default=0,
                        help="build by commits of about this many chunks (default: 0, one commit)")
    parser.add_argument("--ignore-memory-check", action="store_true",
                        help="build a size even when its estimated peak memory exceeds what is available")
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if min(args.sizes) < 1 or args.searches < 1 or args.batch_chunks < 0:
        print("error: --sizes and --searches must be positive", file=sys.stderr)
        return 2
    questions = load_questions(resolve_from_repo(args.questions_file), 10_000)
    machine = machine_and_versions()
    print(json.dumps(machine))
    workdir = Path(tempfile.mkdtemp(prefix="rag-bench-scale-"))
    try:
        rows = measure_sizes(args.sizes, args.bench_dir.expanduser().resolve(), resolve_from_repo(args.shape_corpus),
                             args.seed, args.ann_threshold, questions, args.searches, workdir, args.rebuild,
                             args.batch_chunks, not args.ignore_memory_check)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    show_memory(rows)
    if args.out:
        write_json(args.out, {"machine": machine, "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
