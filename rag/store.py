"""The index on disk: FAISS vectors, the chunk table, the documents, a BM25
index and a manifest that describes how they were made.

Layout of an index directory::

    CURRENT               name of the committed generation, replaced atomically
    gen-000007/           one complete, immutable generation
        manifest.json     format version, model identity, chunking, FAISS index and its parameters, counts
        vectors.faiss     the search index, by corpus size (``IndexLayout``): below the threshold
                          IndexIDMap2(IndexFlatIP), exact inner product; at or above it an inverted
                          file with 8-bit scalar quantisation (IVF<nlist>,SQ8), approximate
        vectors.npy       with the IVF index only: the exact float32 vectors, row i for chunk i
                          (memory-mapped on load; the flat index holds them exactly itself)
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

The IVF index is not rebuilt on every commit: a commit clones the previous
generation's, removes the ids of deleted or re-embedded chunks and adds the new
ones; it trains a fresh one only when the corpus first crosses the threshold, when
it has grown ``retrain_growth`` times beyond the size the index was trained on, or
when ``nlist`` is set to another value. Kept chunks' vectors are copied from the
exact ``vectors.npy``, never decoded from the quantised index, so they never drift.

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
from rag.lexical import ChunkTerms, LexicalIndex, SentenceTerms
from rag.types import Article, Chunk

# Generations with the exact flat index keep format version 1, so that indexes written before
# the IVF index existed still load and versions without it still read small indexes; a generation
# with the IVF index (and vectors.npy) is version 2, which such older versions refuse clearly.
FORMAT_VERSION = 1
ANN_FORMAT_VERSION = 2
# A generation made of shards (rag/shards.py), each with its own vectors, chunk table and tokens.
SHARDED_FORMAT_VERSION = 3
READABLE_VERSIONS = (FORMAT_VERSION, ANN_FORMAT_VERSION, SHARDED_FORMAT_VERSION)
FAISS_FACTORY = "IDMap2,Flat"
EXACT_VECTORS = "vectors.npy"
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
class IndexLayout:
    """How a commit chooses the FAISS index for its corpus size (see ``bench/ann.py``).

    ``ann_threshold``: from this many chunks on, an IVF index with 8-bit scalar quantisation
    replaces exact search; an index that is already IVF stays so until the corpus shrinks
    below half the threshold (so that a corpus near the threshold does not switch back and
    forth). ``nlist``: inverted lists, 0 for about the square root of the chunk count.
    ``nprobe``: lists searched per query (a search setting: it applies to any loaded index).
    ``retrain_growth``: train afresh once the corpus is this many times the size the index was
    trained on. ``train_per_list``: training vectors sampled per list."""

    ann_threshold: int = 150_000
    nlist: int = 0
    nprobe: int = 64
    retrain_growth: float = 2.0
    train_per_list: int = 64

    def lists_for(self, n: int) -> int:
        return self.nlist or max(16, round(n ** 0.5))


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
        exact: np.ndarray | None = None,
        nprobe: int = IndexLayout.nprobe,
        terms: ChunkTerms | None = None,
    ):
        """``vectors`` is the search index; ``exact``, the exact vectors in row order, is given
        with an IVF index (a memory map of vectors.npy) and read from the flat index otherwise.
        ``terms``, the BM25 tokens of every chunk, is given when they are already in memory (a
        sharded generation reads them from its shards); otherwise they are read from ``directory``."""
        self.generation = generation
        self.directory = directory
        self.manifest = manifest
        self.documents = documents
        self.chunks = chunks
        self.vectors = vectors  # faiss.IndexIDMap2 (flat) or faiss.IndexIVFScalarQuantizer (ann)
        self.kind = "ann" if exact is not None else "flat"
        self.nprobe = nprobe
        self.lexical = lexical
        self._terms = terms
        self._exact = exact if exact is not None else _flat_view(vectors, len(chunks))
        self.faiss_ids = np.fromiter((faiss_id(c.id) for c in chunks), dtype=np.int64, count=len(chunks))
        self.row_by_faiss_id = {int(fid): row for row, fid in enumerate(self.faiss_ids)}
        # Data derived from the snapshot by readers, computed on first use (a snapshot never changes).
        self.derived: dict[str, Any] = {}
        self.rows_by_doc: dict[str, list[int]] = {}
        for row, c in enumerate(chunks):
            self.rows_by_doc.setdefault(c.doc_id, []).append(row)

    def row_vectors(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """The exact stored vectors of these rows (a copy), never decoded from a quantised index."""
        picked = np.asarray(rows, dtype=np.int64)
        if len(picked) == 0:
            return np.zeros((0, int(self.manifest["model"]["dimension"])), dtype=np.float32)
        return np.asarray(self._exact[picked], dtype=np.float32)

    def document_vectors(self, doc_id: str) -> np.ndarray:
        """The stored vectors of one document's chunks, in chunk order."""
        return self.row_vectors(self.rows_by_doc.get(doc_id, []))

    def chunk_terms(self) -> ChunkTerms:
        """The BM25 tokens of every chunk, in row order: read from the generation if it saved
        them, else computed."""
        if self._terms is not None:
            return self._terms
        terms = LexicalIndex.load_terms(self.directory / "bm25") if self.directory is not None else None
        if terms is None or len(terms) != len(self.chunks):
            terms = ChunkTerms.of([c.text for c in self.chunks])
        return terms

    def sentence_terms(self) -> SentenceTerms | None:
        """The term ids of each chunk's sentences, read once from the saved tokens; None for a
        generation that saved no sentence sizes (searching then tokenises what it needs)."""
        if "sentence_terms" not in self.derived:
            saved = SentenceTerms.read(self.directory / "bm25") if self.directory is not None else None
            if saved is None and self._terms is not None:
                saved = SentenceTerms.of(self._terms)
            self.derived["sentence_terms"] = saved if saved is not None and len(saved) == len(self.chunks) else None
        found: SentenceTerms | None = self.derived["sentence_terms"]
        return found

    def all_vectors(self) -> np.ndarray:
        """Every exact stored vector, row ``i`` belonging to chunk ``i``: read-only (a memory
        map of vectors.npy with the IVF index, a copy of the flat index's vectors otherwise)."""
        if self.kind == "ann":
            return self._exact
        return np.array(self._exact, dtype=np.float32)


def _flat_view(index: Any, n: int) -> np.ndarray:
    """The vectors of an IndexIDMap2(IndexFlat) as a read-only array over its memory, without a
    copy. Only copies of it (fancy indexing, ``np.array``) leave the snapshot that owns the index."""
    import faiss

    dim = int(index.d)
    if n == 0:
        return np.zeros((0, dim), dtype=np.float32)
    flat: Any = faiss.downcast_index(index.index)
    view = faiss.rev_swig_ptr(flat.get_xb(), n * dim).reshape(n, dim)
    view.setflags(write=False)
    return view


class IndexStore:
    """Reads and atomically writes the generations of an index directory."""

    def __init__(self, root: Path, pause_at: str | None = None, layout: IndexLayout | None = None):
        """``pause_at``, a debugging aid for crash tests: the step of every write (one of
        ``PAUSE_STEPS``) at which the writer announces itself on stderr and waits to be killed.
        ``layout`` chooses the FAISS index of each commit and the search settings of each load."""
        self.root = Path(root)
        self.pause_at = pause_at
        self.layout = layout or IndexLayout()

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
            generation = self.current_generation()
            try:
                # Between reading CURRENT and opening the generation, two commits may have made
                # it the one before the previous, which the second removes.
                return self._load_generation(self._require_generation(generation), spec)
            except IndexCorruptError:
                if attempt + 1 == LOAD_ATTEMPTS or self.current_generation() == generation:
                    raise
        raise AssertionError("unreachable")

    def _load_generation(self, generation: str, spec: IndexSpec | None) -> IndexSnapshot:
        import faiss

        gen_dir = self.root / generation
        manifest = self._read_json(gen_dir / "manifest.json")
        version = manifest.get("format_version")
        if version not in READABLE_VERSIONS:
            raise IndexMismatchError(
                f"the index at {self.root} has format version {version}, this version of rag reads "
                f"{', '.join(map(str, READABLE_VERSIONS[:-1]))} and {READABLE_VERSIONS[-1]}; rebuild it with "
                "`rag ingest --rebuild PATHS`"
            )
        if spec is not None:
            spec.check(manifest, self.root)
        if version == SHARDED_FORMAT_VERSION:
            from rag.shards import load_sharded

            return load_sharded(self.root, generation, manifest, self.layout.nprobe)
        try:
            documents, chunks = read_table(gen_dir)
            vectors = faiss.read_index(str(gen_dir / "vectors.faiss"))
            exact = None
            if version == ANN_FORMAT_VERSION:
                exact = np.load(gen_dir / EXACT_VECTORS, mmap_mode="r", allow_pickle=False)
            lexical = LexicalIndex.load(gen_dir / "bm25", len(chunks))
        except (OSError, KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise IndexCorruptError(f"the index at {self.root} ({generation}) cannot be read: {exc}") from exc
        exact_ok = exact is None or (exact.shape == (len(chunks), vectors.d) and exact.dtype == np.float32)
        if vectors.ntotal != len(chunks) or manifest.get("counts", {}).get("chunks") != len(chunks) or not exact_ok:
            raise IndexCorruptError(
                f"the index at {self.root} ({generation}) is inconsistent: {vectors.ntotal} vectors "
                f"for {len(chunks)} chunks; rebuild it with `rag ingest --rebuild PATHS`"
            )
        return IndexSnapshot(generation, manifest, documents, chunks, vectors, lexical, gen_dir, exact,
                             self.layout.nprobe)

    def commit(
        self,
        spec: IndexSpec,
        documents: Iterable[StoredDocument],
        chunks: Sequence[Chunk],
        vectors: np.ndarray,
        terms: ChunkTerms | None = None,
        previous: IndexSnapshot | None = None,
    ) -> str:
        """Write a new generation holding exactly these documents and chunks
        (``vectors[i]`` and ``terms[i]``, the BM25 tokens, belong to ``chunks[i]``;
        tokens not given are computed) and make it current. Returns its name.

        ``previous``, the generation these chunks were derived from, lets an IVF index be
        updated (its deleted and changed ids removed, new ones added) instead of trained afresh;
        without it (a rebuild) a corpus above the threshold gets a freshly trained index."""
        import faiss

        documents = list(documents)
        if len(chunks) != len(vectors) or (terms is not None and len(terms) != len(chunks)):
            raise ValueError("one vector (and one token list, if any) per chunk is required")
        name, tmp = self.new_generation()

        ids = np.fromiter((faiss_id(c.id) for c in chunks), dtype=np.int64, count=len(chunks))
        exact = np.ascontiguousarray(vectors, dtype=np.float32)
        index, faiss_manifest = vector_index(spec.model.dimension, ids, exact, self.layout, previous, name)
        faiss.write_index(index, str(tmp / "vectors.faiss"))
        ann = faiss_manifest["factory"] != FAISS_FACTORY
        if ann:
            np.save(tmp / EXACT_VECTORS, exact, allow_pickle=False)
        write_table(tmp, documents, chunks)
        LexicalIndex.build(terms if terms is not None else ChunkTerms.of([c.text for c in chunks])).save(tmp / "bm25")
        manifest = generation_manifest(spec, name, ANN_FORMAT_VERSION if ann else FORMAT_VERSION, faiss_manifest,
                                       len(documents), len(chunks))
        return self.publish(tmp, name, manifest)

    def new_generation(self) -> tuple[str, Path]:
        """The name of the next generation and a fresh temporary directory to write it in.
        Call only while holding the write lock."""
        self.root.mkdir(parents=True, exist_ok=True)
        numbers = [_generation_number(p.name) for p in self.root.iterdir() if p.name.startswith("gen-")]
        name = f"gen-{max([0, *numbers]) + 1:06d}"
        tmp = self.root / f".{name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        return name, tmp

    def publish(self, tmp: Path, name: str, manifest: dict[str, Any]) -> str:
        """Write ``manifest`` into the finished temporary directory ``tmp``, sync it, rename it
        to ``name`` and make it current (the atomic switch), then remove old generations."""
        previous_name = self.current_generation()
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
        self._prune(keep={name, previous_name})
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

    def _require_generation(self, generation: str | None = None) -> str:
        """``generation`` (default: the current one), checked to exist."""
        generation = generation or self.current_generation()
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


def generation_manifest(
    spec: IndexSpec, name: str, version: int, faiss_manifest: dict[str, Any], documents: int, chunks: int
) -> dict[str, Any]:
    """What a generation's manifest.json says about it (a sharded one adds its shards)."""
    return {
        "format_version": version,
        "generation": name,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": asdict(spec.model) | {"normalized": True},
        "chunking": {"max_tokens": spec.chunk_tokens, "overlap": spec.chunk_overlap,
                     "embed_titles": spec.embed_titles,
                     "sentence_aware": True},
        "faiss": faiss_manifest,
        "lexical": {"kind": "bm25s", "tokens": "english stop words, snowball stems"},
        "counts": {"documents": documents, "chunks": chunks},
    }


def write_table(directory: Path, documents: Iterable[StoredDocument], chunks: Iterable[Chunk]) -> None:
    """documents.jsonl (the cleaned articles and their hashes) and chunks.jsonl (ids and offsets)."""
    _write_jsonl(directory / "documents.jsonl",
                 (d.article.to_dict() | {"content_hash": d.content_hash} for d in documents))
    _write_jsonl(directory / "chunks.jsonl",
                 ({"id": c.id, "doc_id": c.doc_id, "position": c.position, "start": c.start,
                   "end": c.end} for c in chunks))


def read_table(directory: Path) -> tuple[dict[str, StoredDocument], list[Chunk]]:
    """The documents and chunks :func:`write_table` wrote (chunk texts cut from their articles).
    Raises OSError, KeyError, TypeError or ValueError when they cannot be read."""
    documents = {}
    for record in _read_jsonl(directory / "documents.jsonl"):
        stored_hash = record.pop("content_hash")
        documents[record["id"]] = StoredDocument(Article(**record), stored_hash)
    chunks = []
    for record in _read_jsonl(directory / "chunks.jsonl"):
        text = documents[record["doc_id"]].article.text
        chunks.append(Chunk(record["id"], record["doc_id"], record["position"], record["start"],
                            record["end"], text[record["start"]:record["end"]]))
    return documents, chunks


def vector_index(
    dim: int, ids: np.ndarray, vectors: np.ndarray, layout: IndexLayout, previous: IndexSnapshot | None,
    generation: str,
) -> tuple[Any, dict[str, Any]]:
    """The search index of a generation and its manifest entry: exact below
    ``layout.ann_threshold`` chunks, IVF-SQ8 from there on (updated from ``previous``'s when
    it can be, trained afresh otherwise)."""
    import faiss

    n = len(ids)
    before = previous.manifest.get("faiss", {}) if previous is not None else {}
    was_ann = previous is not None and previous.kind == "ann"
    index: Any
    if n == 0 or n < (layout.ann_threshold // 2 if was_ann else layout.ann_threshold):
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        if n:
            index.add_with_ids(vectors, ids)
        return index, {"factory": FAISS_FACTORY, "metric": "inner_product"}
    trained_on = int(before.get("trained_on", 0))
    if (previous is not None and was_ann and int(previous.vectors.d) == dim
            and n <= layout.retrain_growth * trained_on and layout.nlist in (0, before.get("nlist"))):
        index = faiss.clone_index(previous.vectors)
        removed, added = _changes(previous, ids, vectors)
        if len(removed):
            index.remove_ids(faiss.IDSelectorBatch(removed))
        if added.any():
            index.add_with_ids(vectors[added], ids[added])
        log.info("updated the IVF index: %d ids removed, %d added", len(removed), int(added.sum()))
        return index, before | {"nprobe": layout.nprobe, "threshold": layout.ann_threshold}
    nlist = min(layout.lists_for(n), n)
    sample = min(n, nlist * layout.train_per_list)
    started = time.perf_counter()
    index = faiss.index_factory(dim, f"IVF{nlist},SQ8", faiss.METRIC_INNER_PRODUCT)
    rows = np.sort(np.random.default_rng(0).choice(n, size=sample, replace=False)) if sample < n else slice(None)
    index.train(vectors[rows])
    index.add_with_ids(vectors, ids)
    log.info("trained an IVF index of %d lists on %d of %d vectors in %.1f s",
             nlist, sample, n, time.perf_counter() - started)
    return index, {
        "factory": f"IVF{nlist},SQ8", "metric": "inner_product", "kind": "ivf", "nlist": nlist,
        "nprobe": layout.nprobe, "trained_on": n, "training_sample": sample, "trained_in": generation,
        "threshold": layout.ann_threshold, "exact_vectors": EXACT_VECTORS, "exact_dtype": "float32",
    }


def _changes(previous: IndexSnapshot, ids: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(removed, added)`` between ``previous`` and the new rows: the previous ids to remove
    (gone, or kept with another vector) and a mask of the new rows to add (new, or changed)."""
    old_ids = previous.faiss_ids
    order = np.argsort(old_ids, kind="stable")
    at = np.searchsorted(old_ids, ids, sorter=order)
    found = order[np.minimum(at, len(order) - 1)] if len(order) else np.zeros(len(ids), dtype=np.int64)
    known = (at < len(order)) & (old_ids[found] == ids) if len(order) else np.zeros(len(ids), dtype=bool)
    added = ~known
    step = 65_536  # compare in slices: the exact vectors may be a memory map of a large file
    for start in range(0, len(ids), step):
        part = slice(start, start + step)
        rows = np.flatnonzero(known[part]) + start
        if len(rows):
            same = np.all(previous.row_vectors(found[rows]) == vectors[rows], axis=1)
            added[rows[~same]] = True
    kept = ids[~added]
    return np.setdiff1d(old_ids, kept, assume_unique=True), added


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
