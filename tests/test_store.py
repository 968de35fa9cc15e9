"""The index on disk: exact search against a NumPy oracle, manifest checks,
atomic commits and ingest that only does what changed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from rag.config import Settings
from rag.embedding import Embedder, ModelIdentity
from rag.errors import ConfigError, IndexCorruptError, IndexMismatchError, IndexNotFoundError
from rag.pipeline import RagPipeline
from rag.retrieval import dense_search
from rag.store import IndexSpec, IndexStore, StoredDocument, content_hash
from rag.types import Article, Chunk
from tests.conftest import SEEDS

SPEC = IndexSpec(ModelIdentity("test-model", "0" * 64, 16), chunk_tokens=100, chunk_overlap=10)


def _random_index(tmp_path: Path, n_docs: int = 40, per_doc: int = 5) -> tuple[IndexStore, np.ndarray]:
    rng = np.random.default_rng(7)
    docs, chunks = [], []
    for d in range(n_docs):
        text = " ".join(f"word{d}x{i}." for i in range(per_doc))
        article = Article(id=f"doc{d}", title=f"Doc {d}", text=text)
        docs.append(StoredDocument(article, content_hash(article)))
        offset = 0
        for i in range(per_doc):
            piece = f"word{d}x{i}."
            start = text.index(piece, offset)
            chunks.append(Chunk(f"doc{d}#{i}", f"doc{d}", i, start, start + len(piece), piece))
            offset = start + len(piece)
    vectors = rng.normal(size=(len(chunks), 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store = IndexStore(tmp_path / "idx")
    store.commit(SPEC, docs, chunks, vectors)
    return store, vectors


def test_faiss_search_matches_numpy_brute_force(tmp_path: Path) -> None:
    store, vectors = _random_index(tmp_path)
    snapshot = store.load(SPEC)
    rng = np.random.default_rng(11)
    for _ in range(25):
        query = rng.normal(size=16).astype(np.float32)
        query /= np.linalg.norm(query)
        expected = np.argsort(-(vectors @ query), kind="stable")[:10]
        got = dense_search(snapshot, query, 10)
        assert [row for row, _ in got] == list(expected)
        np.testing.assert_allclose([s for _, s in got], (vectors @ query)[expected], rtol=1e-5, atol=1e-6)


def test_filtered_search_matches_masked_oracle(tmp_path: Path) -> None:
    store, vectors = _random_index(tmp_path)
    snapshot = store.load(SPEC)
    mask = np.array([c.doc_id in {"doc3", "doc17", "doc30"} for c in snapshot.chunks])
    query = vectors[0]
    scores = np.where(mask, vectors @ query, -np.inf)
    expected = [int(i) for i in np.argsort(-scores, kind="stable")[: int(mask.sum())]]
    assert [row for row, _ in dense_search(snapshot, query, 50, mask)] == expected


def test_manifest_describes_the_index_and_mismatches_are_refused(tmp_path: Path) -> None:
    store, _ = _random_index(tmp_path)
    manifest = store.read_manifest()
    assert manifest["model"] == {"name": "test-model", "sha256": "0" * 64, "dimension": 16, "normalized": True}
    assert manifest["chunking"]["max_tokens"] == 100 and manifest["chunking"]["overlap"] == 10
    assert manifest["faiss"] == {"factory": "IDMap2,Flat", "metric": "inner_product"}
    assert manifest["counts"] == {"documents": 40, "chunks": 200}
    other_model = IndexSpec(ModelIdentity("other", "1" * 64, 16), 100, 10)
    with pytest.raises(IndexMismatchError, match="embedding model"):
        store.load(other_model)
    with pytest.raises(IndexMismatchError, match="chunks of 100 tokens"):
        store.load(IndexSpec(SPEC.model, 200, 10))


def test_missing_and_damaged_indexes_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(IndexNotFoundError, match="rag ingest"):
        IndexStore(tmp_path / "nothing").load(SPEC)
    store, _ = _random_index(tmp_path)
    generation = store.current_generation()
    assert generation is not None
    (store.root / generation / "chunks.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(IndexCorruptError, match="inconsistent"):
        store.load(SPEC)


def test_a_reader_that_finds_its_generation_removed_loads_the_newer_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two commits between a reader's look at CURRENT and its opening of that generation: the
    second removed it. The reader must load the current one, not fail."""
    store, vectors = _random_index(tmp_path)
    stale = store.current_generation()
    snapshot = store.load(SPEC)
    for _ in range(2):
        store.commit(SPEC, snapshot.documents.values(), snapshot.chunks, vectors)
    assert stale is not None and not (store.root / stale).exists()
    newest = store.current_generation()
    looks = iter([stale])  # the reader's first look is from before the two commits
    real = IndexStore.current_generation
    monkeypatch.setattr(store, "current_generation", lambda: next(looks, None) or real(store))
    assert store.load(SPEC).generation == newest
    # A generation that is missing while CURRENT still names it is damage, reported as such.
    monkeypatch.undo()
    (store.root / "CURRENT").write_text("gen-999999\n", encoding="utf-8")
    with pytest.raises(IndexCorruptError, match="gen-999999, which is missing"):
        store.load(SPEC)


def test_a_failed_commit_leaves_the_last_one_readable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, _ = _random_index(tmp_path)
    before = store.current_generation()
    import rag.store

    def explode(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(rag.store, "_write_jsonl", explode)
    article = Article(id="new", title="New", text="Fresh text.")
    with pytest.raises(OSError, match="disk full"):
        store.commit(SPEC, [StoredDocument(article, content_hash(article))],
                     [Chunk("new#0", "new", 0, 0, 11, "Fresh text.")], np.ones((1, 16), dtype=np.float32))
    monkeypatch.undo()
    assert store.current_generation() == before
    assert len(store.load(SPEC).documents) == 40


def test_ingest_is_idempotent_and_replaces_changed_files(
    tmp_path: Path, make_pipeline: Callable[..., RagPipeline], embedder: Embedder
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("Harbour news\n\nThe harbour reopened on Monday after repairs.", encoding="utf-8")
    (corpus / "b.txt").write_text("Rail news\n\nA new rail line opened between two towns.", encoding="utf-8")
    pipeline = make_pipeline()
    first = pipeline.ingest([corpus])
    assert sorted(first.added) == ["a", "b"] and first.chunks_embedded == 2
    generation = pipeline.store.current_generation()
    vectors_b = pipeline.snapshot().document_vectors("b")

    again = pipeline.ingest([corpus])
    assert sorted(again.unchanged) == ["a", "b"] and again.chunks_embedded == 0
    assert pipeline.store.current_generation() == generation, "nothing changed, so nothing is committed"

    (corpus / "a.txt").write_text("Harbour news\n\nThe harbour stays closed until June, the port said.",
                                  encoding="utf-8")
    changed = pipeline.ingest([corpus])
    assert changed.updated == ["a"] and changed.unchanged == ["b"] and changed.chunks_embedded == 1
    snapshot = pipeline.snapshot()
    assert snapshot.documents["a"].article.text == "The harbour stays closed until June, the port said."
    assert [c.text for c in snapshot.chunks if c.doc_id == "a"] == [snapshot.documents["a"].article.text]
    np.testing.assert_array_equal(snapshot.document_vectors("b"), vectors_b)
    top = pipeline.search("Is the harbour open?", k=1)[0]
    assert top.doc_id == "a" and "closed until June" in top.text

    # A fresh process sees the same committed index.
    reloaded = RagPipeline(Settings(index_dir=pipeline.settings.index_dir), embedder=embedder).snapshot()
    assert sorted(reloaded.documents) == ["a", "b"]


def test_index_built_with_other_chunking_is_refused(
    seed_index: Path, embedder: Embedder
) -> None:
    other = RagPipeline(Settings(index_dir=seed_index, chunk_tokens=128, chunk_overlap=16), embedder=embedder)
    with pytest.raises(IndexMismatchError, match="RAG_CHUNK_TOKENS"):
        other.search("Xiaomi")


def test_chunks_longer_than_the_model_window_are_refused(make_pipeline: Callable[..., RagPipeline]) -> None:
    pipeline = make_pipeline(chunk_tokens=300, chunk_overlap=40)
    with pytest.raises(ConfigError, match="RAG_CHUNK_TOKENS to 254 or less"):
        pipeline.ingest([SEEDS])
    assert not pipeline.store.exists()


def test_rebuild_starts_afresh(tmp_path: Path, make_pipeline: Callable[..., RagPipeline]) -> None:
    extra = tmp_path / "extra.txt"
    extra.write_text("Extra\n\nAn unrelated article about weather.", encoding="utf-8")
    pipeline = make_pipeline()
    pipeline.ingest([SEEDS, extra])
    assert len(pipeline.snapshot().documents) == 2
    report = pipeline.ingest([SEEDS], rebuild=True)
    assert report.added == ["000_dc0a8f6f0901bab2"]
    assert list(pipeline.snapshot().documents) == ["000_dc0a8f6f0901bab2"]
    manifest = json.loads((pipeline.store.root / str(pipeline.store.current_generation()) / "manifest.json")
                          .read_text(encoding="utf-8"))
    assert manifest["counts"]["documents"] == 1


def test_duplicate_ids_in_one_batch_are_reported_and_the_later_wins(
    tmp_path: Path, make_pipeline: Callable[..., RagPipeline]
) -> None:
    feed = tmp_path / "feed.jsonl"
    feed.write_text(
        '{"id": "same", "title": "First", "text": "The first version of the story."}\n'
        '{"id": "same", "title": "Second", "text": "The corrected version of the story."}\n',
        encoding="utf-8",
    )
    pipeline = make_pipeline()
    report = pipeline.ingest([feed])
    assert report.added == ["same"]
    assert [p.message for p in report.problems] == ["duplicate document id 'same'; the later one wins"]
    assert report.problems[0].where == f"{feed}:2"
    assert pipeline.document("same").text == "The corrected version of the story."
