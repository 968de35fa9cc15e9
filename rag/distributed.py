"""Building an index on a Ray cluster (the ``distributed`` extra): ``rag ingest --engine ray``.

The work is a Ray Data pipeline over the input files, with the library's own functions at
every step, so that it makes the same index as a single process:

1. ``_split_files`` (tasks): each file is read; a JSON or JSON Lines file is split into its
   records (:func:`rag.corpus.record_entries`), so that one large file is cleaned in parallel;
2. ``_parse`` (tasks): each record or file becomes a cleaned article
   (:func:`rag.corpus.parse_record`, :func:`rag.corpus.read_bytes`) or a problem;
3. the driver reads the ids (a small column) to apply the single-process rules: an article
   over the size limit is skipped, and of two articles with one id the later one wins, in the
   place of the first;
4. ``_chunk`` (tasks): :func:`rag.chunking.chunk_article` with the model's token counts, and the
   BM25 tokens of every chunk (:class:`rag.lexical.ChunkTerms`);
5. ``Embed`` (a pool of actors, each loading the model once, ``num_gpus`` each if asked):
   the chunks' vectors with :class:`rag.embedding.Embedder` under the driver's settings.

Rows keep their input order, and the driver writes them, as they arrive, into shards of
consecutive articles (:mod:`rag.shards`) in a temporary generation that becomes current only
when every shard is written. Tasks that fail (a lost worker node, say) are retried by Ray;
if the build fails all the same, nothing is published and the index stays as it was.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from rag.chunking import chunk_article, chunk_id
from rag.corpus import (
    RECORD_SUFFIXES,
    ReadProblem,
    decode_bytes,
    input_files,
    parse_record,
    path_id,
    read_bytes,
    record_entries,
    repeated_id,
    too_long,
)
from rag.embedding import Embedder, passage_text
from rag.errors import ConfigError, RagError
from rag.lexical import ChunkTerms
from rag.shards import Shard
from rag.store import StoredDocument, content_hash
from rag.types import Article, Chunk

log = logging.getLogger(__name__)
EXTRA_HINT = "install the distributed extra: pip install 'rag-news[distributed]'"
# Rows are ordered by (file, record): ``file << ORDER_BITS | record``.
ORDER_BITS = 32


class DistributedIngestError(RagError):
    """The cluster could not be reached, or the build failed after Ray's retries."""

    http_status = 503


@dataclass(frozen=True)
class RayOptions:
    """How a build uses the cluster. ``address``: a running cluster's (``host:port``, or
    ``auto``); None starts a local one with ``local_cpus`` CPUs (default: all). ``actors``:
    embedding actors, each loading the model once and using ``actor_cpus`` CPUs and
    ``num_gpus`` GPUs. ``batch_size``: articles per batch sent to an actor. ``shard_articles``:
    articles per shard of the index. ``task_cpus``: CPUs reserved by each reading, cleaning and
    chunking task. ``stall_timeout``: seconds without any progress after which the build fails
    (the cluster can no longer schedule the work, say after losing nodes) instead of waiting."""

    address: str | None = None
    actors: int = 2
    batch_size: int = 32
    num_gpus: float = 0.0
    actor_cpus: float = 1.0
    task_cpus: float = 0.5
    shard_articles: int = 50_000
    local_cpus: int | None = None
    stall_timeout: float = 600.0


@dataclass(frozen=True)
class EmbedSettings:
    """What every process that counts tokens or embeds needs: the same model and settings as
    a single-process build (a bf16 setting of None is resolved on the driver, so that every
    node embeds alike)."""

    model_path: str | None
    bf16: bool
    backend: str
    embed_batch_size: int
    cache_dir: str | None
    chunk_tokens: int
    chunk_overlap: int
    embed_titles: bool
    max_document_chars: int

    def embedder(self, threads: int | None = None, device: str = "cpu") -> Embedder:
        return Embedder(Path(self.model_path) if self.model_path else None, bf16=self.bf16,
                        batch_size=self.embed_batch_size, backend=self.backend,
                        cache_dir=Path(self.cache_dir) if self.cache_dir else None, threads=threads, device=device)


@dataclass
class BuildResult:
    """What the build met besides the shards: skipped inputs and the articles and chunks written."""

    problems: list[ReadProblem]
    doc_ids: list[str]
    chunks: int = 0


def import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise ConfigError(f"--engine ray needs Ray, which is not installed; {EXTRA_HINT}") from None
    return ray


# -- the steps, run in Ray workers ------------------------------------------------------------


def _split_files(row: dict[str, Any]) -> list[dict[str, Any]]:
    """A file's parts: its JSON records, or the whole file for text and HTML."""
    path, name, file_no = Path(row["path"]), str(row["path"]), int(row["file"])
    base = file_no << ORDER_BITS
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return [_problem(base, name, f"cannot read file ({exc.strerror or exc})")]
    if path.suffix.lower() not in RECORD_SUFFIXES:
        return [{"order": base, "kind": "file", "where": name, "default_id": row["default_id"], "payload": raw}]
    try:
        text = decode_bytes(raw)
    except ValueError as exc:
        return [_problem(base, name, str(exc))]
    parts = []
    for i, entry in enumerate(record_entries(text, name, jsonl=path.suffix.lower() == ".jsonl")):
        if isinstance(entry, ReadProblem):
            parts.append(_problem(base + i, entry.where, entry.message))
        else:
            where, record = entry
            parts.append({"order": base + i, "kind": "record", "where": where, "default_id": "",
                          "payload": json.dumps(record, ensure_ascii=False).encode()})
    return parts


def _problem(order: int, where: str, message: str) -> dict[str, Any]:
    return {"order": order, "kind": "problem", "where": where, "default_id": "", "payload": message.encode()}


def _parse(row: dict[str, Any], limit: int) -> dict[str, Any]:
    """A part made a cleaned article (``article``: its JSON, ``id``), or a problem (``message``)."""
    # Empty strings, not None, for the fields a row lacks: every block then has the same column types.
    out = {"order": row["order"], "where": row["where"], "id": "", "article": "", "message": ""}
    kind, payload = row["kind"], bytes(row["payload"])
    found: Article | ReadProblem
    if kind == "problem":
        found = ReadProblem(row["where"], payload.decode())
    elif kind == "record":
        try:
            found = parse_record(json.loads(payload), row["where"])
        except ValueError as exc:
            found = ReadProblem(row["where"], str(exc))
    else:
        found = next(iter(read_bytes(payload, row["where"], row["default_id"])))
    if isinstance(found, Article):
        found = too_long(found, limit) or found
    if isinstance(found, ReadProblem):
        out.update(where=found.where, message=found.message)
    else:
        out.update(id=found.id, article=json.dumps(found.to_dict(), ensure_ascii=False))
    return out


@lru_cache(maxsize=2)
def _worker_embedder(settings: EmbedSettings) -> Embedder:
    """One embedder per worker process and settings, kept between tasks (its tokenizer counts
    tokens for chunking)."""
    return settings.embedder()


def _chunk(batch: dict[str, np.ndarray], settings: EmbedSettings) -> dict[str, Any]:
    """Chunks (``[position, start, end]`` lists, JSON) and their BM25 tokens for a batch of articles."""
    count_tokens = _worker_embedder(settings).count_tokens
    spans, tokens, sizes = [], [], []
    for text in batch["article"]:
        article = Article(**json.loads(text))
        chunks = chunk_article(article, count_tokens, settings.chunk_tokens, settings.chunk_overlap)
        terms = ChunkTerms.of([c.text for c in chunks])
        spans.append(json.dumps([[c.position, c.start, c.end] for c in chunks]))
        tokens.append(json.dumps(terms.tokens, ensure_ascii=False))
        sizes.append(json.dumps(terms.sentence_sizes))
    return {"order": batch["order"], "article": batch["article"], "spans": np.array(spans, dtype=object),
            "tokens": np.array(tokens, dtype=object), "sizes": np.array(sizes, dtype=object)}


class Embed:
    """An embedding actor: loads the model once, then embeds the chunks of batches of articles."""

    def __init__(self, settings: EmbedSettings, threads: int | None = None):
        import ray

        self.settings = settings
        # An actor that Ray gave a GPU runs the model there; otherwise on its CPUs.
        device = "cuda" if ray.get_gpu_ids() else "cpu"
        self.embedder = settings.embedder(threads, device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        texts: list[str] = []
        counts = []
        for article_json, spans_json in zip(batch["article"], batch["spans"], strict=True):
            article = json.loads(article_json)
            spans = json.loads(spans_json)
            body, title = article["text"], article.get("title") or ""
            texts.extend(passage_text(body[start:end], title, self.settings.embed_titles) for _, start, end in spans)
            counts.append(len(spans))
        vectors = self.embedder.embed_passages(texts)
        out, at = [], 0
        for n in counts:
            out.append(np.ascontiguousarray(vectors[at:at + n], dtype=np.float32).tobytes())
            at += n
        return dict(batch) | {"vectors": np.array(out, dtype=object)}


# -- the driver -------------------------------------------------------------------------------


class RayBuild:
    """One build: ``shards()`` runs the pipeline and yields the index's shards in input order;
    ``result`` then says what was skipped and written. Use as a context manager, which connects
    to (or starts) the cluster and disconnects (or stops it) afterwards."""

    def __init__(self, paths: list[Path], settings: EmbedSettings, options: RayOptions, dimension: int,
                 on_progress: Callable[[int, int], None] | None = None):
        """``on_progress(articles, chunks)`` hears each article written."""
        self.ray = import_ray()
        self.paths, self.settings, self.options, self.dimension = paths, settings, options, dimension
        self.on_progress = on_progress
        self.result = BuildResult([], [])
        self._connected = False

    def __enter__(self) -> RayBuild:
        ray, o = self.ray, self.options
        if not ray.is_initialized():
            if o.address:
                check_reachable(o.address)
            try:
                ray.init(address=o.address, num_cpus=o.local_cpus if o.address is None else None,
                         include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"the Ray cluster at {o.address}" if o.address else "a local Ray cluster"
                raise DistributedIngestError(f"cannot connect to {where}: {exc}") from None
            self._connected = True
        context = self.ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # rows reach the driver in input order
        context.enable_progress_bars = False  # the CLI shows its own (articles and chunks written)
        context.print_on_execution_start = False
        context.execution_no_progress_timeout_s = self.options.stall_timeout
        return self

    def __exit__(self, *exc: object) -> None:
        if self._connected:
            self.ray.shutdown()

    def shards(self) -> Iterator[Shard]:
        try:
            yield from self._shards()
        except RagError:
            raise
        except (self.ray.exceptions.RayError, self.ray.data.exceptions.ExecutionTimeoutError) as exc:
            raise DistributedIngestError(f"the distributed build failed: {_first_line(exc)}") from None

    def _shards(self) -> Iterator[Shard]:
        ray, o, s = self.ray, self.options, self.settings
        files: list[dict[str, Any]] = []
        for item in input_files(self.paths):
            if isinstance(item, ReadProblem):
                self.result.problems.append(item)
            else:
                path, base = item
                default_id = path_id(path, base)
                files.append({"file": len(files), "path": str(path), "default_id": default_id})
        if not files:
            return
        task = {"num_cpus": o.task_cpus}
        parts = ray.data.from_items(files, override_num_blocks=min(len(files), 64))
        parts = parts.flat_map(_split_files, **task)
        # Blocks of `batch_size` records, so that cleaning, chunking and embedding spread over the
        # cluster even when the corpus is one large file (a block is the unit of a task's work).
        parts = parts.repartition(target_num_rows_per_block=o.batch_size)
        articles = parts.map(_parse, fn_kwargs={"limit": s.max_document_chars}, **task).materialize()
        articles = self._one_per_id(articles, task)
        chunked = articles.map_batches(_chunk, fn_kwargs={"settings": s}, batch_size=o.batch_size, **task)
        embedded = chunked.map_batches(
            Embed, fn_constructor_kwargs={"settings": s, "threads": max(1, int(o.actor_cpus))},
            batch_size=o.batch_size, compute=ray.data.ActorPoolStrategy(size=o.actors), num_cpus=o.actor_cpus,
            num_gpus=o.num_gpus or None,
        )
        pending: list[dict[str, Any]] = []
        for row in embedded.iter_rows():
            pending.append(row)
            if len(pending) == o.shard_articles:
                yield self._shard(pending)
                pending = []
        if pending:
            yield self._shard(pending)

    def _one_per_id(self, articles: Any, task: dict[str, Any]) -> Any:
        """The single-process rules over the parsed rows: problems are reported and left out, and
        of articles sharing an id the last one is kept, in the place of the first."""
        first: dict[str, int] = {}
        last: dict[str, int] = {}
        dropped: set[int] = set()
        columns = articles.select_columns(["order", "where", "id", "message"], **task)
        for batch in columns.iter_batches(batch_format="numpy", batch_size=65_536):
            for order, where, doc_id, message in zip(batch["order"], batch["where"], batch["id"], batch["message"],
                                                     strict=True):
                order = int(order)
                if not doc_id:
                    self.result.problems.append(ReadProblem(str(where), str(message)))
                    dropped.add(order)
                    continue
                if doc_id in first:
                    self.result.problems.append(repeated_id(str(where), str(doc_id)))
                    dropped.add(last[doc_id])
                else:
                    first[doc_id] = order
                last[doc_id] = order
        # The few winners of a repeated id take the place of its first occurrence: their text is
        # fetched and written into that row (rows are never re-sorted, which would shuffle them all).
        moved = {last[i]: first[i] for i in last if last[i] != first[i]}
        if moved:
            winners = articles.flat_map(lambda row: [row] if int(row["order"]) in moved else [], **task).take_all()
            replacement = {moved[int(row["order"])]: row["article"] for row in winners}
            dropped.update(moved)
            dropped.difference_update(replacement)
            articles = articles.map(lambda row: row | {"article": replacement.get(int(row["order"]), row["article"])},
                                    **task)
        if dropped:
            # flat_map rather than filter, which asks on stderr for expressions a set lookup cannot be
            articles = articles.flat_map(lambda row: [] if int(row["order"]) in dropped else [row], **task)
        return articles

    def _shard(self, rows: list[dict[str, Any]]) -> Shard:
        documents: list[StoredDocument] = []
        chunks: list[Chunk] = []
        vectors: list[np.ndarray] = []
        tokens: list[list[str]] = []
        sizes: list[list[int]] = []
        for row in rows:
            article = Article(**json.loads(row["article"]))
            documents.append(StoredDocument(article, content_hash(article)))
            spans = json.loads(row["spans"])
            chunks.extend(Chunk(chunk_id(article.id, position), article.id, position, start, end,
                                article.text[start:end]) for position, start, end in spans)
            vectors.append(np.frombuffer(row["vectors"], dtype=np.float32).reshape(len(spans), self.dimension))
            tokens.extend(json.loads(row["tokens"]))
            sizes.extend(json.loads(row["sizes"]))
            self.result.doc_ids.append(article.id)
            self.result.chunks += len(spans)
            if self.on_progress is not None:
                self.on_progress(1, len(spans))
        matrix = np.concatenate(vectors) if vectors else np.zeros((0, self.dimension), dtype=np.float32)
        return Shard(documents, chunks, matrix, ChunkTerms(tokens, sizes))


def check_reachable(address: str, timeout: float = 10.0) -> None:
    """Fail at once, clearly, when a ``host:port`` cluster address does not answer (Ray itself
    retries an unreachable address for minutes). Other forms (``auto``) are left to Ray."""
    import socket

    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "/" in address:
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise DistributedIngestError(
            f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); start it with "
            "`ray start --head --port PORT`, or leave --ray-address and RAY_ADDRESS unset to start a local one"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
