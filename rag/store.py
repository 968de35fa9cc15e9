"""The index on disk: FAISS vectors, the chunk table, the documents, a BM25
index and a manifest that describes how they were made.

Layout of an index directory::

    CURRENT               name of the committed generation, replaced atomically
    gen-000007/           one complete, immutable generation
        manifest.json     format version, model identity, chunking, counts
        vectors.faiss     IndexIDMap2(IndexFlatIP): exact inner product, stable int64 ids
        chunks.jsonl      chunk id, document id, position and character offsets, in row order
        documents.jsonl   cleaned articles with metadata and a content hash
        bm25/             bm25s arrays and vocabulary (JSON and .npy, no pickle)

    .lock                 held (flock) by the one process that writes at a time

A commit writes a new generation in a temporary directory, syncs it, renames
it into place and then swaps ``CURRENT``; a reader therefore sees either the
old or the new generation, never a mix, and a crash leaves the last commit intact.
Every generation is complete and compact: deleted or replaced chunks are simply
not copied into the next one, and generations older than the previous one are
removed, so the space of deletions comes back at the next commit while readers
go on with the generation they hold in memory.

Writers take the lock (:meth:`IndexStore.writer`); the first thing a writer does
is roll back what a killed writer left behind: temporary directories and a
generation that was renamed into place but never made current.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rag.embedding import ModelIdentity
from rag.errors import IndexBusyError, IndexCorruptError, IndexMismatchError, IndexNotFoundError
from rag.lexical import LexicalIndex, tokenize
from rag.types import Article, Chunk

FORMAT_VERSION = 1
FAISS_FACTORY = "IDMap2,Flat"
log = logging.getLogger(__name__)
CURRENT = "CURRENT"
LOCK = ".lock"
LOAD_ATTEMPTS = 3
# The steps of a write at which a store can be asked to pause (see IndexStore.pause_point).
PAUSE_STEPS = ("embedded", "written", "renamed", "switched")


def faiss_id(chunk_id: str) -> int:
    """A stable non-negative int64 id for a chunk, derived from its id."""
    digest = hashlib.blake2b(chunk_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFF_FFFF_FFFF_FFFF


def content_hash(article: Article) -> str:
    """Hash of everything stored about an article; unchanged input gives the same hash."""
    payload = json.dumps(article.to_dict() | {"origin": None}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class IndexSpec:
    """The settings an index must have been built with to be used."""

    model: ModelIdentity
    chunk_tokens: int
    chunk_overlap: int
    embed_titles: bool = False

    def check(self, manifest: dict[str, Any], where: Path) -> None:
        model = manifest.get("model", {})
        chunking = manifest.get("chunking", {})
        if model.get("sha256") != self.model.sha256 or model.get("dimension") != self.model.dimension:
            raise IndexMismatchError(
                f"the index at {where} was built with the embedding model {model.get('name')!r} "
                f"({model.get('dimension')}-d, sha256 {str(model.get('sha256'))[:12]}), but the current "
                f"model is {self.model.name!r} ({self.model.dimension}-d, sha256 {self.model.sha256[:12]}); "
                "rebuild it with `rag ingest --rebuild PATHS` or point --index elsewhere"
            )
        if bool(chunking.get("embed_titles", False)) != self.embed_titles:
            raise IndexMismatchError(
                f"the index at {where} was built {'with' if chunking.get('embed_titles') else 'without'} "
                f"article titles in the embedded text, but the settings ask "
                f"{'for' if self.embed_titles else 'against'} them; rebuild it with `rag ingest --rebuild PATHS`, "
                "or set RAG_EMBED_TITLES to the index's value"
            )
        if (chunking.get("max_tokens"), chunking.get("overlap")) != (self.chunk_tokens, self.chunk_overlap):
            raise IndexMismatchError(
                f"the index at {where} was built with chunks of {chunking.get('max_tokens')} tokens "
                f"(overlap {chunking.get('overlap')}), but the settings ask for {self.chunk_tokens} "
                f"(overlap {self.chunk_overlap}); rebuild it with `rag ingest --rebuild PATHS`, or set "
                "RAG_CHUNK_TOKENS / RAG_CHUNK_OVERLAP to the index's values"
            )


@dataclass(frozen=True)
class StoredDocument:
    article: Article
    content_hash: str


class IndexSnapshot:
    """One committed generation, loaded into memory; never modified after loading."""

    def __init__(
        self,
        generation: str,
        manifest: dict[str, Any],
        documents: dict[str, StoredDocument],
        chunks: list[Chunk],
        vectors: Any,
        lexical: LexicalIndex,
        directory: Path | None = None,
    ):
        self.generation = generation
        self.directory = directory
        self.manifest = manifest
        self.documents = documents
        self.chunks = chunks
        self.vectors = vectors  # faiss.IndexIDMap2
        self.lexical = lexical
        self.faiss_ids = np.fromiter((faiss_id(c.id) for c in chunks), dtype=np.int64, count=len(chunks))
        self.row_by_faiss_id = {int(fid): row for row, fid in enumerate(self.faiss_ids)}
        # Data derived from the snapshot by readers, computed on first use (a snapshot never changes).
        self.derived: dict[str, Any] = {}
        self.rows_by_doc: dict[str, list[int]] = {}
        for row, c in enumerate(chunks):
            self.rows_by_doc.setdefault(c.doc_id, []).append(row)

    def document_vectors(self, doc_id: str) -> np.ndarray:
        """The stored vectors of one document's chunks, in chunk order."""
        rows = self.rows_by_doc.get(doc_id, [])
        if not rows:
            return np.zeros((0, int(self.manifest["model"]["dimension"])), dtype=np.float32)
        return np.stack([self.vectors.reconstruct(int(self.faiss_ids[r])) for r in rows])

    def chunk_terms(self) -> list[list[str]]:
        """The BM25 tokens of every chunk, in row order: read from the generation if it saved
        them, else computed."""
        terms = LexicalIndex.load_terms(self.directory / "bm25") if self.directory is not None else None
        if terms is None or len(terms) != len(self.chunks):
            terms = tokenize([c.text for c in self.chunks])
        return terms

    def all_vectors(self) -> np.ndarray:
        """Every stored vector, row ``i`` belonging to chunk ``i``."""
        import faiss

        dim = int(self.manifest["model"]["dimension"])
        if not self.chunks:
            return np.zeros((0, dim), dtype=np.float32)
        return faiss.downcast_index(self.vectors.index).reconstruct_n(0, len(self.chunks))


class IndexStore:
    """Reads and atomically writes the generations of an index directory."""

    def __init__(self, root: Path, pause_at: str | None = None):
        """``pause_at``, a debugging aid for crash tests: the step of every write (one of
        ``PAUSE_STEPS``) at which the writer announces itself on stderr and waits to be killed."""
        self.root = Path(root)
        self.pause_at = pause_at

    def pause_point(self, step: str) -> None:
        """Stop here for good if this store was asked to pause at ``step``."""
        if step == self.pause_at:
            log.warning("paused at %s", step)
            while True:
                time.sleep(60)

    def current_generation(self) -> str | None:
        try:
            name = (self.root / CURRENT).read_text(encoding="utf-8").strip()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return name or None

    def exists(self) -> bool:
        return self.current_generation() is not None

    def read_manifest(self) -> dict[str, Any]:
        generation = self._require_generation()
        return self._read_json(self.root / generation / "manifest.json")

    def load(self, spec: IndexSpec | None = None) -> IndexSnapshot:
        """Load the committed generation; with ``spec``, refuse one built otherwise.

        A writer may commit (and remove an old generation) while this reads; a read
        that fails because the generation went away is retried with the new one."""
        for attempt in range(LOAD_ATTEMPTS):
            generation = self._require_generation()
            try:
                return self._load_generation(generation, spec)
            except IndexCorruptError:
                if attempt + 1 == LOAD_ATTEMPTS or self.current_generation() == generation:
                    raise
        raise AssertionError("unreachable")

    def _load_generation(self, generation: str, spec: IndexSpec | None) -> IndexSnapshot:
        import faiss

        gen_dir = self.root / generation
        manifest = self._read_json(gen_dir / "manifest.json")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise IndexMismatchError(
                f"the index at {self.root} has format version {manifest.get('format_version')}, "
                f"this version of rag reads {FORMAT_VERSION}; rebuild it with `rag ingest --rebuild PATHS`"
            )
        if spec is not None:
            spec.check(manifest, self.root)
        try:
            documents = {}
            for record in _read_jsonl(gen_dir / "documents.jsonl"):
                stored_hash = record.pop("content_hash")
                documents[record["id"]] = StoredDocument(Article(**record), stored_hash)
            chunks = []
            for record in _read_jsonl(gen_dir / "chunks.jsonl"):
                text = documents[record["doc_id"]].article.text
                chunks.append(Chunk(record["id"], record["doc_id"], record["position"], record["start"],
                                    record["end"], text[record["start"]:record["end"]]))
            vectors = faiss.read_index(str(gen_dir / "vectors.faiss"))
            lexical = LexicalIndex.load(gen_dir / "bm25", len(chunks))
        except (OSError, KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise IndexCorruptError(f"the index at {self.root} ({generation}) cannot be read: {exc}") from exc
        if vectors.ntotal != len(chunks) or manifest.get("counts", {}).get("chunks") != len(chunks):
            raise IndexCorruptError(
                f"the index at {self.root} ({generation}) is inconsistent: {vectors.ntotal} vectors "
                f"for {len(chunks)} chunks; rebuild it with `rag ingest --rebuild PATHS`"
            )
        return IndexSnapshot(generation, manifest, documents, chunks, vectors, lexical, gen_dir)

    def commit(
        self,
        spec: IndexSpec,
        documents: Iterable[StoredDocument],
        chunks: Sequence[Chunk],
        vectors: np.ndarray,
        terms: list[list[str]] | None = None,
    ) -> str:
        """Write a new generation holding exactly these documents and chunks
        (``vectors[i]`` and ``terms[i]``, the BM25 tokens, belong to ``chunks[i]``;
        tokens not given are computed) and make it current. Returns its name."""
        import faiss

        documents = list(documents)
        if len(chunks) != len(vectors) or (terms is not None and len(terms) != len(chunks)):
            raise ValueError("one vector (and one token list, if any) per chunk is required")
        self.root.mkdir(parents=True, exist_ok=True)
        previous = self.current_generation()
        numbers = [_generation_number(p.name) for p in self.root.iterdir() if p.name.startswith("gen-")]
        name = f"gen-{max([0, *numbers]) + 1:06d}"
        tmp = self.root / f".{name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()

        index = faiss.IndexIDMap2(faiss.IndexFlatIP(spec.model.dimension))
        if len(chunks):
            ids = np.fromiter((faiss_id(c.id) for c in chunks), dtype=np.int64, count=len(chunks))
            index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
        faiss.write_index(index, str(tmp / "vectors.faiss"))
        _write_jsonl(tmp / "documents.jsonl",
                     (d.article.to_dict() | {"content_hash": d.content_hash} for d in documents))
        _write_jsonl(tmp / "chunks.jsonl",
                     ({"id": c.id, "doc_id": c.doc_id, "position": c.position, "start": c.start,
                       "end": c.end} for c in chunks))
        LexicalIndex.build(terms if terms is not None else tokenize([c.text for c in chunks])).save(tmp / "bm25")
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        manifest = {
            "format_version": FORMAT_VERSION,
            "generation": name,
            "created_at": now,
            "model": asdict(spec.model) | {"normalized": True},
            "chunking": {"max_tokens": spec.chunk_tokens, "overlap": spec.chunk_overlap,
                         "embed_titles": spec.embed_titles,
                         "sentence_aware": True},
            "faiss": {"factory": FAISS_FACTORY, "metric": "inner_product"},
            "lexical": {"kind": "bm25s", "tokens": "english stop words, snowball stems"},
            "counts": {"documents": len(documents), "chunks": len(chunks)},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        _fsync_tree(tmp)
        self.pause_point("written")
        os.rename(tmp, self.root / name)
        _fsync_dir(self.root)
        self.pause_point("renamed")

        pointer = self.root / f".{CURRENT}.tmp-{os.getpid()}"
        with open(pointer, "w", encoding="utf-8") as fh:
            fh.write(name + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(pointer, self.root / CURRENT)
        _fsync_dir(self.root)
        self.pause_point("switched")
        self._prune(keep={name, previous})
        return name

    @contextmanager
    def writer(self, wait: float = 0.0) -> Iterator[None]:
        """Hold the index's write lock (one writer at a time across processes),
        waiting up to ``wait`` seconds for it, and clean up after a killed writer."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                        raise
                    if time.monotonic() >= deadline:
                        raise IndexBusyError(self._busy_message(fd)) from None
                    time.sleep(0.05)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self.recover()
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def _busy_message(self, fd: int) -> str:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        who = f"process {holder}" if holder.isdigit() else "another process"
        return (f"the index at {self.root} is being written by {who}; only one writer at a time. "
                "Try again when it has finished (the CLI's --wait SECONDS waits for it)")

    def recover(self) -> None:
        """Roll back what an interrupted commit left: temporary files, and generations
        that never became current. Call only while holding the write lock."""
        current = self.current_generation()
        current_number = _generation_number(current) if current else 0
        for path in self.root.iterdir():
            unfinished = path.name.startswith((".gen-", f".{CURRENT}.tmp-"))
            never_current = path.name.startswith("gen-") and _generation_number(path.name) > current_number
            if unfinished or never_current:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)

    def _prune(self, keep: set[str | None]) -> None:
        for path in self.root.iterdir():
            old_generation = path.name.startswith("gen-") and path.name not in keep
            if path.is_dir() and (old_generation or path.name.startswith(".gen-")):
                shutil.rmtree(path, ignore_errors=True)

    def _require_generation(self) -> str:
        generation = self.current_generation()
        if generation is None:
            raise IndexNotFoundError(
                f"no index at {self.root}: build one with `rag ingest PATHS` (for example `rag ingest seeds`)"
            )
        if not (self.root / generation).is_dir():
            raise IndexCorruptError(f"the index at {self.root} names {generation}, which is missing")
        return generation

    def _read_json(self, path: Path) -> dict[str, Any]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise IndexCorruptError(f"cannot read {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise IndexCorruptError(f"{path} is not a JSON object")
        return data


def _generation_number(name: str) -> int:
    try:
        return int(name.split("-", 1)[1])
    except (IndexError, ValueError):
        return 0


def _read_jsonl(path: Path) -> Iterable[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def _write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")


def _fsync_tree(directory: Path) -> None:
    for path in sorted(directory.rglob("*"), reverse=True):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
        else:
            _fsync_dir(path)
    _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
