"""Helpers shared by the benchmark scripts: paths and building (or reusing) a
scratch index of an evaluation corpus."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

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
