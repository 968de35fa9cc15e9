"""The index by corpus size: exact below the threshold, IVF-SQ8 above it, with the
threshold lowered so that a few thousand synthetic vectors cross it. Approximate
search is checked against a NumPy brute-force oracle; commits must update the IVF
index without retraining and without ever changing a kept chunk's exact vector."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import rag.retrieval
from rag.config import Settings
from rag.embedding import ModelIdentity
from rag.errors import IndexMismatchError
from rag.pipeline import RagPipeline
from rag.retrieval import dense_search
from rag.store import IndexLayout, IndexSnapshot, IndexSpec, IndexStore, StoredDocument, content_hash
from rag.types import Article, Chunk

DIM = 32
SPEC = IndexSpec(ModelIdentity("test-model", "0" * 64, DIM), chunk_tokens=100, chunk_overlap=10)
LAYOUT = IndexLayout(ann_threshold=2_000, nprobe=12)
PER_DOC = 10


def _clustered(rng: np.random.Generator, n: int, centers: np.ndarray) -> np.ndarray:
    """Normalised vectors drawn around random centres (a Gaussian mixture), like real embeddings."""
    x = centers[rng.integers(0, len(centers), n)] + rng.normal(scale=0.2, size=(n, DIM))
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


CENTERS = np.random.default_rng(0).normal(size=(40, DIM)).astype(np.float32) / np.sqrt(DIM)


def _docs(first: int, count: int) -> tuple[list[StoredDocument], list[Chunk]]:
    docs, chunks = [], []
    for d in range(first, first + count):
        pieces = [f"w{d}x{i}." for i in range(PER_DOC)]
        text = " ".join(pieces)
        article = Article(id=f"doc{d}", title=f"Doc {d}", text=text,
                          source="Even Wire" if d % 2 == 0 else "Odd Wire")
        docs.append(StoredDocument(article, content_hash(article)))
        offset = 0
        for i, piece in enumerate(pieces):
            start = text.index(piece, offset)
            chunks.append(Chunk(f"doc{d}#{i}", f"doc{d}", i, start, start + len(piece), piece))
            offset = start + len(piece)
    return docs, chunks


class Corpus:
    """Documents, chunks and vectors that a test changes and commits, like the pipeline does."""

    def __init__(self, root: Path, layout: IndexLayout = LAYOUT, seed: int = 1):
        self.store = IndexStore(root, layout=layout)
        self.rng = np.random.default_rng(seed)
        self.docs: dict[str, StoredDocument] = {}
        self.chunks: list[Chunk] = []
        self.vectors = np.zeros((0, DIM), dtype=np.float32)
        self.next_doc = 0

    def add(self, n_docs: int) -> None:
        docs, chunks = _docs(self.next_doc, n_docs)
        self.next_doc += n_docs
        self.docs.update({d.article.id: d for d in docs})
        self.chunks += chunks
        self.vectors = np.concatenate([self.vectors, _clustered(self.rng, len(chunks), CENTERS)])

    def delete(self, doc_ids: set[str]) -> None:
        keep = np.array([c.doc_id not in doc_ids for c in self.chunks], dtype=bool)
        self.chunks = [c for c, k in zip(self.chunks, keep, strict=True) if k]
        self.vectors = self.vectors[keep]
        self.docs = {i: d for i, d in self.docs.items() if i not in doc_ids}

    def reembed(self, doc_id: str) -> None:
        rows = [r for r, c in enumerate(self.chunks) if c.doc_id == doc_id]
        self.vectors[rows] = _clustered(self.rng, len(rows), CENTERS)

    def commit(self, previous: IndexSnapshot | None) -> IndexSnapshot:
        self.store.commit(SPEC, self.docs.values(), self.chunks, self.vectors, previous=previous)
        return self.store.load(SPEC)


def _queries(n: int = 60, seed: int = 5) -> np.ndarray:
    return _clustered(np.random.default_rng(seed), n, CENTERS)


def _recall(snapshot: IndexSnapshot, vectors: np.ndarray, mask: np.ndarray | None = None, k: int = 10) -> float:
    hits = total = 0
    for q in _queries():
        scores = vectors @ q if mask is None else np.where(mask, vectors @ q, -np.inf)
        expected = set(np.argsort(-scores, kind="stable")[:k].tolist())
        got = dense_search(snapshot, q, k, mask)
        assert len(got) == k
        if mask is not None:
            assert all(mask[row] for row, _ in got), "a filtered search returned a row the filter excludes"
        # scores are exact cosines of the stored float32 vectors, best first
        np.testing.assert_allclose([s for _, s in got], [float(vectors[r] @ q) for r, _ in got], rtol=1e-5, atol=1e-6)
        assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)
        hits += len(expected & {row for row, _ in got})
        total += k
    return hits / total


@pytest.fixture
def ann_corpus(tmp_path: Path) -> tuple[Corpus, IndexSnapshot]:
    corpus = Corpus(tmp_path / "idx")
    corpus.add(300)  # 3,000 chunks, above the lowered threshold
    return corpus, corpus.commit(None)


def test_the_manifest_records_the_approximate_index_and_its_parameters(
    ann_corpus: tuple[Corpus, IndexSnapshot],
) -> None:
    corpus, snapshot = ann_corpus
    manifest = corpus.store.read_manifest()
    assert manifest["format_version"] == 2
    nlist = round(3_000 ** 0.5)
    assert manifest["faiss"] == {
        "factory": f"IVF{nlist},SQ8", "metric": "inner_product", "kind": "ivf", "nlist": nlist, "nprobe": 12,
        "trained_on": 3_000, "training_sample": 3_000, "trained_in": snapshot.generation, "threshold": 2_000,
        "exact_vectors": "vectors.npy", "exact_dtype": "float32",
    }
    assert snapshot.kind == "ann" and snapshot.vectors.ntotal == 3_000
    # the exact vectors sit beside the index, bit for bit, and every accessor reads them
    on_disk = np.load(corpus.store.root / snapshot.generation / "vectors.npy", allow_pickle=False)
    np.testing.assert_array_equal(on_disk, corpus.vectors)
    np.testing.assert_array_equal(snapshot.all_vectors(), corpus.vectors)
    np.testing.assert_array_equal(snapshot.document_vectors("doc7"), corpus.vectors[70:80])
    np.testing.assert_array_equal(snapshot.row_vectors([5, 2999]), corpus.vectors[[5, 2999]])


def test_approximate_search_recalls_the_exact_neighbours(ann_corpus: tuple[Corpus, IndexSnapshot]) -> None:
    corpus, snapshot = ann_corpus
    assert _recall(snapshot, corpus.vectors) >= 0.95


def test_a_commit_updates_the_index_without_retraining_and_keeps_exact_vectors(
    ann_corpus: tuple[Corpus, IndexSnapshot],
) -> None:
    corpus, before = ann_corpus
    trained_in = corpus.store.read_manifest()["faiss"]["trained_in"]
    deleted = {f"doc{d}" for d in range(0, 300, 7)}
    deleted_vectors = corpus.vectors[[r for r, c in enumerate(corpus.chunks) if c.doc_id in deleted]]
    corpus.delete(deleted)
    corpus.reembed("doc1")  # a corrected article: same chunk ids, new vectors
    corpus.add(40)
    kept = {c.id: before.row_vectors([before.row_by_faiss_id[int(fid)]])[0]
            for c, fid in zip(before.chunks, before.faiss_ids, strict=True) if c.doc_id not in deleted | {"doc1"}}

    after = corpus.commit(before)

    faiss_manifest = corpus.store.read_manifest()["faiss"]
    assert faiss_manifest["trained_in"] == trained_in and faiss_manifest["trained_on"] == 3_000, "not retrained"
    assert after.kind == "ann" and after.vectors.ntotal == len(corpus.chunks) == len(after.chunks)
    exact = after.all_vectors()
    for row, chunk in enumerate(after.chunks):
        if chunk.id in kept:
            assert np.array_equal(exact[row], kept[chunk.id]), "a kept chunk's vector changed"
    np.testing.assert_array_equal(exact, corpus.vectors)
    # deleted chunks are never found, even by their own vectors
    allowed_ids = set(after.faiss_ids.tolist())
    for q in deleted_vectors[:50]:
        for row, _ in dense_search(after, q, 20):
            assert after.chunks[row].doc_id not in deleted
    _, ids = after.vectors.search(deleted_vectors[:50], 20)
    assert set(ids[ids >= 0].tolist()) <= allowed_ids
    # the corrected article is found by its new vectors, not its old ones
    rows = after.rows_by_doc["doc1"]
    for row in rows:
        top_row, score = dense_search(after, exact[row], 1)[0]
        assert top_row == row and score == pytest.approx(1.0, abs=1e-5)
    assert _recall(after, corpus.vectors) >= 0.95


@pytest.mark.parametrize("brute_force", [True, False])
def test_filtered_search_returns_only_allowed_rows_and_matches_the_masked_oracle(
    ann_corpus: tuple[Corpus, IndexSnapshot], monkeypatch: pytest.MonkeyPatch, brute_force: bool,
) -> None:
    """Both ways a filter is searched: brute force over the allowed rows (which a corpus this
    small always gets), and the IVF index with an id selector (forced by setting the
    brute-force limits to 0)."""
    corpus, snapshot = ann_corpus
    if not brute_force:
        monkeypatch.setattr(rag.retrieval, "EXACT_FILTER_ROWS", 0)
        monkeypatch.setattr(rag.retrieval, "EXACT_FILTER_SHARE", 0.0)
    odd = np.array([snapshot.documents[c.doc_id].article.source == "Odd Wire" for c in snapshot.chunks])
    assert _recall(snapshot, corpus.vectors, odd) >= 0.95
    # a filter so narrow that the probed lists hold fewer than k allowed rows: all of them come back
    few = np.zeros(len(snapshot.chunks), dtype=bool)
    few[[3, 1_500, 2_998]] = True
    q = _queries(1)[0]
    expected = [int(i) for i in np.argsort(-np.where(few, corpus.vectors @ q, -np.inf), kind="stable")[:3]]
    assert [row for row, _ in dense_search(snapshot, q, 10, few)] == expected
    assert dense_search(snapshot, q, 10, np.zeros(len(snapshot.chunks), dtype=bool)) == []


def test_the_index_crosses_the_threshold_both_ways(tmp_path: Path) -> None:
    corpus = Corpus(tmp_path / "idx")
    corpus.add(150)  # 1,500 chunks: exact
    flat = corpus.commit(None)
    assert flat.kind == "flat" and corpus.store.read_manifest()["faiss"]["factory"] == "IDMap2,Flat"
    flat_vectors = flat.all_vectors()

    corpus.add(100)  # 2,500 chunks: approximate, trained now
    ann = corpus.commit(flat)
    manifest = corpus.store.read_manifest()
    assert ann.kind == "ann" and manifest["faiss"]["trained_on"] == 2_500
    np.testing.assert_array_equal(ann.all_vectors()[:1_500], flat_vectors)  # copied exactly across the switch
    assert _recall(ann, corpus.vectors) >= 0.95

    corpus.delete({f"doc{d}" for d in range(100)})  # 1,500 chunks: still approximate (above half the threshold)
    still = corpus.commit(ann)
    assert still.kind == "ann" and corpus.store.read_manifest()["faiss"]["trained_in"] == ann.generation

    corpus.add(400)  # 5,500 chunks: more than twice the 2,500 it was trained on, so trained afresh
    grown = corpus.commit(still)
    manifest = corpus.store.read_manifest()
    assert manifest["faiss"]["trained_in"] == grown.generation and manifest["faiss"]["trained_on"] == 5_500
    assert _recall(grown, corpus.vectors) >= 0.95

    corpus.delete({f"doc{d}" for d in range(100, 560)})  # 900 chunks: below half the threshold, exact again
    small = corpus.commit(grown)
    assert small.kind == "flat" and corpus.store.read_manifest()["format_version"] == 1
    assert _recall(small, corpus.vectors) == 1.0
    assert not (corpus.store.root / small.generation / "vectors.npy").exists()


def test_a_flat_index_of_format_version_1_still_loads_and_a_newer_one_is_refused(tmp_path: Path) -> None:
    corpus = Corpus(tmp_path / "idx", layout=IndexLayout())  # as written before the IVF index existed
    corpus.add(50)
    corpus.commit(None)
    generation = corpus.store.current_generation()
    assert generation is not None
    manifest_path = corpus.store.root / generation / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    assert manifest["format_version"] == 1
    assert manifest["faiss"] == {"factory": "IDMap2,Flat", "metric": "inner_product"}
    assert sorted(p.name for p in (corpus.store.root / generation).iterdir()) == [
        "bm25", "chunks.jsonl", "documents.jsonl", "manifest.json", "vectors.faiss"]
    # read with the threshold lowered below its size: it loads as it is, exact
    snapshot = IndexStore(corpus.store.root, layout=IndexLayout(ann_threshold=100)).load(SPEC)
    assert snapshot.kind == "flat" and _recall(snapshot, corpus.vectors) == 1.0
    np.testing.assert_array_equal(snapshot.all_vectors(), corpus.vectors)

    manifest_path.write_text(json.dumps(manifest | {"format_version": 4}), encoding="utf-8")
    with pytest.raises(IndexMismatchError, match=r"format version 4.*reads 1, 2 and 3.*--rebuild"):
        corpus.store.load(SPEC)


def test_settings_choose_the_layout(tmp_path: Path) -> None:
    settings = Settings(index_dir=tmp_path / "idx", ann_threshold=5_000, ann_nlist=64, ann_nprobe=4,
                        ann_retrain_growth=3.0)
    pipeline = RagPipeline(settings)
    assert pipeline.store.layout == IndexLayout(ann_threshold=5_000, nlist=64, nprobe=4, retrain_growth=3.0)


class HashEmbedder:
    """Stands in for the model in a pipeline: a clustered vector seeded by the text's hash."""

    identity = ModelIdentity("hash-embedder", "f" * 64, DIM)
    max_sequence_tokens = 512

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(t.split()) for t in texts]

    def embed_passages(self, texts: list[str], progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        return np.concatenate([_clustered(np.random.default_rng(list(t.encode())), 1, CENTERS) for t in texts])

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_passages([text])[0]


def test_the_pipeline_writes_and_updates_an_approximate_index(tmp_path: Path) -> None:
    """Ingest, delete and add through RagPipeline with the threshold lowered: the IVF index
    is trained once, then updated; kept vectors stay bit-identical; deleted articles are gone."""
    settings = Settings(index_dir=tmp_path / "idx", ann_threshold=1_000, ann_nprobe=16, embed_titles=False)
    pipeline = RagPipeline(settings, embedder=HashEmbedder())  # type: ignore[arg-type]

    def articles(first: int, count: int) -> list[Article]:
        return [Article(id=f"a{i}", title=f"Story {i}", text=f"Story number {i} tells of event {i * 7}.")
                for i in range(first, first + count)]

    pipeline.add(articles(0, 1_200))
    first = pipeline.snapshot()
    assert first.kind == "ann" and first.manifest["faiss"]["trained_on"] == 1_200
    assert first.manifest["faiss"]["nprobe"] == 16 and first.nprobe == 16
    kept_before = first.document_vectors("a5")

    report = pipeline.delete([f"a{i}" for i in range(100, 200)])
    assert report.chunks_embedded == 0
    pipeline.add(articles(1_200, 50))
    after = pipeline.snapshot()
    assert after.kind == "ann" and len(after.chunks) == 1_150 == after.vectors.ntotal
    assert after.manifest["faiss"]["trained_in"] == first.generation, "updated, not retrained"
    np.testing.assert_array_equal(after.document_vectors("a5"), kept_before)
    for i in (150, 1_210):
        hits = pipeline.search(f"Story number {i} tells of event {i * 7}.", k=5)
        assert all(p.doc_id not in {f"a{j}" for j in range(100, 200)} for p in hits)
    assert pipeline.search("Story number 1210 tells of event 8470.", k=1)[0].doc_id == "a1210"
