#!/usr/bin/env python
"""What a change to a built index costs: deleting, adding, correcting and re-adding
(unchanged) one article, on a copy of an existing index.

Each operation runs ``--repeat`` times through ``RagPipeline`` (the library behind
``rag add`` / ``rag delete`` and ``POST``/``PUT``/``DELETE /documents``) with the model
already loaded, so the time is the write itself: embedding the changed article (if
any), copying the other chunks' vectors, rebuilding BM25 and committing a new
generation. Memory is the peak resident size during the operation minus the resident
size just before it, sampled every 5 ms from /proc/self/status.

Reproduce (from the repository root; the realtimeqa index is built by bench/retrieval.py)::

    .venv/bin/python bench/updates.py --index /tmp/rag-bench/realtimeqa-t200-40
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from _common import print_table

from rag.config import Settings
from rag.pipeline import RagPipeline
from rag.store import IndexStore
from rag.types import Article


def resident_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(operation: Callable[[], object]) -> tuple[float, float]:
    """(seconds, peak extra resident MB) of one call."""
    baseline = peak = resident_mb()
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, resident_mb())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.perf_counter()
    operation()
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    return seconds, max(peak, resident_mb()) - baseline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, required=True, help="An existing index (it is copied, not changed).")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rag-updates-") as tmp:
        index_dir = Path(tmp) / "index"
        shutil.copytree(args.index, index_dir)
        settings = Settings(index_dir=index_dir)
        pipeline = RagPipeline(settings)
        snapshot = pipeline.snapshot()
        pipeline.embedder.embed_query("warm up")
        victims = sorted(snapshot.documents)[: args.repeat]
        stored = {doc_id: snapshot.documents[doc_id].article for doc_id in victims}
        print(f"index: {args.index} ({len(snapshot.documents):,} documents, {len(snapshot.chunks):,} chunks); "
              f"model loaded; resident {resident_mb():.0f} MB")

        samples: dict[str, list[tuple[float, float]]] = {"delete": [], "add": [], "correct": [], "re-add": []}
        for doc_id, article in stored.items():
            samples["delete"].append(measure(lambda d=doc_id: pipeline.delete([d])))  # type: ignore[misc]
            samples["add"].append(measure(lambda a=article: pipeline.add([a])))  # type: ignore[misc]
            corrected = Article(**(article.to_dict() | {"text": article.text + " (Corrected.)"}))
            samples["correct"].append(measure(lambda a=corrected: pipeline.add([a])))  # type: ignore[misc]
            samples["re-add"].append(measure(lambda a=corrected: pipeline.add([a])))  # type: ignore[misc]

        generation = IndexStore(index_dir).current_generation()
        disk = sum(p.stat().st_size for p in (index_dir / str(generation)).rglob("*") if p.is_file())
        rows = [
            [name, f"{statistics.median(s for s, _ in runs):.2f}", f"{min(s for s, _ in runs):.2f}",
             f"{max(s for s, _ in runs):.2f}", f"{statistics.median(m for _, m in runs):.0f}"]
            for name, runs in samples.items()
        ]
        print_table(["one article", "median s", "min s", "max s", "peak extra MB (median)"], rows)
        print(f"{args.repeat} runs each; one generation on disk: {disk / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
