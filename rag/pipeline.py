"""The one service object behind both edges: ``RagPipeline.ingest``, ``search``
and ``ask``, plus document lookups. The CLI and the API only translate to and
from it. The embedding model loads once per pipeline, when first needed."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rag.cache import RecentResults
from rag.chunking import chunk_article
from rag.config import Settings
from rag.corpus import ReadProblem, read_articles, repeated_id, too_long
from rag.embedding import Embedder, backend_of_index, passage_text
from rag.errors import ConfigError, DocumentNotFoundError, IndexBusyError, InvalidRequestError, RagError
from rag.generators.base import Generator, GeneratorContext
from rag.generators.registry import load_generator
from rag.lexical import ChunkTerms
from rag.rerank import RerankWeights
from rag.retrieval import RetrievalParams
from rag.retrieval import search as retrieve
from rag.store import IndexLayout, IndexSnapshot, IndexSpec, IndexStore, StoredDocument, content_hash
from rag.types import Answer, Article, Chunk, GeneratedAnswer, Passage, SearchFilters

if TYPE_CHECKING:
    from rag.distributed import RayOptions

# The vectors of the query texts a search embedded, by text; the generator reuses the question's.
QueryVectors = Mapping[str, np.ndarray]


@dataclass
class IngestReport:
    """What an ingest did; ``problems`` lists the inputs that were skipped."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    problems: list[ReadProblem] = field(default_factory=list)
    chunks_embedded: int = 0
    documents: int = 0
    chunks: int = 0
    generation: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
            "missing": self.missing,
            "problems": [{"where": p.where, "message": p.message} for p in self.problems],
            "chunks_embedded": self.chunks_embedded,
            "documents": self.documents,
            "chunks": self.chunks,
            "generation": self.generation,
            "seconds": round(self.seconds, 3),
        }


class RagPipeline:
    # Optional observers, set by an edge that measures (the API's /metrics); the library itself
    # knows no metrics package. ``on_stage(stage, seconds)`` hears "embed" and "search" from every
    # search and "generate" from every answer; ``on_answer(answer)`` hears every finished answer.
    on_stage: Callable[[str, float], None] | None = None
    on_answer: Callable[[Answer], None] | None = None

    def __init__(self, settings: Settings | None = None, embedder: Embedder | None = None):
        self.settings = settings or Settings()
        layout = IndexLayout(ann_threshold=self.settings.ann_threshold, nlist=self.settings.ann_nlist,
                             nprobe=self.settings.ann_nprobe, retrain_growth=self.settings.ann_retrain_growth)
        self.store = IndexStore(self.settings.index_dir, pause_at=self.settings.debug_pause_at, layout=layout)
        self._embedder = embedder
        self._snapshot: IndexSnapshot | None = None
        self._load_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._generators: dict[str, Generator] = {}
        s = self.settings
        # Recent searches (keyed by the index generation they searched) and extractive answers.
        self.recent_searches: RecentResults[tuple[tuple[Passage, ...], QueryVectors]] = RecentResults(s.cache_size)
        self.recent_answers: RecentResults[GeneratedAnswer] = RecentResults(s.cache_size)
        self.retrieval_params = RetrievalParams(
            candidates=s.candidates,
            fusion=s.fusion,
            rrf_k=s.rrf_k,
            dense_weight=s.dense_weight,
            source_queries=s.source_queries,
            rerank_depth=s.rerank_depth,
            weights=RerankWeights(recency=s.recency_weight, half_life_days=s.recency_half_life_days),
            per_doc=s.max_chunks_per_article,
            collapse_duplicates=s.collapse_duplicates,
        )

    # -- parts ---------------------------------------------------------------------------

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            s = self.settings
            self._embedder = Embedder(
                s.model_path, bf16=s.bf16, batch_size=s.embed_batch_size,
                backend=self._backend(), cache_dir=s.embed_cache_dir, threads=s.embed_threads,
            )
        return self._embedder

    def _backend(self) -> str:
        """The embedding backend setting, with ``auto`` meaning the backend the index was built
        with when there is one, so that an index keeps being searched with its own vectors."""
        if self.settings.embed_backend != "auto" or not self.store.exists():
            return self.settings.embed_backend
        try:
            recorded = str(self.store.read_manifest()["model"]["sha256"])
        except (RagError, KeyError, TypeError):
            return "auto"  # loading the index reports what is wrong with it
        return backend_of_index(self.settings.model_path, recorded) or "auto"

    @cached_property
    def spec(self) -> IndexSpec:
        window = self.embedder.max_sequence_tokens - 2  # [CLS] and [SEP]
        if self.settings.chunk_tokens > window:
            raise ConfigError(
                f"chunks of {self.settings.chunk_tokens} tokens do not fit the embedding model, which reads "
                f"at most {window}; set RAG_CHUNK_TOKENS to {window} or less"
            )
        s = self.settings
        return IndexSpec(self.embedder.identity, s.chunk_tokens, s.chunk_overlap, s.embed_titles)

    def snapshot(self) -> IndexSnapshot:
        """The committed index, reloaded when another process has committed a newer one."""
        snapshot = self._snapshot
        if snapshot is not None and snapshot.generation == self.store.current_generation():
            return snapshot
        with self._load_lock:  # one load at a time; threads that waited find it done
            current = self.store.current_generation()
            if self._snapshot is None or self._snapshot.generation != current:
                self._snapshot = self.store.load(self.spec)
            return self._snapshot

    def generator(self, name: str | None = None) -> Generator:
        name = name or self.settings.generator
        if name not in self._generators:
            context = GeneratorContext(
                embedder=self.embedder,
                max_answer_sentences=self.settings.max_answer_sentences,
                min_support=self.settings.min_support,
                answer_candidates=self.settings.answer_candidates,
                settings=self.settings,
            )
            self._generators[name] = load_generator(name, context)
        return self._generators[name]

    def warm_up(self) -> None:
        """Load the model (and the index, if there is one) now rather than on the first request."""
        self.embedder.embed_query("warm up")
        if self.store.exists():
            self.snapshot()

    # -- writing ---------------------------------------------------------------------------

    def ingest(
        self,
        paths: Iterable[str | Path],
        rebuild: bool = False,
        progress: bool = False,
        on_problem: Callable[[ReadProblem], None] | None = None,
        wait: float | None = None,
    ) -> IngestReport:
        """Add the articles under ``paths`` to the index. Unchanged articles (same id,
        same content hash) are skipped; a changed one replaces its old version; only
        new or changed articles are embedded. With ``rebuild``, the index is started
        afresh from ``paths`` alone. Nothing is committed if nothing changed."""
        return self.add(read_articles(paths), rebuild=rebuild, progress=progress, on_problem=on_problem,
                        wait=wait)

    def add(
        self,
        items: Iterable[Article | ReadProblem],
        replace: bool = True,
        rebuild: bool = False,
        progress: bool = False,
        on_problem: Callable[[ReadProblem], None] | None = None,
        wait: float | None = None,
    ) -> IngestReport:
        """Store ``items`` (articles, and problems met while reading them, which are
        reported): new ids are added, unchanged ones skipped, and a changed one
        replaces its old version unless ``replace`` is false, in which case it is
        reported as a problem and the stored version stays."""
        started = time.perf_counter()
        report = IngestReport()
        spec = self.spec  # settings the model cannot honour fail here, before any work

        def skip(problem: ReadProblem) -> None:
            report.problems.append(problem)
            if on_problem:
                on_problem(problem)

        incoming: dict[str, StoredDocument] = {}
        limit = self.settings.max_document_chars
        for item in items:
            if isinstance(item, ReadProblem):
                skip(item)
            elif (problem := too_long(item, limit)) is not None:
                skip(problem)
            else:
                if item.id in incoming:
                    skip(repeated_id(item.origin or item.id, item.id))
                incoming[item.id] = StoredDocument(item, content_hash(item))

        with self._writing(wait):
            previous = None if rebuild or not self.store.exists() else self.snapshot()
            old_docs = previous.documents if previous else {}
            changed: list[Article] = []
            for doc_id, doc in incoming.items():
                old = old_docs.get(doc_id)
                if old is not None and old.content_hash == doc.content_hash:
                    report.unchanged.append(doc_id)
                elif old is not None and not replace:
                    skip(ReadProblem(doc.article.origin or doc_id,
                                     f"document {doc_id!r} is already stored with other content; "
                                     "replace it with `rag ingest`, `rag add --replace` or PUT /documents/{id}"))
                else:
                    (report.updated if old is not None else report.added).append(doc_id)
                    changed.append(doc.article)
            if changed:
                self._commit(spec, previous, {a.id: incoming[a.id] for a in changed}, set(), report, progress)
            else:  # nothing new: commit nothing (and never replace an index with an empty one)
                self._describe(previous, report)
        report.seconds = time.perf_counter() - started
        return report

    def ingest_distributed(
        self,
        paths: Iterable[str | Path],
        options: RayOptions,
        rebuild: bool = False,
        on_progress: Callable[[int, int], None] | None = None,
        wait: float | None = None,
    ) -> IngestReport:
        """Build the index of the articles under ``paths`` on a Ray cluster (see
        :mod:`rag.distributed`), as a sharded generation (:mod:`rag.shards`) holding what a
        single-process ``ingest(paths, rebuild=True)`` would. It always builds afresh, so an
        existing index is replaced only with ``rebuild``. ``on_progress(articles, chunks)``
        hears every article written. Problems are in the report."""
        from rag.distributed import EmbedSettings, RayBuild
        from rag.shards import commit_shards

        started = time.perf_counter()
        spec, s = self.spec, self.settings
        embed = EmbedSettings(
            model_path=str(s.model_path) if s.model_path else None, bf16=self.embedder.bf16,
            backend=self.embedder.backend, embed_batch_size=s.embed_batch_size,
            cache_dir=str(s.embed_cache_dir) if s.embed_cache_dir else None, chunk_tokens=s.chunk_tokens,
            chunk_overlap=s.chunk_overlap, embed_titles=s.embed_titles, max_document_chars=s.max_document_chars,
        )
        report = IngestReport()
        with self._writing(wait):
            if self.store.exists() and not rebuild:
                raise InvalidRequestError(
                    f"the Ray engine builds a whole index, and one exists at {self.store.root}: give --rebuild "
                    "to replace it with the index of PATHS, or update it with the local engine"
                )
            with RayBuild([Path(p) for p in paths], embed, options, spec.model.dimension, on_progress) as build:
                shards = build.shards()
                first = next(shards, None)  # nothing readable: commit nothing
                if first is not None:
                    report.generation = commit_shards(self.store, spec, itertools.chain([first], shards))
            report.problems = build.result.problems
            report.added = build.result.doc_ids
            report.chunks_embedded = report.chunks = build.result.chunks
            report.documents = len(report.added)
            if report.generation is None:
                self._describe(self.snapshot() if self.store.exists() else None, report)
        report.seconds = time.perf_counter() - started
        return report

    def merge_shards(self, wait: float | None = None) -> IngestReport:
        """Commit a sharded generation as one unsharded generation with the same documents,
        chunks, vectors and tokens (and, for a large corpus, the approximate index); an
        unsharded index is left as it is."""
        started = time.perf_counter()
        report = IngestReport()
        with self._writing(wait):
            snapshot = self.snapshot()
            if snapshot.manifest.get("shards"):
                report.generation = self.store.commit(self.spec, snapshot.documents.values(), snapshot.chunks,
                                                      snapshot.all_vectors(), snapshot.chunk_terms())
                report.documents, report.chunks = len(snapshot.documents), len(snapshot.chunks)
                report.unchanged = sorted(snapshot.documents)
            else:
                self._describe(snapshot, report)
        report.seconds = time.perf_counter() - started
        return report

    def delete(self, doc_ids: Iterable[str], wait: float | None = None) -> IngestReport:
        """Remove these documents, their chunks, vectors and terms; ids that are not
        stored are listed in ``report.missing`` and change nothing."""
        started = time.perf_counter()
        report = IngestReport()
        with self._writing(wait):
            previous = self.snapshot() if self.store.exists() else None
            stored = previous.documents if previous else {}
            for doc_id in dict.fromkeys(doc_ids):
                (report.deleted if doc_id in stored else report.missing).append(doc_id)
            if report.deleted:
                self._commit(self.spec, previous, {}, set(report.deleted), report, progress=False)
            else:
                self._describe(previous, report)
        report.seconds = time.perf_counter() - started
        return report

    @contextmanager
    def _writing(self, wait: float | None) -> Iterator[None]:
        """One writer at a time: across the threads of this process, then across processes."""
        wait = self.settings.write_wait if wait is None else wait
        acquired = self._write_lock.acquire(timeout=wait) if wait > 0 else self._write_lock.acquire(blocking=False)
        if not acquired:
            raise IndexBusyError(f"the index at {self.store.root} is busy with another write; try again")
        try:
            with self.store.writer(wait):
                yield
        finally:
            self._write_lock.release()

    def _describe(self, snapshot: IndexSnapshot | None, report: IngestReport) -> None:
        if snapshot is not None:
            report.documents, report.chunks = len(snapshot.documents), len(snapshot.chunks)
            report.generation = snapshot.generation

    def _commit(
        self,
        spec: IndexSpec,
        previous: IndexSnapshot | None,
        changed: dict[str, StoredDocument],
        deleted: set[str],
        report: IngestReport,
        progress: bool,
    ) -> None:
        """Embed the chunks of ``changed`` articles, copy every other chunk and vector of
        ``previous`` except those of ``deleted`` and replaced articles, and commit."""
        new_chunks = [c for doc in changed.values() for c in self._chunk(doc.article)]
        new_vectors = self.embedder.embed_passages(
            [self._embedded_text(c, changed[c.doc_id].article.title) for c in new_chunks], progress=progress
        )
        report.chunks_embedded = len(new_chunks)
        self.store.pause_point("embedded")

        documents: dict[str, StoredDocument] = {}
        chunks: list[Chunk] = []
        vectors = [new_vectors]
        terms = ChunkTerms([], [])
        if previous is not None:
            gone = deleted | changed.keys()
            documents = {i: d for i, d in previous.documents.items() if i not in gone}
            keep = np.fromiter((c.doc_id not in gone for c in previous.chunks), dtype=bool,
                               count=len(previous.chunks))
            chunks = [c for c, kept in zip(previous.chunks, keep, strict=True) if kept]
            vectors.insert(0, previous.all_vectors()[keep])
            terms = previous.chunk_terms().select(keep)
        documents.update(changed)
        chunks.extend(new_chunks)
        terms = terms.extend(ChunkTerms.of([c.text for c in new_chunks]))
        report.generation = self.store.commit(spec, documents.values(), chunks, np.concatenate(vectors), terms,
                                              previous=previous)
        report.documents, report.chunks = len(documents), len(chunks)

    def _embedded_text(self, chunk: Chunk, title: str) -> str:
        return passage_text(chunk.text, title, self.settings.embed_titles)

    def _chunk(self, article: Article) -> list[Chunk]:
        s = self.settings
        return chunk_article(article, self.embedder.count_tokens, s.chunk_tokens, s.chunk_overlap)

    # -- reading ---------------------------------------------------------------------------

    def search(self, query: str, k: int | None = None, filters: SearchFilters | None = None) -> list[Passage]:
        return self._search(query, k, filters)[0]

    def _search(
        self, query: str, k: int | None, filters: SearchFilters | None
    ) -> tuple[list[Passage], QueryVectors]:
        """The passages, and the vectors of the query texts retrieval embedded (the question's
        and any sub-question's), which the generator may reuse."""
        query = self._check_text(query, "query")
        k = self._check_k(k)
        if filters is not None and filters.as_of:
            try:
                date.fromisoformat(filters.as_of)
            except ValueError:
                raise InvalidRequestError(
                    f"as_of must be a day written YYYY-MM-DD, not {filters.as_of!r}"
                ) from None
        snapshot, embedder = self.snapshot(), self.embedder
        key = (snapshot.generation, query, k, filters)
        remembered = self.recent_searches.get(key)
        if remembered is not None:
            return list(remembered[0]), remembered[1]
        embedding = 0.0  # seconds in the embedder, reported apart from the rest of retrieval
        queried: dict[str, np.ndarray] = {}

        def embed_query(text: str) -> np.ndarray:
            queried[text] = embedder.embed_query(text)
            return queried[text]

        def timed(embed: Callable[[Any], np.ndarray]) -> Callable[[Any], np.ndarray]:
            def run(texts: Any) -> np.ndarray:
                nonlocal embedding
                began = time.perf_counter()
                try:
                    return embed(texts)
                finally:
                    embedding += time.perf_counter() - began
            return run

        started = time.perf_counter()
        passages = retrieve(snapshot, timed(embed_query), query, k, self.retrieval_params, filters,
                            embed_texts=timed(embedder.embed_passages))
        if self.on_stage is not None:
            self.on_stage("embed", embedding)
            self.on_stage("search", time.perf_counter() - started - embedding)
        self.recent_searches.put(key, (tuple(passages), queried))
        return passages, queried

    def ask(
        self,
        question: str,
        k: int | None = None,
        generator: str | None = None,
        filters: SearchFilters | None = None,
    ) -> Answer:
        started = time.perf_counter()
        gen, passages, queried = self._prepare(question, k, generator, filters)
        retrieved = time.perf_counter()
        with self.embedder.given_queries(queried):
            result = self._generate(gen, question.strip(), passages[: self.settings.answer_passages])
        return self._answer(question, gen, passages, result, started, retrieved)

    def _generate(self, gen: Generator, question: str, passages: list[Passage]) -> GeneratedAnswer:
        """``gen``'s answer, remembered when the generator says its answers depend only on the
        question and the passages (``deterministic = True``), as the extractive one's do."""
        if not getattr(gen, "deterministic", False):
            return gen.generate(question, passages)
        key = (gen.name, question, tuple(passages))  # the passages whole: text, offsets and all
        result = self.recent_answers.get(key)
        if result is None:
            result = gen.generate(question, passages)
            self.recent_answers.put(key, result)
        return result

    def ask_stream(
        self,
        question: str,
        k: int | None = None,
        generator: str | None = None,
        filters: SearchFilters | None = None,
    ) -> Iterator[str | Answer]:
        """Answer text pieces as the generator produces them, then the full Answer.

        The question, the generator name and the index are checked, and the
        passages retrieved, before this returns: a bad request raises here, not
        halfway through a stream. An LLM's pieces are its raw words; the final
        Answer carries the checked text and citations, which may differ."""
        started = time.perf_counter()
        gen, passages, queried = self._prepare(question, k, generator, filters)
        retrieved = time.perf_counter()

        def pieces() -> Iterator[str | Answer]:
            stream = gen.stream(question.strip(), passages[: self.settings.answer_passages])
            while True:
                # Each piece may be asked for on another thread (a server's pool), so the
                # question's vector is handed on for each step alone.
                with self.embedder.given_queries(queried):
                    piece = next(stream, None)
                if piece is None:
                    return
                if isinstance(piece, GeneratedAnswer):
                    yield self._answer(question, gen, passages, piece, started, retrieved)
                else:
                    yield piece

        return pieces()

    def _prepare(
        self, question: str, k: int | None, generator: str | None, filters: SearchFilters | None
    ) -> tuple[Generator, list[Passage], QueryVectors]:
        self._check_text(question, "question")
        gen = self.generator(generator)  # fail on an unknown name before any work
        return gen, *self._search(question, k, filters)

    def _answer(
        self, question: str, gen: Generator, passages: list[Passage], result: GeneratedAnswer,
        started: float, retrieved: float,
    ) -> Answer:
        done = time.perf_counter()
        if self.on_stage is not None:
            self.on_stage("generate", done - retrieved)
        answer = Answer(
            question=question.strip(),
            answer=result.answer,
            reason=result.reason,
            citations=result.citations,
            passages=tuple(passages),
            generator=gen.name,
            check=result.check,
            timings_ms={
                "retrieve": round((retrieved - started) * 1000, 2),
                "generate": round((done - retrieved) * 1000, 2),
                "total": round((done - started) * 1000, 2),
            },
        )
        if self.on_answer is not None:
            self.on_answer(answer)
        return answer

    def document(self, doc_id: str) -> Article:
        stored = self.snapshot().documents.get(doc_id)
        if stored is None:
            raise DocumentNotFoundError(f"no document with id {doc_id!r}")
        return stored.article

    def documents(self, offset: int = 0, limit: int = 50, query: str | None = None) -> tuple[int, list[Article]]:
        """``(total, page)`` of the stored articles in id order. With ``query``, only those whose
        title, source or id contains every word of it, ignoring case (``total`` counts those)."""
        docs = self.snapshot().documents
        ids = sorted(docs)
        words = (query or "").casefold().split()
        if words:
            ids = [i for i in ids if _names_all(docs[i].article, words)]
        return len(ids), [docs[i].article for i in ids[offset: offset + limit]]

    def _check_text(self, text: str, what: str) -> str:
        text = (text or "").strip()
        if not text:
            raise InvalidRequestError(f"the {what} is empty")
        if len(text) > self.settings.max_question_chars:
            raise InvalidRequestError(
                f"the {what} is {len(text)} characters long; the limit is {self.settings.max_question_chars}"
            )
        return text

    def _check_k(self, k: int | None) -> int:
        k = self.settings.top_k if k is None else k
        if not 1 <= k <= 100:
            raise InvalidRequestError(f"k must be between 1 and 100, not {k}")
        return k


def _names_all(article: Article, words: list[str]) -> bool:
    """Whether the article's title, source or id contains each of ``words`` (already casefolded)."""
    names = " ".join((article.title, article.source or "", article.id)).casefold()
    return all(word in names for word in words)
