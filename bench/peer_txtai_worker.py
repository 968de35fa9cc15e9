"""The txtai side of ``bench/peer_txtai.py``: run inside the separate txtai venv, never in ours.

It imports nothing from ``rag``: only txtai (and torch and transformers, which txtai brings,
for reporting what ran), numpy and the standard library. One run measures one configuration:

* ``--config dense``: ``Embeddings(path=MODEL)``, txtai's defaults for a local model folder;
* ``--config hybrid``: the same plus ``hybrid=True`` (its BM25 keyword index beside the dense one);
* ``--config dense-bf16`` / ``hybrid-bf16``: the same with ``vectors={"dtype": "bfloat16"}``, which
  txtai passes to ``transformers.AutoModel.from_pretrained``;
* ``--faiss-components F`` sets txtai's FAISS index factory string (``faiss={"components": F}``),
  e.g. ``IDMap,Flat`` for an exact index where txtai would pick IVF (above 5,000 passages);
* ``--search-threads N`` sets torch's threads for the searches (txtai itself leaves torch's default).

Measured, each with ``time.perf_counter``:

* import: ``import torch, transformers, txtai``;
* model load: ``Embeddings(config)`` plus one ``transform`` (the first vector);
* index: ``Embeddings.index(passages)`` over the passages file, as ``(row, text, None)`` tuples;
* search: one ``Embeddings.search(question, k)`` per question, after the warm-up questions,
  which are searched untimed.

Input files are JSONL: passages with ``row`` and ``text``; questions with ``question`` and, for
the warm-up ones, ``"warmup": true``.
The result, one JSON object (timings, the rows each search returned, what txtai built and the
versions it ran with), is written to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

CONFIGS = ("dense", "hybrid", "dense-bf16", "hybrid-bf16")
# sentence-transformers reads at most this many tokens per passage with this model
# (sentence_bert_config.json); counted here to show whether txtai's own limit differs in practice.
ST_WINDOW = 256


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="local sentence-transformers model folder")
    parser.add_argument("--passages", type=Path, required=True, help="JSONL: row, text")
    parser.add_argument("--questions", type=Path, required=True, help="JSONL: question")
    parser.add_argument("--config", choices=CONFIGS, required=True)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--faiss-components", default=None,
                        help="a FAISS index factory string for txtai (default: txtai's choice by corpus size)")
    parser.add_argument("--search-threads", type=int, default=None,
                        help="torch threads for the searches (default: torch's own, as txtai leaves it)")
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args(argv)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def embeddings_config(model: str, name: str, faiss_components: str | None) -> dict[str, Any]:
    config: dict[str, Any] = {"path": model}
    if faiss_components:
        config["faiss"] = {"components": faiss_components}
    if name.startswith("hybrid"):
        config["hybrid"] = True
    if name.endswith("bf16"):
        config["vectors"] = {"dtype": "bfloat16"}
    return config


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The model is a local folder; nothing may be fetched from a hub (the caller sets these too).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    passages = read_jsonl(args.passages)
    records = read_jsonl(args.questions)
    warmups = [str(q["question"]) for q in records if q.get("warmup")]
    questions = [str(q["question"]) for q in records if not q.get("warmup")]

    started = time.perf_counter()
    import torch
    import transformers
    from transformers.utils import logging as hf_logging
    from txtai import Embeddings

    import_s = time.perf_counter() - started
    hf_logging.disable_progress_bar()  # "Loading weights" bars on every load are noise here
    hf_logging.set_verbosity_error()

    config = embeddings_config(args.model, args.config, args.faiss_components)
    started = time.perf_counter()
    embeddings = Embeddings(dict(config))
    embeddings.transform("load the model")
    model_load_s = time.perf_counter() - started

    # What the default configuration resolved to: the vectors class, pooling, truncation, batches.
    vectors = embeddings.model
    pooling = getattr(vectors, "model", None)
    maxlength = getattr(pooling, "maxlength", None)
    tokenizer = getattr(pooling, "tokenizer", None)
    weights = getattr(pooling, "model", None)
    dtype = str(next(weights.parameters()).dtype) if isinstance(weights, torch.nn.Module) else None
    over_window = None
    if tokenizer is not None:  # untimed: how many passages the two truncation limits treat differently
        lengths = [len(ids) for ids in tokenizer([p["text"] for p in passages], truncation=False)["input_ids"]]
        over_window = sum(n > ST_WINDOW for n in lengths)

    documents = [(int(p["row"]), str(p["text"]), None) for p in passages]
    started = time.perf_counter()
    embeddings.index(documents)
    index_s = time.perf_counter() - started

    index_threads = torch.get_num_threads()
    if args.search_threads:
        torch.set_num_threads(args.search_threads)
    for question in warmups:
        embeddings.search(question, args.k)
    latencies_ms: list[float] = []
    results: list[list[int]] = []
    for question in questions:
        started = time.perf_counter()
        hits = embeddings.search(question, args.k)
        latencies_ms.append((time.perf_counter() - started) * 1000)
        results.append([int(row) for row, _score in hits])

    built = embeddings.config or {}
    payload = {
        "config_name": args.config,
        "config": config,
        "import_s": import_s,
        "model_load_s": model_load_s,
        "index_s": index_s,
        "passages": len(documents),
        "latencies_ms": latencies_ms,
        "results": results,
        "resolved": {
            "vectors_class": type(vectors).__name__,
            "pooling_class": type(pooling).__name__ if pooling is not None else None,
            "maxlength_tokens": maxlength,
            "passages_over_st_window": over_window,
            "st_window_tokens": ST_WINDOW,
            "encode_batch": getattr(vectors, "encodebatch", None),
            "index_batch": 500,  # Embeddings.index(..., batchsize=500) default, not stored in its config
            "dtype": dtype,
            "ann_backend": built.get("backend"),
            "ann_components": built.get("build", {}).get("settings", {}).get("components"),
            "ann_class": type(getattr(embeddings.ann, "backend", None)).__name__,
            # IVF lists searched per query (an approximate index); None for a flat one.
            "ann_nprobe": embeddings.ann.nprobe() if hasattr(getattr(embeddings.ann, "backend", None), "nprobe")
            else None,
            "scoring": built.get("scoring"),
        },
        "torch_threads": {"ingest": index_threads, "search": torch.get_num_threads()},
        "cpus": os.cpu_count(),
        "versions": {
            "python": sys.version.split()[0],
            "txtai": package_version("txtai"),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "sentence-transformers": package_version("sentence-transformers"),
            "faiss-cpu": package_version("faiss-cpu"),
            "numpy": np.__version__,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
