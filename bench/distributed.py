#!/usr/bin/env python
"""Ingest throughput of the Ray engine (articles/s, chunks/s) with one and with two
embedding actors, on a cluster of 1-CPU nodes started here on 127.0.0.1 (a head and
``--workers`` worker nodes), beside the local engine on the same articles.

Each run is the installed ``rag ingest`` command building a fresh index of the first
``--limit`` articles of ``--corpus`` with the default settings (chunks of 200 tokens, the
onnx embedder; ``RAG_EMBED_BACKEND=torch`` for torch); the time is the command's own report
(reading, chunking, embedding and writing, with connecting to the cluster and loading the
model in each actor), so it includes the fixed start-up cost that a larger corpus spreads
thinner. Prints a table and
writes JSON with ``--out``; also the peak RSS of the ``rag`` process (with the Ray engine,
the driver that writes the shards) and the index's bytes on disk per chunk. Not a test:
nothing is asserted.

    python bench/distributed.py --limit 200 --actors 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.ray_cluster import RayCluster  # noqa: E402  (the tests' cluster of 1-CPU nodes)


def rag_command() -> str:
    return str(Path(sys.executable).with_name("rag"))


def run_ingest(corpus: Path, index_dir: Path, extra: list[str], env: dict[str, str]) -> dict[str, Any]:
    """One ``rag ingest --json`` run: its report, wall time and peak RSS (of the command's own
    process: the driver, with the Ray engine; the actors are other processes)."""
    out, err = index_dir.with_suffix(".out"), index_dir.with_suffix(".err")
    started = time.perf_counter()
    with open(out, "w") as stdout, open(err, "w") as stderr:
        process = subprocess.Popen([rag_command(), "ingest", str(corpus), "--index", str(index_dir), "--json", "-q",
                                    *extra], stdout=stdout, stderr=stderr, env=env)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"rag ingest failed:\n{err.read_text()[-3000:]}")
    report = json.loads(out.read_text())
    disk = sum(p.stat().st_size for p in index_dir.rglob("*") if p.is_file())
    return {"documents": report["documents"], "chunks": report["chunks"], "seconds": report["seconds"],
            "wall_seconds": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "disk_bytes_per_chunk": round(disk / max(report["chunks"], 1))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=REPO.parent / "shared/eval/realtimeqa-gold-dev/corpus.jsonl")
    parser.add_argument("--limit", type=int, default=200, help="articles: the first N of the corpus")
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2], help="embedding actor counts to run")
    parser.add_argument("--workers", type=int, default=1, help="worker nodes besides the head (1 CPU each)")
    parser.add_argument("--actor-cpus", type=float, default=0.75)
    parser.add_argument("--batch-size", type=int, default=16, help="articles per batch sent to an actor")
    parser.add_argument("--no-local", action="store_true", help="skip the local engine's run")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="rag-bench-ray-"))
    corpus = scratch / "corpus.jsonl"
    with open(args.corpus, encoding="utf-8") as source, open(corpus, "w", encoding="utf-8") as out:
        for n, line in enumerate(source):
            if n >= args.limit:
                break
            out.write(line)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_", "RAY_ADDRESS"))}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    rows: list[dict[str, Any]] = []
    if not args.no_local:
        rows.append({"engine": "local", "actors": "-"} | run_ingest(corpus, scratch / "local", [], env))
        print(rows[-1], flush=True)
    with RayCluster(workers=args.workers) as cluster:
        for actors in args.actors:
            extra = ["--engine", "ray", "--actors", str(actors), "--actor-cpus", str(args.actor_cpus),
                     "--task-cpus", "0.25", "--batch-size", str(args.batch_size)]
            found = run_ingest(corpus, scratch / f"ray-{actors}", extra, env | {"RAY_ADDRESS": cluster.address})
            rows.append({"engine": "ray", "actors": actors} | found)
            print(rows[-1], flush=True)
    for row in rows:
        row["articles_per_s"] = round(row["documents"] / row["seconds"], 2)
        row["chunks_per_s"] = round(row["chunks"] / row["seconds"], 1)
    print(f"\n{args.limit} articles of {args.corpus.name}; cluster: a head and {args.workers} worker node(s), "
          f"1 CPU each; {os.cpu_count()} cores, {platform.processor() or platform.machine()}")
    print(f"{'engine':8} {'actors':>6} {'articles':>8} {'chunks':>7} {'seconds':>8} {'articles/s':>10} "
          f"{'chunks/s':>9} {'peak RSS MB':>11} {'disk B/chunk':>12}")
    for row in rows:
        print(f"{row['engine']:8} {row['actors']!s:>6} {row['documents']:>8} {row['chunks']:>7} {row['seconds']:>8.1f} "
              f"{row['articles_per_s']:>10.2f} {row['chunks_per_s']:>9.1f} {row['peak_rss_mb']:>11.0f} "
              f"{row['disk_bytes_per_chunk']:>12}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"limit": args.limit, "workers": args.workers, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
