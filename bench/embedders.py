#!/usr/bin/env python
"""Embedding backends side by side: passages per second, query latency, and how far each
backend's vectors are from torch float32's.

Backends: ``torch-fp32``, ``torch-bf16`` (sentence-transformers) and ``onnx-int8``
(onnxruntime, exported once into ``--cache-dir``; skipped when onnxruntime or onnx is not
installed). The passages are the stored texts of the first ``--passages`` chunks of an
existing index, in index order. They are cut into slices of ``--slice`` passages; every
slice is embedded by every backend, the order of backends rotating from slice to slice
(A B C, B C A, ...), so a noisy neighbour on a shared machine hits all backends alike.
Each backend embeds through ``Embedder.embed_passages`` (longest first, batches of
``--batch-size``). Reported: median passages/s over the slices, and the median over slices
of each backend's speed-up against ``torch-fp32`` and against ``torch-bf16``.

Queries: the first ``--queries`` questions of a queries file, each embedded by every
backend in rotating order after one warm-up; reported as p50 and p90 in ms.

Cosine: each backend's passage vectors against torch float32's (min, 1st percentile,
median).

Reproduce (from the repository root)::

    .venv/bin/python bench/embedders.py --index /tmp/rag-bench/realtimeqa-t200-40 \\
        --queries-file ../shared/eval/realtimeqa-gold-dev/queries.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from _common import print_table, resolve_from_repo, write_json

from rag.embedding import Embedder, cpu_has_native_bf16, onnx_available
from rag.store import IndexStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", default="/tmp/rag-bench/realtimeqa-t200-40")
    parser.add_argument("--queries-file", default="../shared/eval/realtimeqa-gold-dev/queries.jsonl")
    parser.add_argument("--passages", type=int, default=2000)
    parser.add_argument("--slice", type=int, default=250)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--cache-dir", type=Path, default=None, help="where the ONNX export is kept")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    texts = [c.text for c in IndexStore(resolve_from_repo(args.index)).load().chunks[: args.passages]]
    with open(resolve_from_repo(args.queries_file), encoding="utf-8") as fh:
        questions = [json.loads(line)["question"] for line in fh if line.strip()][: args.queries]

    backends: dict[str, Embedder] = {
        "torch-fp32": Embedder(bf16=False, batch_size=args.batch_size),
        "torch-bf16": Embedder(bf16=True, batch_size=args.batch_size),
    }
    if onnx_available():
        backends["onnx-int8"] = Embedder(backend="onnx", batch_size=args.batch_size, cache_dir=args.cache_dir)
    else:
        print("onnx-int8 skipped: onnxruntime/onnx not installed (pip install onnxruntime onnx)")
    names = list(backends)
    load_s: dict[str, float] = {}
    for name, embedder in backends.items():
        start = time.perf_counter()
        embedder.embed_sentences(["warm-up"])  # loads the model (and exports the ONNX copy once)
        load_s[name] = time.perf_counter() - start

    import torch

    print(f"{len(texts)} passages (median {int(np.median(backends['torch-fp32'].count_tokens(texts)))} tokens), "
          f"{len(questions)} queries; native bf16: {cpu_has_native_bf16()}; torch threads {torch.get_num_threads()}")

    rates: dict[str, list[float]] = {n: [] for n in names}
    vectors: dict[str, list[np.ndarray]] = {n: [] for n in names}
    slices = [texts[i:i + args.slice] for i in range(0, len(texts), args.slice)]
    for s, part in enumerate(slices):
        for k in range(len(names)):
            name = names[(s + k) % len(names)]
            start = time.perf_counter()
            vectors[name].append(backends[name].embed_passages(part))
            rates[name].append(len(part) / (time.perf_counter() - start))
        print(f"  slice {s + 1}/{len(slices)}: " + ", ".join(f"{n} {rates[n][-1]:.1f}/s" for n in names), flush=True)

    latency: dict[str, list[float]] = {n: [] for n in names}
    for q, question in enumerate(questions):
        for k in range(len(names)):
            name = names[(q + k) % len(names)]
            start = time.perf_counter()
            backends[name].embed_query(question)
            latency[name].append((time.perf_counter() - start) * 1000)

    reference = np.concatenate(vectors["torch-fp32"])
    rows, results = [], {}
    for name in names:
        cos = np.sum(np.concatenate(vectors[name]) * reference, axis=1)
        vs_fp32 = statistics.median(a / b for a, b in zip(rates[name], rates["torch-fp32"], strict=True))
        vs_bf16 = statistics.median(a / b for a, b in zip(rates[name], rates["torch-bf16"], strict=True))
        lat = np.array(latency[name])
        results[name] = {
            "passages_per_s": round(statistics.median(rates[name]), 2), "speedup_vs_fp32": round(vs_fp32, 2),
            "speedup_vs_bf16": round(vs_bf16, 2), "query_p50_ms": round(float(np.percentile(lat, 50)), 2),
            "query_p90_ms": round(float(np.percentile(lat, 90)), 2), "load_s": round(load_s[name], 2),
            "cos_min": round(float(cos.min()), 4), "cos_p1": round(float(np.percentile(cos, 1)), 4),
            "cos_median": round(float(np.median(cos)), 4),
        }
        r = results[name]
        rows.append([name, f"{r['passages_per_s']:.1f}", f"{vs_fp32:.2f}x", f"{vs_bf16:.2f}x",
                     f"{r['query_p50_ms']:.1f}", f"{r['query_p90_ms']:.1f}", f"{r['load_s']:.1f}",
                     f"{r['cos_min']:.4f}", f"{r['cos_p1']:.4f}", f"{r['cos_median']:.4f}"])
    print()
    print_table(["backend", "passages/s", "vs fp32", "vs bf16", "query p50 ms", "p90 ms", "load s",
                 "cos min", "cos p1", "cos median"], rows)
    if args.json:
        write_json(args.json, {"passages": len(texts), "queries": len(questions), "slice": args.slice,
                               "batch_size": args.batch_size, "native_bf16": cpu_has_native_bf16(),
                               "results": results})


if __name__ == "__main__":
    main()
