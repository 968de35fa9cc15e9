"""Helpers shared by the benchmark scripts: paths, building (or reusing) a scratch
index of an evaluation corpus, tables, latency figures, timing calls of an object,
and a description of the machine and package versions."""

from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from rag.evaluation import index_matches
from rag.pipeline import RagPipeline

REPO_ROOT = Path(__file__).resolve().parent.parent


def resolve_from_repo(path: str | Path) -> Path:
    path = Path(path).expanduser()
    return (path if path.is_absolute() else REPO_ROOT / path).resolve()


def build_index(pipeline: RagPipeline, corpus: Path, rebuild: bool) -> dict[str, Any]:
    ok, why = (False, "--rebuild given") if rebuild else index_matches(pipeline, corpus)
    if ok:
        snapshot = pipeline.snapshot()
        print(f"reusing the index at {pipeline.settings.index_dir} ({snapshot.generation}): {why}")
        return {"reused": True, "generation": snapshot.generation, "documents": len(snapshot.documents),
                "chunks": len(snapshot.chunks)}
    print(f"building the index at {pipeline.settings.index_dir}: {why}", flush=True)
    report = pipeline.ingest(
        [corpus], rebuild=True, progress=True,
        on_problem=lambda p: print(f"  skipped {p}", file=sys.stderr),
    )
    rate = report.chunks_embedded / report.seconds if report.seconds else 0.0
    print(f"ingest: {report.documents} documents, {report.chunks} chunks "
          f"({report.chunks_embedded} embedded) in {report.seconds:.1f} s = {rate:.1f} chunks/s; "
          f"{len(report.problems)} problems", flush=True)
    return {"reused": False, "generation": report.generation, "documents": report.documents,
            "chunks": report.chunks, "chunks_embedded": report.chunks_embedded,
            "seconds": round(report.seconds, 2), "chunks_per_s": round(rate, 2),
            "problems": len(report.problems)}


def first_articles(corpus: Path, n: int, dest: Path) -> Path:
    """The first ``n`` records of a .jsonl corpus, as a file of their own."""
    if corpus.suffix.lower() != ".jsonl":
        raise SystemExit(f"error: --limit needs a .jsonl corpus, not {corpus}")
    with open(corpus, encoding="utf-8") as src, open(dest, "w", encoding="utf-8") as out:
        written = 0
        for line in src:
            if written == n:
                break
            if line.strip():
                out.write(line)
                written += 1
    return dest


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in pairs)

    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write benchmark results as indented JSON and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {path}")


def latency_stats(samples_ms: list[float]) -> dict[str, float]:
    """Count, p50/p95/p99 (linear interpolation), mean, min and max of some times in ms."""
    if not samples_ms:
        return {"n": 0, "p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0, "mean_ms": 0.0, "min_ms": 0.0, "max_ms": 0.0}
    values = np.asarray(samples_ms, dtype=float)
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"n": len(samples_ms), "p50_ms": round(float(p50), 2), "p95_ms": round(float(p95), 2),
            "p99_ms": round(float(p99), 2), "mean_ms": round(float(values.mean()), 2),
            "min_ms": round(float(values.min()), 2), "max_ms": round(float(values.max()), 2)}


class CallTimes:
    """Wall seconds and calls spent in named callables; see :func:`timed_calls`.

    Only the outermost timed call of a thread counts, so a timed method that calls
    another timed one is not counted twice."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._local = threading.local()

    def reset(self) -> None:
        self.seconds = dict.fromkeys(self.seconds, 0.0)
        self.calls = dict.fromkeys(self.calls, 0)

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        self.seconds.setdefault(name, 0.0)
        self.calls.setdefault(name, 0)

        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if getattr(self._local, "busy", False):
                return function(*args, **kwargs)
            self._local.busy = True
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - started
                self.calls[name] += 1
                self._local.busy = False

        return timed


_ABSENT = object()


@contextmanager
def timed_calls(target: object, names: Sequence[str], times: CallTimes | None = None) -> Iterator[CallTimes]:
    """Time every call of ``target``'s attributes ``names`` (methods of an instance, or
    functions of a module) until the block ends, then put the originals back."""
    times = times if times is not None else CallTimes()
    own = getattr(target, "__dict__", {})
    saved = {name: own.get(name, _ABSENT) for name in names}
    for name in names:
        setattr(target, name, times.wrap(name, getattr(target, name)))
    try:
        yield times
    finally:
        for name, value in saved.items():
            if value is _ABSENT:
                delattr(target, name)
            else:
                setattr(target, name, value)


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def machine_and_versions() -> dict[str, Any]:
    """What a benchmark ran on: CPUs, load, Python and package versions, the git commit."""
    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="ascii", errors="ignore").splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, False
    packages = ("rag-news", "torch", "sentence-transformers", "transformers", "faiss-cpu", "bm25s", "numpy",
                "fastapi", "uvicorn", "httpx", "onnxruntime")
    return {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": cpu_model,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {name: v for name in packages if (v := _version(name)) is not None},
        "git_commit": f"{commit}{' (with uncommitted changes)' if dirty else ''}" if commit else None,
    }
