"""Helpers shared by the benchmark scripts: paths and building (or reusing) a
scratch index of an evaluation corpus."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rag.corpus import ReadProblem, read_articles
from rag.errors import IndexMismatchError
from rag.pipeline import RagPipeline
from rag.store import content_hash

REPO_ROOT = Path(__file__).resolve().parent.parent


def resolve_from_repo(path: str | Path) -> Path:
    path = Path(path).expanduser()
    return (path if path.is_absolute() else REPO_ROOT / path).resolve()


def corpus_hashes(corpus: Path) -> dict[str, str]:
    """``doc_id -> content hash`` of the articles the pipeline would ingest from ``corpus``."""
    hashes: dict[str, str] = {}
    for item in read_articles([corpus]):
        if not isinstance(item, ReadProblem):
            hashes[item.id] = content_hash(item)
    return hashes


def index_matches(pipeline: RagPipeline, corpus: Path) -> tuple[bool, str]:
    """Whether the index holds exactly the corpus, built with the current model and chunking."""
    if not pipeline.store.exists():
        return False, "no index yet"
    try:
        snapshot = pipeline.snapshot()
    except IndexMismatchError as exc:
        return False, f"settings differ ({exc})"
    stored = {doc_id: doc.content_hash for doc_id, doc in snapshot.documents.items()}
    if stored != corpus_hashes(corpus):
        return False, "documents differ from the corpus"
    return True, "matches the corpus and settings"


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
