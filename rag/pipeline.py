"""The one service object behind both edges: ``RagPipeline.ingest``, ``search``
and ``ask``, plus document lookups. The CLI and the API only translate to and
from it. The embedding model loads once per pipeline, when first needed."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from pathlib import Path

import numpy as np

from rag.chunking import chunk_article
from rag.config import Settings
from rag.corpus import ReadProblem, read_articles
from rag.embedding import Embedder
from rag.errors import ConfigError, DocumentNotFoundError, InvalidRequestError
from rag.generators.base import Generator, GeneratorContext
from rag.generators.registry import load_generator
from rag.rerank import RerankWeights
from rag.retrieval import RetrievalParams
from rag.retrieval import search as retrieve
from rag.store import IndexSnapshot, IndexSpec, IndexStore, StoredDocument, content_hash
from rag.types import Answer, Article, Chunk, GeneratedAnswer, Passage, SearchFilters


@dataclass
class IngestReport:
    """What an ingest did; ``problems`` lists the inputs that were skipped."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
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
            "problems": [{"where": p.where, "message": p.message} for p in self.problems],
            "chunks_embedded": self.chunks_embedded,
            "documents": self.documents,
            "chunks": self.chunks,
            "generation": self.generation,
            "seconds": round(self.seconds, 3),
        }


class RagPipeline:
    def __init__(self, settings: Settings | None = None, embedder: Embedder | None = None):
        self.settings = settings or Settings()
        self.store = IndexStore(self.settings.index_dir)
        self._embedder = embedder
        self._snapshot: IndexSnapshot | None = None
        self._generators: dict[str, Generator] = {}
        s = self.settings
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
            self._embedder = Embedder(s.model_path, bf16=s.bf16, batch_size=s.embed_batch_size)
        return self._embedder

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
    ) -> IngestReport:
        """Add the articles under ``paths`` to the index. Unchanged articles (same id,
        same content hash) are skipped; a changed one replaces its old version; only
        new or changed articles are embedded. With ``rebuild``, the index is started
        afresh from ``paths`` alone. Nothing is committed if nothing changed."""
        started = time.perf_counter()
        report = IngestReport()
        spec = self.spec  # settings the model cannot honour fail here, before any work
        previous = None if rebuild or not self.store.exists() else self.snapshot()

        def skip(problem: ReadProblem) -> None:
            report.problems.append(problem)
            if on_problem:
                on_problem(problem)

        incoming: dict[str, StoredDocument] = {}
        for item in read_articles(paths):
            if isinstance(item, ReadProblem):
                skip(item)
                continue
            if item.id in incoming:
                skip(ReadProblem(item.origin or item.id, f"duplicate document id {item.id!r}; the later one wins"))
            incoming[item.id] = StoredDocument(item, content_hash(item))

        old_docs = previous.documents if previous else {}
        to_embed: list[Article] = []
        for doc_id, doc in incoming.items():
            old = old_docs.get(doc_id)
            if old is not None and old.content_hash == doc.content_hash:
                report.unchanged.append(doc_id)
            else:
                (report.updated if old is not None else report.added).append(doc_id)
                to_embed.append(doc.article)

        if not to_embed:  # nothing new: commit nothing (and never replace an index with an empty one)
            if previous is not None:
                report.documents, report.chunks = len(old_docs), len(previous.chunks)
                report.generation = previous.generation
            report.seconds = time.perf_counter() - started
            return report

        new_chunks = [c for article in to_embed for c in self._chunk(article)]
        titles = {a.id: a.title for a in to_embed}
        new_vectors = self.embedder.embed_passages(
            [self._embedded_text(c, titles[c.doc_id]) for c in new_chunks], progress=progress
        )
        report.chunks_embedded = len(new_chunks)

        documents: dict[str, StoredDocument] = dict(old_docs)
        documents.update({a.id: incoming[a.id] for a in to_embed})
        replaced = {a.id for a in to_embed}
        chunks: list[Chunk] = []
        vector_parts: list[np.ndarray] = []
        if previous is not None:
            for doc_id in old_docs:
                if doc_id not in replaced:
                    chunks.extend(previous.chunks[r] for r in previous.rows_by_doc.get(doc_id, []))
                    vector_parts.append(previous.document_vectors(doc_id))
        chunks.extend(new_chunks)
        vector_parts.append(new_vectors)
        report.generation = self.store.commit(spec, documents.values(), chunks, np.concatenate(vector_parts))
        report.documents, report.chunks = len(documents), len(chunks)
        self._snapshot = None
        report.seconds = time.perf_counter() - started
        return report

    def _embedded_text(self, chunk: Chunk, title: str) -> str:
        """What the embedder reads for a chunk: its text, after the article's title if so set."""
        if self.settings.embed_titles and title.strip():
            return f"{title.strip()}\n{chunk.text}"
        return chunk.text

    def _chunk(self, article: Article) -> list[Chunk]:
        s = self.settings
        return chunk_article(article, self.embedder.count_tokens, s.chunk_tokens, s.chunk_overlap)

    # -- reading ---------------------------------------------------------------------------

    def search(self, query: str, k: int | None = None, filters: SearchFilters | None = None) -> list[Passage]:
        query = self._check_text(query, "query")
        k = self._check_k(k)
        if filters is not None and filters.as_of:
            try:
                date.fromisoformat(filters.as_of)
            except ValueError:
                raise InvalidRequestError(
                    f"as_of must be a day written YYYY-MM-DD, not {filters.as_of!r}"
                ) from None
        return retrieve(self.snapshot(), self.embedder.embed_query, query, k, self.retrieval_params, filters,
                        embed_texts=self.embedder.embed_passages)

    def ask(
        self,
        question: str,
        k: int | None = None,
        generator: str | None = None,
        filters: SearchFilters | None = None,
    ) -> Answer:
        started = time.perf_counter()
        gen, passages = self._prepare(question, k, generator, filters)
        retrieved = time.perf_counter()
        result = gen.generate(question.strip(), passages[: self.settings.answer_passages])
        return self._answer(question, gen, passages, result, started, retrieved)

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
        gen, passages = self._prepare(question, k, generator, filters)
        retrieved = time.perf_counter()

        def pieces() -> Iterator[str | Answer]:
            for piece in gen.stream(question.strip(), passages[: self.settings.answer_passages]):
                if isinstance(piece, GeneratedAnswer):
                    yield self._answer(question, gen, passages, piece, started, retrieved)
                else:
                    yield piece

        return pieces()

    def _prepare(
        self, question: str, k: int | None, generator: str | None, filters: SearchFilters | None
    ) -> tuple[Generator, list[Passage]]:
        self._check_text(question, "question")
        gen = self.generator(generator)  # fail on an unknown name before any work
        return gen, self.search(question, k, filters)

    def _answer(
        self, question: str, gen: Generator, passages: list[Passage], result: GeneratedAnswer,
        started: float, retrieved: float,
    ) -> Answer:
        done = time.perf_counter()
        return Answer(
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

    def document(self, doc_id: str) -> Article:
        stored = self.snapshot().documents.get(doc_id)
        if stored is None:
            raise DocumentNotFoundError(f"no document with id {doc_id!r}")
        return stored.article

    def documents(self, offset: int = 0, limit: int = 50) -> tuple[int, list[Article]]:
        """``(total, page)`` of the stored articles in id order."""
        docs = self.snapshot().documents
        ids = sorted(docs)
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
