#!/usr/bin/env python
"""Concurrent load on a real ``rag serve`` process while another process writes to its index.

An index of ``seeds/`` plus ``--articles`` small synthetic articles is built in a temporary
directory, ``rag serve`` is started on it as a subprocess, and then, for ``--seconds``:

* ``--clients`` threads, one httpx client each, loop over ``GET /search`` and ``POST /ask``
  (extractive generator) with a few questions, timing every request;
* one writer process (this script, ``writer`` mode) adds uniquely worded articles to the same
  index through the library and deletes every second one it added, logging each committed
  write as a JSON line; the server picks every commit up on its next request;
* the server's resident memory (VmRSS) is sampled every second.

Printed: requests, errors, p50/p95/p99 latency and throughput per route, writes done, RSS.
Nothing is asserted (tests/test_load.py runs the same load and checks it).

Reproduce (from the repository root)::

    .venv/bin/python bench/load.py --clients 32 --seconds 60
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

try:
    from _common import REPO_ROOT, print_table, write_json
except ImportError:  # imported as bench.load, by tests/test_load.py
    from bench._common import REPO_ROOT, print_table, write_json  # type: ignore[no-redef]

from rag.config import Settings
from rag.corpus import parse_record
from rag.embedding import Embedder
from rag.pipeline import RagPipeline

SEEDS = REPO_ROOT / "seeds"
QUESTIONS = (
    "Which lenders did Xiaomi partner with?",
    "Who will be vice president of Xiaomi's financial services unit?",
    "Which harbour did the Velmora ferry operator expand?",
    "What did the Ostrava robotics fair show?",
    "Where did the Kestrel river flood?",
)
_TOPICS = (
    ("Velmora ferry operator expands to the north harbour",
     "The Velmora ferry operator said it would expand service to the north harbour next spring."),
    ("Ostrava robotics fair shows warehouse machines",
     "The Ostrava robotics fair showed warehouse machines that sort parcels without human help."),
    ("Kestrel river floods the lower valley",
     "The Kestrel river flooded the lower valley after three days of rain, officials said."),
)


def token(kind: str, n: int) -> str:
    """A word that occurs in exactly one article: ``kind`` (syn, wrt) and its number."""
    return f"{kind}{n:04d}zq"


def synthetic_record(kind: str, n: int) -> dict[str, Any]:
    """A short article with a unique id and a unique word, about one of a few topics."""
    title, lead = _TOPICS[n % len(_TOPICS)]
    word = token(kind, n)
    return {
        "id": f"{kind}-{n:04d}",
        "title": f"{title} ({kind} {n})",
        "text": f"{lead} The report was filed under the codeword {word}. "
                f"Local residents described the {word} announcement as long overdue. "
                f"A spokesperson declined to comment further on item {n}.",
        "published_at": f"2024-05-{1 + n % 28:02d}",
        "source": "Load Test Wire",
    }


def build_index(index_dir: Path, articles: int, embedder: Embedder | None = None) -> list[str]:
    """An index of seeds/ and ``articles`` synthetic ones; returns the ids it holds."""
    pipeline = RagPipeline(Settings(index_dir=index_dir), embedder=embedder)
    pipeline.ingest([SEEDS])
    pipeline.add([parse_record(synthetic_record("syn", n), f"synthetic {n}") for n in range(articles)])
    return sorted(pipeline.snapshot().documents)


def clean_env() -> dict[str, str]:
    """This environment without RAG_* settings (the runs set their own), offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def rag_server(index_dir: Path, workdir: Path, timeout: float = 180, settings: dict[str, str] | None = None,
               ) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``rag serve`` over ``index_dir`` as a subprocess (log in ``workdir/server.log``), with
    no RAG_* variables but ``settings``; yields the process and its base URL once /health
    reports the index loaded."""
    port = free_port()
    rag = Path(sys.executable).with_name("rag")
    env = clean_env() | (settings or {})
    with open(workdir / "server.log", "wb") as log:
        process = subprocess.Popen([str(rag), "serve", "--index", str(index_dir), "--port", str(port)],
                                   stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env=env)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"rag serve exited with {process.returncode}: {server_log(workdir)}")
            try:
                if httpx.get(f"{base_url}/health", timeout=5, trust_env=False).json().get("index"):
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"rag serve did not answer /health in {timeout:g} s: {server_log(workdir)}")
            time.sleep(0.2)
        yield process, base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def server_log(workdir: Path, chars: int = 3000) -> str:
    path = workdir / "server.log"
    return path.read_text(encoding="utf-8", errors="replace")[-chars:] if path.exists() else ""


# -- the writer process ---------------------------------------------------------------------------


def start_writer(index_dir: Path, log: Path, pause: float, workdir: Path) -> subprocess.Popen[str]:
    """A writer process, its model loaded; it starts writing when told how long to (``go``)."""
    command = [sys.executable, str(Path(__file__).resolve()), "writer", str(index_dir), str(log),
               "--pause", str(pause)]
    process = subprocess.Popen(command, env=clean_env(), cwd=workdir, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    ready = process.stdout.readline().strip()
    if ready != "ready":
        process.kill()
        raise RuntimeError(f"the writer process did not start (exit status {process.wait()})")
    return process


def go(writer: subprocess.Popen[str], seconds: float) -> None:
    assert writer.stdin is not None
    writer.stdin.write(f"{seconds}\n")
    writer.stdin.close()


def run_writer(index_dir: Path, log_path: Path, pause: float) -> int:
    """Load the model, print ``ready``, read the number of seconds to write for from stdin,
    then add ``wrt-NNNN`` articles one at a time and delete every second one until they have
    passed. Each committed write is a line ``{"op", "id", "seconds"}`` of ``log_path`` (a
    failed one ``{"op": "error", ...}``)."""
    pipeline = RagPipeline(Settings(index_dir=index_dir, write_wait=60))
    pipeline.embedder.embed_query("warm up")
    pipeline.snapshot()
    print("ready", flush=True)
    deadline = time.monotonic() + float(sys.stdin.readline())
    kept: list[str] = []
    with open(log_path, "a", encoding="utf-8") as log:

        def record(op: str, doc_id: str, started: float, **extra: Any) -> None:
            entry = {"op": op, "id": doc_id, "seconds": round(time.perf_counter() - started, 4), **extra}
            log.write(json.dumps(entry) + "\n")
            log.flush()

        n = 0
        while time.monotonic() < deadline:
            n += 1
            doc = synthetic_record("wrt", n)
            started = time.perf_counter()
            try:
                pipeline.add([parse_record(doc, f"writer {n}")])
                record("add", doc["id"], started)
                kept.append(doc["id"])
                if n % 2 == 0:
                    victim = kept.pop(0)
                    started = time.perf_counter()
                    pipeline.delete([victim])
                    record("delete", victim, started)
            except Exception as exc:  # reported to whoever reads the log
                record("error", doc["id"], started, error=f"{type(exc).__name__}: {exc}")
            time.sleep(pause)
    return 0


def read_writes(log_path: Path) -> dict[str, list[Any]]:
    """The writer's log: its entries by operation ("add", "delete", "error")."""
    lines = log_path.read_text(encoding="utf-8").splitlines() if log_path.exists() else []
    entries = [json.loads(line) for line in lines if line.strip()]
    return {op: [e for e in entries if e["op"] == op] for op in ("add", "delete", "error")}


# -- clients and memory ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    route: str
    status: int  # 0: no response (transport error)
    ms: float
    at: float  # seconds since the start of the run
    error: str | None = None


def client_loop(base_url: str, start: float, seconds: float, offset: int) -> list[Sample]:
    """One client: GET /search and POST /ask in turn until ``seconds`` after ``start``."""
    samples: list[Sample] = []
    i = offset
    with httpx.Client(base_url=base_url, timeout=120, trust_env=False) as client:
        while (now := time.perf_counter()) - start < seconds:
            question = QUESTIONS[i % len(QUESTIONS)]
            route = "GET /search" if i % 2 else "POST /ask"
            error = None
            try:
                if i % 2:
                    response = client.get("/search", params={"q": question, "k": 5})
                else:
                    response = client.post("/ask", json={"question": question, "generator": "extractive"})
                status = response.status_code
                if status != 200:
                    error = response.text[:300]
            except httpx.HTTPError as exc:
                status, error = 0, f"{type(exc).__name__}: {exc}"
            samples.append(Sample(route, status, (time.perf_counter() - now) * 1000, now - start, error))
            i += 1
    return samples


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def sample_rss(pid: int, start: float, stop: threading.Event, into: list[tuple[float, int]]) -> None:
    while not stop.is_set():
        value = rss_kib(pid)
        if value is not None:
            into.append((time.perf_counter() - start, value))
        stop.wait(1.0)


def run_load(base_url: str, server_pid: int, clients: int, seconds: float,
             writer: subprocess.Popen[str] | None = None) -> dict[str, Any]:
    """The load itself, for ``seconds``: the clients, the RSS sampler and the ``writer``
    process (from :func:`start_writer`), if given. Returns the samples, the RSS series,
    the clients' wall time and the writer's exit status."""
    rss: list[tuple[float, int]] = []
    stop = threading.Event()
    start = time.perf_counter()
    sampler = threading.Thread(target=sample_rss, args=(server_pid, start, stop, rss), daemon=True)
    sampler.start()
    try:
        if writer is not None:
            go(writer, seconds)
        with ThreadPoolExecutor(max_workers=clients, thread_name_prefix="load-client") as pool:
            futures = [pool.submit(client_loop, base_url, start, seconds, n) for n in range(clients)]
            samples = [s for f in futures for s in f.result()]
        wall_s = time.perf_counter() - start
        stop.set()
        writer_status = writer.wait(timeout=120) if writer is not None else None
    finally:
        if writer is not None and writer.poll() is None:
            writer.kill()
            writer.wait()
        stop.set()
        sampler.join(timeout=5)
    return {"samples": samples, "rss": rss, "wall_s": wall_s, "writer_status": writer_status}


# -- figures --------------------------------------------------------------------------------------


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    p50, p95, p99 = np.percentile(np.asarray(values), [50, 95, 99])
    return {"p50_ms": round(float(p50), 1), "p95_ms": round(float(p95), 1), "p99_ms": round(float(p99), 1),
            "max_ms": round(max(values), 1)}


def thirds(rss: list[tuple[float, int]]) -> tuple[float, float]:
    """Median RSS (KiB) of the middle and of the last third of the series."""
    values = [kib for _, kib in rss]
    third = max(1, len(values) // 3)
    return float(np.median(values[third:2 * third] or values)), float(np.median(values[2 * third:] or values))


def figures(run: dict[str, Any], clients: int, seconds: float, writes: dict[str, list[Any]] | None) -> dict[str, Any]:
    samples: list[Sample] = run["samples"]
    routes: dict[str, Any] = {}
    for route in sorted({s.route for s in samples}):
        mine = [s for s in samples if s.route == route]
        routes[route] = {"requests": len(mine), "errors": sum(s.status != 200 for s in mine),
                         **percentiles([s.ms for s in mine if s.status == 200]),
                         "per_s": round(len(mine) / run["wall_s"], 2)}
    rss = run["rss"]
    middle, last = thirds(rss) if rss else (0.0, 0.0)
    return {
        "clients": clients, "seconds": seconds, "wall_s": round(run["wall_s"], 2),
        "requests": len(samples), "errors": sum(s.status != 200 for s in samples),
        "throughput_per_s": round(len(samples) / run["wall_s"], 2),
        "routes": routes,
        "writes": {op: len(entries) for op, entries in (writes or {}).items()},
        "write_p50_ms": {op: percentiles([e["seconds"] * 1000 for e in entries])["p50_ms"]
                         for op, entries in (writes or {}).items() if op != "error"},
        "rss_mib": {"start": round(rss[0][1] / 1024, 1) if rss else None,
                    "end": round(rss[-1][1] / 1024, 1) if rss else None,
                    "max": round(max(k for _, k in rss) / 1024, 1) if rss else None,
                    "middle_third_median": round(middle / 1024, 1),
                    "last_third_median": round(last / 1024, 1), "samples": len(rss),
                    "series": [[round(t, 1), round(kib / 1024, 1)] for t, kib in rss]},
    }


def show(result: dict[str, Any]) -> None:
    print(f"{result['clients']} clients for {result['seconds']:g} s: {result['requests']} requests, "
          f"{result['errors']} errors, {result['throughput_per_s']:.1f} requests/s")
    rows = [[route, str(r["requests"]), str(r["errors"]), f"{r['p50_ms']:.0f}", f"{r['p95_ms']:.0f}",
             f"{r['p99_ms']:.0f}", f"{r['max_ms']:.0f}", f"{r['per_s']:.1f}"] for route, r in result["routes"].items()]
    print_table(["route", "requests", "errors", "p50 ms", "p95 ms", "p99 ms", "max ms", "per s"], rows)
    writes = result["writes"]
    print(f"writes by the other process: {writes.get('add', 0)} added, {writes.get('delete', 0)} deleted, "
          f"{writes.get('error', 0)} failed (median ms: {result['write_p50_ms']})")
    m = result["rss_mib"]
    print(f"server RSS MiB: start {m['start']}, end {m['end']}, max {m['max']}; median of the middle third "
          f"{m['middle_third_median']}, of the last third {m['last_third_median']}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["writer"]:  # the writer process that the load run starts
        writer_parser = argparse.ArgumentParser(prog="load.py writer")
        writer_parser.add_argument("index", type=Path)
        writer_parser.add_argument("log", type=Path)
        writer_parser.add_argument("--pause", type=float, default=0.5)
        args = writer_parser.parse_args(argv[1:])
        return run_writer(args.index, args.log, args.pause)

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (default: 32)")
    parser.add_argument("--seconds", type=float, default=60, help="length of the run (default: 60)")
    parser.add_argument("--articles", type=int, default=30, help="synthetic articles besides seeds/ (default: 30)")
    parser.add_argument("--write-pause", type=float, default=0.5,
                        help="seconds the writer waits between writes (default: 0.5)")
    parser.add_argument("--no-writer", action="store_true", help="reads only")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.seconds <= 0:
        print("error: --clients and --seconds must be positive", file=sys.stderr)
        return 2

    workdir = Path(tempfile.mkdtemp(prefix="rag-bench-load-"))
    try:
        index_dir = workdir / "index"
        ids = build_index(index_dir, args.articles)
        print(f"index: {len(ids)} documents at {index_dir}", flush=True)
        log = workdir / "writes.jsonl"
        with rag_server(index_dir, workdir) as (process, base_url):
            writer = None if args.no_writer else start_writer(index_dir, log, args.write_pause, workdir)
            run = run_load(base_url, process.pid, args.clients, args.seconds, writer)
        result = figures(run, args.clients, args.seconds, None if args.no_writer else read_writes(log))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    show(result)
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
