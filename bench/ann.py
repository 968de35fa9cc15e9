#!/usr/bin/env python
"""Which FAISS index for which corpus size: exact flat search against IVF with 8-bit
scalar quantisation (what ``rag.store`` builds at or above ``RAG_ANN_THRESHOLD``) and
HNSW, on synthetic 384-d vectors like the embedder's.

The vectors are a hierarchical Gaussian mixture (topics, articles, chunks; see
``corpus``) whose neighbour similarities match the real embeddings of the evaluation
corpora, not uniform noise, so that recall means something. For every index: build time, recall@10
against exact search, single-query latency (p50/p95 over ``--latency-queries``, with
1 thread and with FAISS's default threads), bytes per vector on disk and the resident
size after loading. IVF rows with "+exact" re-score ``2k`` candidates with the exact
float32 vectors as ``rag.retrieval.dense_search`` does ("+fp16": with float16 copies);
the "filtered" rows compare the IVF search with an id selector against brute force over
the allowed rows, for filters keeping 0.5%, 2% and 10% of the articles; the "update" rows
time what a commit does to an IVF index (clone, remove 1,000 ids, add 1,000) against
training one afresh, and writing vectors.npy. Timings are medians on a shared machine:
indicative, compare them as ratios.

Reproduce (from the repository root; about 10 minutes on 2 cores)::

    .venv/bin/python bench/ann.py --sizes 200000 1000000 --out /tmp/rag-bench/ann.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from _common import print_table, write_json

K = 10


def corpus(rng: np.random.Generator, n: int, dim: int, queries: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` normalised float32 vectors shaped like news-chunk embeddings, and ``queries`` more.

    Embeddings lie near a low-dimensional manifold, and an isotropic Gaussian mixture in 384-d
    does not: k-means finds its clusters exactly and IVF recall is trivially near 1. So the
    vectors are drawn in a 32-d latent space (100 topic centres, an article around its topic,
    10 chunks around their article), projected to ``dim`` at random, with isotropic noise and
    a shared direction (embeddings are anisotropic), then normalised. The scales were set on
    28k vectors against the all-MiniLM-L6-v2 vectors of the two evaluation corpora, with
    held-out chunks as queries: mean cosine of the nearest neighbour 0.76 (real 0.80), of the
    10th 0.67 (0.66), of a random pair 0.07 (0.09); IVF-SQ8 recall@10 at 167 lists with
    nprobe 4/8/16/32 0.90/0.95/0.98/0.99 (real 0.93/0.97/0.98/0.99): a little harder than the
    real thing. Queries are chunks of articles not in the corpus."""
    latent = 32
    projection = rng.standard_normal((latent, dim), dtype=np.float32) / np.sqrt(latent)
    shared = 0.4 * rng.standard_normal(dim, dtype=np.float32)
    topics = rng.standard_normal((100, latent), dtype=np.float32)
    n_articles = n // 10 + 1
    articles = topics[rng.integers(0, len(topics), n_articles + queries)]
    articles += 0.6 * rng.standard_normal(articles.shape, dtype=np.float32)

    def draw(which: np.ndarray) -> np.ndarray:
        out = np.empty((len(which), dim), dtype=np.float32)
        for start in range(0, len(which), 100_000):
            part = which[start:start + 100_000]
            z = articles[part] + rng.standard_normal((len(part), latent), dtype=np.float32)
            x = z @ projection + shared + rng.standard_normal((len(part), dim), dtype=np.float32) / np.sqrt(dim)
            out[start:start + len(part)] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out

    return draw(np.arange(n) // 10), draw(n_articles + np.arange(queries))


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    shares = [len(set(f[f >= 0].tolist()) & set(t.tolist())) / K for f, t in zip(found, truth, strict=True)]
    return float(np.mean(shares))


def latencies(search_one: Callable[[np.ndarray], object], queries: np.ndarray, threads: int) -> tuple[float, float]:
    """(p50, p95) milliseconds of one query at a time with ``threads`` OpenMP threads."""
    faiss.omp_set_num_threads(threads)
    search_one(queries[0])  # warm up
    times = []
    for q in queries:
        started = time.perf_counter()
        search_one(q)
        times.append((time.perf_counter() - started) * 1000)
    faiss.omp_set_num_threads(DEFAULT_THREADS)
    return statistics.median(times), float(np.percentile(times, 95))


def resident_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def on_disk(index: Any) -> tuple[int, float]:
    """(bytes of the written index, resident MB it takes once read back)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "index.faiss")
        faiss.write_index(index, path)
        size = os.path.getsize(path)
        before = resident_mb()
        loaded = faiss.read_index(path)
        grown = resident_mb() - before
        del loaded
    return size, grown


def refined(index: Any, exact: np.ndarray, q: np.ndarray, nprobe: int) -> np.ndarray:
    """What dense_search does with the IVF index: 2k candidates, re-scored exactly."""
    params = faiss.SearchParametersIVF(nprobe=nprobe)  # type: ignore[call-arg]
    _, ids = index.search(q.reshape(1, -1), 2 * K, params=params)
    ids = ids[0][ids[0] >= 0]
    scores = exact[ids].astype(np.float32) @ q
    return ids[np.argsort(-scores)[:K]]


DEFAULT_THREADS = faiss.omp_get_max_threads()


def bench_size(n: int, args: argparse.Namespace, rows: list[list[str]], results: list[dict[str, Any]]) -> None:
    rng = np.random.default_rng(n)
    started = time.perf_counter()
    x, queries = corpus(rng, n, args.dim, args.queries + 1_000)
    queries, fresh = queries[: args.queries], queries[args.queries:]
    ids = np.arange(n, dtype=np.int64)
    print(f"n={n:,}: generated in {time.perf_counter() - started:.1f} s", flush=True)

    def row(name: str, params: str, build: float, rec: float, lat1: tuple[float, float],
            latn: tuple[float, float] | None, disk: float, ram_mb: float) -> None:
        rows.append([f"{n:,}", name, params, f"{build:.1f}", f"{rec:.3f}", f"{lat1[0]:.2f}", f"{lat1[1]:.2f}",
                     f"{latn[0]:.2f}" if latn else "-", f"{latn[1]:.2f}" if latn else "-",
                     f"{disk:.0f}", f"{ram_mb:.0f}"])
        results.append({"n": n, "index": name, "params": params, "build_s": round(build, 2), "recall_at_10": rec,
                        "p50_ms_1_thread": lat1[0], "p95_ms_1_thread": lat1[1],
                        "p50_ms_default_threads": latn[0] if latn else None,
                        "p95_ms_default_threads": latn[1] if latn else None,
                        "disk_bytes_per_vector": disk, "resident_mb": ram_mb})
        print("  ", rows[-1], flush=True)

    lat_q = queries[: args.latency_queries]
    flat_q = queries[: max(10, args.latency_queries // (4 if n >= 500_000 else 1))]
    # exact: the flat index rag.store builds below the threshold
    started = time.perf_counter()
    flat = faiss.IndexIDMap2(faiss.IndexFlatIP(args.dim))
    flat.add_with_ids(x, ids)
    build = time.perf_counter() - started
    _, truth = flat.search(queries, K)

    def flat_one(q: np.ndarray, index: Any = flat) -> object:
        return index.search(q.reshape(1, -1), 2 * K)

    size, ram = on_disk(flat)
    row("flat", "IDMap2,Flat", build, 1.0, latencies(flat_one, flat_q, 1),
        latencies(flat_one, flat_q, DEFAULT_THREADS), size / n, ram)
    del flat

    # float16 exact vectors: what storing vectors.npy in half precision would cost in recall
    half = x.astype(np.float16)
    flat16 = faiss.IndexFlatIP(args.dim)
    flat16.add(half.astype(np.float32))
    rec16 = recall(flat16.search(queries, K)[1], truth)
    del flat16
    rows.append([f"{n:,}", "exact fp16", "float16 vectors, brute force", "-", f"{rec16:.3f}", "-", "-", "-", "-",
                 f"{args.dim * 2}", "-"])
    results.append({"n": n, "index": "exact fp16", "recall_at_10": rec16})

    base_lists = max(16, round(n ** 0.5))
    for nlist in dict.fromkeys((base_lists, 2 * base_lists) if args.two_nlists else (base_lists,)):
        started = time.perf_counter()
        ivf = faiss.index_factory(args.dim, f"IVF{nlist},SQ8", faiss.METRIC_INNER_PRODUCT)
        sample = min(n, nlist * args.train_per_list)
        ivf.train(x[np.sort(rng.choice(n, size=sample, replace=False))])
        trained = time.perf_counter() - started
        ivf.add_with_ids(x, ids)
        build = time.perf_counter() - started
        size, ram = on_disk(ivf)
        print(f"  IVF{nlist}: trained on {sample:,} in {trained:.1f} s, built in {build:.1f} s", flush=True)
        for nprobe in args.nprobes:
            params = faiss.SearchParametersIVF(nprobe=nprobe)  # type: ignore[call-arg]
            _, found = ivf.search(queries, K, params=params)
            raw = recall(found, truth)

            def ivf_one(q: np.ndarray, nprobe: int = nprobe, index: Any = ivf) -> object:
                return refined(index, x, q, nprobe)

            exact_found = np.stack([refined(ivf, x, q, nprobe) for q in queries])
            fp16_found = np.stack([refined(ivf, half, q, nprobe) for q in queries])
            rows.append([f"{n:,}", "IVF-SQ8", f"nlist {nlist}, nprobe {nprobe}, no re-scoring", "", f"{raw:.3f}",
                         "", "", "", "", "", ""])
            results.append({"n": n, "index": "IVF-SQ8", "nlist": nlist, "nprobe": nprobe, "refine": False,
                            "recall_at_10": raw})
            row("IVF-SQ8+exact", f"nlist {nlist}, nprobe {nprobe}, 2k re-scored", build, recall(exact_found, truth),
                latencies(ivf_one, lat_q, 1), latencies(ivf_one, lat_q, DEFAULT_THREADS),
                size / n + args.dim * 4, ram)
            rows.append([f"{n:,}", "IVF-SQ8+fp16", f"nlist {nlist}, nprobe {nprobe}, re-scored in fp16", "",
                         f"{recall(fp16_found, truth):.3f}", "", "", "", "", f"{size / n + args.dim * 2:.0f}", ""])
            results.append({"n": n, "index": "IVF-SQ8+fp16", "nlist": nlist, "nprobe": nprobe,
                            "recall_at_10": recall(fp16_found, truth)})
        if nlist == base_lists:
            filtered(n, ivf, x, queries, args, rows, results)
            update(n, ivf, x, fresh, rng, build, rows, results)
        del ivf

    if args.hnsw_max and n <= args.hnsw_max:
        started = time.perf_counter()
        hnsw = faiss.IndexHNSWFlat(args.dim, 32, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = 40
        hnsw.add(x)
        build = time.perf_counter() - started
        size, ram = on_disk(hnsw)
        for ef in (32, 64):
            params_h = faiss.SearchParametersHNSW(efSearch=ef)  # type: ignore[attr-defined]
            _, found = hnsw.search(queries, K, params=params_h)

            def hnsw_one(q: np.ndarray, p: Any = params_h, index: Any = hnsw) -> object:
                return index.search(q.reshape(1, -1), K, params=p)

            row("HNSW32,Flat", f"efConstruction 40, efSearch {ef}; no removal", build, recall(found, truth),
                latencies(hnsw_one, lat_q, 1), latencies(hnsw_one, lat_q, DEFAULT_THREADS), size / n, ram)
        del hnsw


def filtered(n: int, ivf: Any, x: np.ndarray, queries: np.ndarray, args: argparse.Namespace,
             rows: list[list[str]], results: list[dict[str, Any]]) -> None:
    """A filter that keeps a share of the articles: recall of the IVF search with an id
    selector against the exact masked search, and the time of either way."""
    rng = np.random.default_rng(1)
    nprobe = args.filter_nprobe
    for share in (0.005, 0.02, 0.1):
        articles = np.flatnonzero(rng.random(n // 10 + 1) < share)
        allowed = (articles[:, None] * 10 + np.arange(10)).ravel()
        allowed = allowed[allowed < n]
        truth = np.argsort(-(x[allowed] @ queries.T), axis=0)[:K].T
        truth = allowed[truth]
        params = faiss.SearchParametersIVF(sel=faiss.IDSelectorBatch(allowed), nprobe=nprobe)  # type: ignore[call-arg]

        def ivf_one(q: np.ndarray, p: Any = params) -> np.ndarray:
            _, ids = ivf.search(q.reshape(1, -1), 2 * K, params=p)
            ids = ids[0][ids[0] >= 0]
            return ids[np.argsort(-(x[ids] @ q))[:K]]

        def exact_one(q: np.ndarray, rows_: np.ndarray = allowed) -> np.ndarray:
            scores = x[rows_] @ q
            return rows_[np.argpartition(-scores, K)[:K]]

        found = [ivf_one(q) for q in queries]
        rec = float(np.mean([len(set(f.tolist()) & set(t.tolist())) / K for f, t in zip(found, truth, strict=True)]))
        lat = latencies(ivf_one, queries[: args.latency_queries], 1)
        lat_exact = latencies(exact_one, queries[: args.latency_queries], 1)
        rows.append([f"{n:,}", "IVF filtered", f"{share:.1%} of articles ({len(allowed):,} rows), nprobe {nprobe}",
                     "", f"{rec:.3f}", f"{lat[0]:.2f}", f"{lat[1]:.2f}", "", "", "", ""])
        rows.append([f"{n:,}", "exact filtered", f"brute force over those {len(allowed):,} rows", "", "1.000",
                     f"{lat_exact[0]:.2f}", f"{lat_exact[1]:.2f}", "", "", "", ""])
        results.append({"n": n, "index": "filtered", "share": share, "rows": len(allowed), "nprobe": nprobe,
                        "ivf_recall_at_10": rec, "ivf_p50_ms": lat[0], "exact_p50_ms": lat_exact[0]})
        print("  ", rows[-2], rows[-1], flush=True)


def update(n: int, ivf: Any, x: np.ndarray, fresh: np.ndarray, rng: np.random.Generator, build: float,
           rows: list[list[str]], results: list[dict[str, Any]]) -> None:
    """What a commit of 1,000 deleted and 1,000 new chunks does to the IVF index."""
    changed = len(fresh)
    removed = rng.choice(n, size=changed, replace=False).astype(np.int64)
    started = time.perf_counter()
    copy = faiss.clone_index(ivf)
    copy.remove_ids(faiss.IDSelectorBatch(removed))
    copy.add_with_ids(fresh, np.arange(n, n + changed, dtype=np.int64))
    seconds = time.perf_counter() - started
    assert copy.ntotal == n
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        np.save(os.path.join(tmp, "vectors.npy"), x)
        save = time.perf_counter() - started
    rows.append([f"{n:,}", "update IVF", f"clone, remove {changed:,}, add {changed:,}", f"{seconds:.1f}",
                 "", "", "", "", "", "", ""])
    rows.append([f"{n:,}", "rebuild IVF", "train + add all (what the update avoids)", f"{build:.1f}",
                 "", "", "", "", "", "", ""])
    rows.append([f"{n:,}", "write vectors.npy", "float32, every commit", f"{save:.1f}", "", "", "", "", "", "", ""])
    results.append({"n": n, "index": "update IVF", "seconds": seconds, "rebuild_seconds": build,
                    "write_vectors_npy_seconds": save})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200, help="queries for recall")
    parser.add_argument("--latency-queries", type=int, default=100, help="queries timed one at a time")
    parser.add_argument("--nprobes", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--filter-nprobe", type=int, default=64, help="nprobe of the filtered searches")
    parser.add_argument("--train-per-list", type=int, default=64, help="training vectors per list (as rag.store)")
    parser.add_argument("--two-nlists", action="store_true", help="also try twice as many lists")
    parser.add_argument("--hnsw-max", type=int, default=200_000, help="build HNSW up to this size (0: never)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    print(f"faiss {faiss.__version__}, {DEFAULT_THREADS} default threads, {os.cpu_count()} CPUs; "
          f"{args.dim}-d hierarchical Gaussian mixture; recall@{K} over {args.queries} queries, "
          f"latency over {args.latency_queries} single queries (flat: fewer at 1M)", flush=True)
    rows: list[list[str]] = []
    results: list[dict[str, Any]] = []
    for n in args.sizes:
        bench_size(n, args, rows, results)
    print()
    print_table(["chunks", "index", "configuration", "build s", "recall@10", "p50 ms 1t", "p95 ms 1t",
                 f"p50 ms {DEFAULT_THREADS}t", f"p95 ms {DEFAULT_THREADS}t", "disk B/vec", "RAM MB"], rows)
    if args.out:
        write_json(args.out, {"config": {k: str(v) for k, v in vars(args).items()}, "results": results})


if __name__ == "__main__":
    main()
