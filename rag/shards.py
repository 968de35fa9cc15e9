"""Sharded generations: one generation made of several shards, searched as one index.

A distributed build (``rag ingest --engine ray``) writes its output as shards, each a
run of consecutive articles in input order with everything about them::

    gen-000003/
        manifest.json          format version 3, the shards in order, and the usual model,
                               chunking and count entries
        shards/shard-00000/
            documents.jsonl    the shard's cleaned articles (as in an unsharded generation)
            chunks.jsonl       their chunk ids and character offsets, in row order
            vectors.npy        float32, row i for chunk i of the shard
            bm25/terms.*       the BM25 tokens of every chunk and their sentence sizes
        shards/shard-00001/ ...

A reader loads a sharded generation into one :class:`~rag.store.IndexSnapshot`: the
shards' rows follow each other in shard order, which is the order in which a
single-process build stores the same articles; the exact inner-product index holds every
shard's vectors; and BM25 is built once over the tokens of all the shards, so its
statistics are global: a term's document frequency is the sum of its frequencies in the
shards and the average chunk length is the total length over the total count, exactly as
for one index of the same chunks. A search therefore ranks every chunk of every shard in
one list with the scores a single-process build gives. No per-shard BM25 arrays are
written: per-shard IDF and length statistics would rank chunks of different shards on
different scales.

Shards are written into the generation's temporary directory and published by the same
atomic switch as any commit (:meth:`IndexStore.publish`), so a reader never sees some of
them. The next write to the index (``rag add``, ``rag delete``, a local ``rag ingest``)
or ``rag shards merge`` commits the whole snapshot as one unsharded generation, which
also brings the approximate (IVF) index for large corpora; a sharded generation is
searched exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rag.errors import IndexCorruptError
from rag.lexical import ChunkTerms, LexicalIndex, SentenceTerms
from rag.store import (
    FAISS_FACTORY,
    SHARDED_FORMAT_VERSION,
    IndexSnapshot,
    IndexSpec,
    IndexStore,
    StoredDocument,
    generation_manifest,
    read_table,
    write_table,
)
from rag.types import Chunk

SHARDS_DIR = "shards"
SHARD_VECTORS = "vectors.npy"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shard:
    """Consecutive articles with their chunks; ``vectors[i]`` and ``terms[i]`` belong to ``chunks[i]``."""

    documents: list[StoredDocument]
    chunks: list[Chunk]
    vectors: np.ndarray
    terms: ChunkTerms

    def check(self) -> None:
        if len(self.chunks) != len(self.vectors) or len(self.terms) != len(self.chunks):
            raise ValueError("a shard needs one vector and one token list per chunk")
        ids = {d.article.id for d in self.documents}
        if any(c.doc_id not in ids for c in self.chunks):
            raise ValueError("every chunk of a shard must belong to one of its documents")


def shard_name(number: int) -> str:
    return f"shard-{number:05d}"


def commit_shards(store: IndexStore, spec: IndexSpec, shards: Iterable[Shard]) -> str:
    """Write ``shards`` (consumed one at a time, so that only one is in memory) as a new
    generation and make it current; returns its name. Call while holding the write lock.

    If anything fails before the switch (reading ``shards`` may run a whole distributed
    build), the temporary directory is removed and the current generation stays as it was."""
    name, tmp = store.new_generation()
    try:
        entries: list[dict[str, Any]] = []
        seen: set[str] = set()
        dimension = spec.model.dimension
        for shard in shards:
            shard.check()
            if shard.vectors.ndim != 2 or shard.vectors.shape[1] != dimension:
                raise ValueError(f"shard vectors must be {dimension}-d")
            repeated = seen.intersection(d.article.id for d in shard.documents)
            if repeated:
                raise ValueError(f"document {sorted(repeated)[0]!r} is in two shards")
            seen.update(d.article.id for d in shard.documents)
            entries.append(_write_shard(tmp / SHARDS_DIR / shard_name(len(entries)), shard))
        documents = sum(e["documents"] for e in entries)
        chunks = sum(e["chunks"] for e in entries)
        manifest = generation_manifest(
            spec, name, SHARDED_FORMAT_VERSION,
            {"factory": FAISS_FACTORY, "metric": "inner_product", "built": "on load, from each shard's vectors.npy"},
            documents, chunks,
        )
        manifest["lexical"]["statistics"] = "global: one BM25 over the tokens of every shard, built on load"
        manifest["shards"] = entries
        return store.publish(tmp, name, manifest)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_shard(directory: Path, shard: Shard) -> dict[str, Any]:
    directory.mkdir(parents=True)
    write_table(directory, shard.documents, shard.chunks)
    np.save(directory / SHARD_VECTORS, np.ascontiguousarray(shard.vectors, dtype=np.float32), allow_pickle=False)
    SentenceTerms.of(shard.terms).save(directory / "bm25")
    return {"name": directory.name, "documents": len(shard.documents), "chunks": len(shard.chunks),
            "tokens": int(sum(len(t) for t in shard.terms.tokens))}


def read_shards(gen_dir: Path, manifest: dict[str, Any]) -> Iterator[Shard]:
    """The shards of a sharded generation, in order. Raises IndexCorruptError."""
    for entry in manifest.get("shards", []):
        directory = gen_dir / SHARDS_DIR / str(entry.get("name"))
        try:
            documents, chunks = read_table(directory)
            vectors = np.load(directory / SHARD_VECTORS, allow_pickle=False)
            terms = SentenceTerms.read(directory / "bm25", mmap=False)
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise IndexCorruptError(f"shard {directory.name} of {gen_dir} cannot be read: {exc}") from exc
        if (terms is None or len(terms) != len(chunks) or vectors.dtype != np.float32 or vectors.ndim != 2
                or len(vectors) != len(chunks) or entry.get("chunks") != len(chunks)
                or entry.get("documents") != len(documents)):
            raise IndexCorruptError(
                f"shard {directory.name} of {gen_dir} is inconsistent (its vectors, tokens and chunk table do not "
                "match the manifest); rebuild the index"
            )
        yield Shard(list(documents.values()), chunks, vectors, terms.chunk_terms())


def load_sharded(root: Path, generation: str, manifest: dict[str, Any], nprobe: int) -> IndexSnapshot:
    """One snapshot of every shard of ``generation``: rows in shard order, one exact vector
    index and one BM25 with global statistics."""
    import faiss

    gen_dir = root / generation
    documents: dict[str, StoredDocument] = {}
    chunks: list[Chunk] = []
    vectors: list[np.ndarray] = []
    terms = ChunkTerms([], [])
    dimension = int(manifest.get("model", {}).get("dimension", 0))
    for shard in read_shards(gen_dir, manifest):
        for document in shard.documents:
            if document.article.id in documents:
                raise IndexCorruptError(f"the index at {root} ({generation}) holds {document.article.id!r} twice")
            documents[document.article.id] = document
        if len(shard.vectors) and shard.vectors.shape[1] != dimension:
            raise IndexCorruptError(f"the index at {root} ({generation}) has vectors of another dimension")
        chunks.extend(shard.chunks)
        vectors.append(shard.vectors)
        terms = terms.extend(shard.terms)
    if manifest.get("counts", {}).get("chunks") != len(chunks):
        raise IndexCorruptError(f"the index at {root} ({generation}) is inconsistent: its shards hold "
                                f"{len(chunks)} chunks, its manifest says {manifest.get('counts', {}).get('chunks')}")
    exact = np.concatenate(vectors) if vectors else np.zeros((0, dimension), dtype=np.float32)
    from rag.store import faiss_id

    index = faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))
    if len(exact):
        ids = np.fromiter((faiss_id(c.id) for c in chunks), dtype=np.int64, count=len(chunks))
        index.add_with_ids(np.ascontiguousarray(exact), ids)
    lexical = LexicalIndex.build(terms)
    log.info("loaded %s: %d shards, %d chunks", generation, len(manifest.get("shards", [])), len(chunks))
    return IndexSnapshot(generation, manifest, documents, chunks, index, lexical, gen_dir, nprobe=nprobe,
                         terms=terms)
