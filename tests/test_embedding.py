"""The packaged embedding model: offline, normalised, bf16 as a working setting; the
onnx backend (int8, exported once into a cache) close to it and kept apart from it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

import rag.embedding as embedding_module
from rag.config import Settings
from rag.embedding import ONNX_EXPORT_VERSION, Embedder, packaged_model_path, resolve_backend
from rag.errors import ConfigError, IndexMismatchError
from rag.pipeline import RagPipeline
from rag.sentences import split_sentences
from tests.conftest import LENDERS, MISSION_QUESTION, SEEDS
from tests.processes import run_rag


def test_packaged_model_loads_offline_and_vectors_are_normalised(embedder: Embedder) -> None:
    assert embedder.model_path == packaged_model_path()
    vectors = embedder.embed_passages(["Xiaomi partnered with lenders.", "The weather was sunny."])
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    query = embedder.embed_query("Which lenders did Xiaomi work with?")
    assert float(vectors[0] @ query) > float(vectors[1] @ query)
    identity = embedder.identity
    assert identity.name == "all-MiniLM-L6-v2" and identity.dimension == 384 and len(identity.sha256) == 64


def test_bf16_setting_gives_nearly_the_same_vectors(embedder: Embedder) -> None:
    texts = ["Some of them were KreditBee and ZestMoney.", "Zhao Weixing comes from XW Bank."]
    bf16 = Embedder(bf16=True)
    assert bf16.bf16
    import torch

    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    cosines = np.sum(bf16.embed_passages(texts) * embedder.embed_passages(texts), axis=1)
    assert np.all(cosines > 0.99)
    # Same model files, same identity: an index built in bf16 is usable in fp32 and back.
    assert bf16.identity == embedder.identity


def test_token_counts_exclude_special_tokens(embedder: Embedder) -> None:
    assert embedder.count_tokens(["hello world"]) == [2]
    assert embedder.count_tokens([]) == []


def test_embedding_with_progress_keeps_the_input_order(embedder: Embedder) -> None:
    texts = [f"Article {i} says {'very ' * (i % 7)}much about harbours." for i in range(70)]
    small_batches = Embedder(batch_size=4)  # blocks of 32: the 70 texts span three of them
    with_bar = small_batches.embed_passages(texts, progress=True)
    np.testing.assert_array_equal(with_bar, small_batches.embed_passages(texts))  # the bar changes nothing
    # Other batches pad differently, which moves bf16 vectors slightly: each row must still be its text's.
    similarity = with_bar @ embedder.embed_passages(texts).T
    assert (similarity.argmax(axis=1) == np.arange(len(texts))).all()
    assert similarity.diagonal().min() > 0.99


# -- the onnx backend (int8 on onnxruntime; the `fast` extra) ----------------------------

@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def onnx_embedder(model_cache: Path) -> Embedder:
    return Embedder(backend="onnx", cache_dir=model_cache)


def _export_folder(cache: Path, embedder: Embedder) -> Path:
    return cache / f"{embedder.source_sha256[:16]}-{ONNX_EXPORT_VERSION}"


def _seed_sentences() -> list[str]:
    text = next(SEEDS.glob("*.txt")).read_text(encoding="utf-8")
    return [s for s in (text[a:b].strip() for a, b in split_sentences(text)) if s]


def test_unknown_backend_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"unknown embedding backend 'tensorrt'.*torch, onnx, auto"):
        Embedder(backend="tensorrt")
    with pytest.raises(ValidationError, match="embed_backend"):
        Settings(embed_backend="tensorrt")  # type: ignore[arg-type]


def test_without_onnxruntime_onnx_is_refused_and_auto_falls_back_to_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedding_module, "onnx_available", lambda: False)
    with pytest.raises(ConfigError, match=r"pip install onnxruntime onnx"):
        Embedder(backend="onnx")
    assert Embedder(backend="auto").backend == "torch"


def test_auto_is_the_backend_of_the_index_else_onnx(model_cache: Path, seed_index: Path, tmp_path: Path) -> None:
    assert Settings().embed_backend == "auto" and resolve_backend("auto") == "onnx"
    # A new index is built with onnx ...
    fresh = RagPipeline(Settings(index_dir=tmp_path / "new", embed_cache_dir=model_cache))
    assert fresh.embedder.backend == "onnx"
    fresh.ingest([SEEDS])
    assert fresh.store.read_manifest()["model"]["name"].endswith("(onnx int8)")
    reopened = RagPipeline(Settings(index_dir=tmp_path / "new", embed_cache_dir=model_cache))
    assert reopened.embedder.backend == "onnx"
    # ... and one built with torch keeps being searched with torch, with nothing to set.
    old = RagPipeline(Settings(index_dir=seed_index, embed_cache_dir=model_cache))
    assert old.embedder.backend == "torch"
    for pipeline in (reopened, old):
        answer = pipeline.ask(MISSION_QUESTION)
        assert all(name in (answer.answer or "") for name in LENDERS)
    # Asked for by name, the other backend is refused with a message, not searched with wrong vectors.
    with pytest.raises(IndexMismatchError):
        RagPipeline(Settings(index_dir=seed_index, embed_backend="onnx", embed_cache_dir=model_cache)).search("Xiaomi")


def test_onnx_queries_run_on_one_thread_and_batches_on_the_setting(model_cache: Path) -> None:
    embedder = Embedder(backend="onnx", cache_dir=model_cache, threads=2)
    query = embedder.embed_query(MISSION_QUESTION)
    assert embedder.onnx.single.get_session_options().intra_op_num_threads == 1
    assert "batches" not in vars(embedder.onnx), "a query never makes the batch session"
    passages = embedder.embed_passages([MISSION_QUESTION, "Shares rose in early trading."])
    assert embedder.onnx.batches.get_session_options().intra_op_num_threads == 2
    np.testing.assert_allclose(passages[0], query, atol=1e-5)  # the same model either way
    served = Embedder(backend="onnx", cache_dir=model_cache, threads=1)
    served.embed_passages(["Shares rose in early trading."])
    assert served.onnx.batches is served.onnx.single, "one thread: one session"


def test_a_first_ingest_exports_the_model_and_prints_only_its_report(tmp_path: Path) -> None:
    cache = tmp_path / "models"  # nothing exported yet
    result = run_rag(tmp_path, "ingest", str(SEEDS), "--index", str(tmp_path / "index"), "-q",
                     env={"RAG_EMBED_CACHE_DIR": str(cache)})
    assert result.returncode == 0, result.stderr
    assert any(cache.glob(f"*-{ONNX_EXPORT_VERSION}/meta.json")), "the onnx model was exported"
    assert result.stdout.startswith("1 added,") and len(result.stdout.strip().splitlines()) == 1
    assert result.stderr.strip() == "", "the export leaves no logging behind (bm25s's debug lines)"


def test_onnx_runs_without_bf16(model_cache: Path) -> None:
    settings = Settings(index_dir=model_cache / "unused", embed_backend="onnx", embed_cache_dir=model_cache)
    pipeline = RagPipeline(settings)
    assert pipeline.embedder.backend == "onnx" and not pipeline.embedder.bf16


def test_onnx_vectors_are_close_to_torch_float32(onnx_embedder: Embedder) -> None:
    fp32 = Embedder(bf16=False)
    sentences = _seed_sentences()
    assert len(sentences) > 10
    # The same tokenizer: same token counts, same window, same dimension.
    assert onnx_embedder.count_tokens(sentences) == fp32.count_tokens(sentences)
    assert onnx_embedder.max_sequence_tokens == fp32.max_sequence_tokens == 256
    vectors = onnx_embedder.embed_passages(sentences)
    assert vectors.shape == (len(sentences), 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    cosines = np.sum(vectors * fp32.embed_passages(sentences), axis=1)
    # int8 moves every vector a little (which is why it has an identity of its own): typical
    # sentences stay above 0.99, the shortest ones (a byline, a one-word line) above 0.98.
    assert np.median(cosines) >= 0.99 and cosines.min() >= 0.98, (np.median(cosines), cosines.min())
    # The question finds the same best sentence with either backend.
    best = int(np.argmax(vectors @ onnx_embedder.embed_query(MISSION_QUESTION)))
    assert best == int(np.argmax(fp32.embed_passages(sentences) @ fp32.embed_query(MISSION_QUESTION)))


def test_onnx_vectors_do_not_depend_on_their_neighbours(onnx_embedder: Embedder) -> None:
    # int8 activations are scaled per run; each text runs alone (no padding), so a
    # passage's vector is the same in any company, and the same as its query vector.
    texts = [f"Article {i} says {'very ' * (i * 5 % 37)}much about harbours." for i in range(40)]
    one_by_one = np.stack([onnx_embedder.embed_query(t) for t in texts])
    np.testing.assert_allclose(onnx_embedder.embed_passages(texts), one_by_one, atol=1e-6)
    np.testing.assert_allclose(onnx_embedder.embed_passages(texts[::-1])[::-1], one_by_one, atol=1e-6)


def test_onnx_exports_once_and_reuses_the_cache(
    onnx_embedder: Embedder, model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    onnx_embedder.embed_query("warm")
    folder = _export_folder(model_cache, onnx_embedder)
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    assert meta["format"] == ONNX_EXPORT_VERSION and sorted(p.name for p in folder.iterdir()) == [
        "meta.json", "model.onnx", "tokenizer.json",
    ]
    stamp = (folder / "model.onnx").stat().st_mtime_ns

    def no_export(*args: object) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(embedding_module, "export_onnx_int8", no_export)
    again = Embedder(backend="onnx", cache_dir=model_cache)
    np.testing.assert_array_equal(again.embed_query("warm"), onnx_embedder.embed_query("warm"))
    assert (folder / "model.onnx").stat().st_mtime_ns == stamp
    assert not [p for p in model_cache.iterdir() if p.name.startswith((".tmp-", ".stale-"))]


def test_a_damaged_export_is_rebuilt(onnx_embedder: Embedder, model_cache: Path, tmp_path: Path) -> None:
    good = _export_folder(model_cache, onnx_embedder)
    onnx_embedder.embed_query("warm")
    folder = _export_folder(tmp_path, onnx_embedder)
    shutil.copytree(good, folder)
    with open(folder / "model.onnx", "r+b") as fh:  # cut short, as by a full disk
        fh.truncate(1000)
    (tmp_path / f".tmp-{folder.name}-crashed").mkdir()  # a crashed export's leftovers are ignored
    rebuilt = Embedder(backend="onnx", cache_dir=tmp_path)
    np.testing.assert_allclose(rebuilt.embed_query(MISSION_QUESTION), onnx_embedder.embed_query(MISSION_QUESTION),
                               atol=1e-5)
    digest = hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest()
    assert digest == json.loads((folder / "meta.json").read_text(encoding="utf-8"))["model_sha256"]
    # A folder without its meta.json (a partial copy) is rebuilt too.
    os.remove(folder / "meta.json")
    assert Embedder(backend="onnx", cache_dir=tmp_path).dimension == 384
    assert (folder / "meta.json").is_file()


def test_an_index_refuses_the_other_backend(onnx_embedder: Embedder, seed_index: Path, model_cache: Path,
                                            embedder: Embedder) -> None:
    assert onnx_embedder.identity.sha256 != embedder.identity.sha256
    assert onnx_embedder.identity.name == "all-MiniLM-L6-v2 (onnx int8)"
    pipeline = RagPipeline(
        Settings(index_dir=seed_index, embed_backend="onnx", embed_cache_dir=model_cache), embedder=onnx_embedder
    )
    with pytest.raises(IndexMismatchError, match=r"'all-MiniLM-L6-v2'.*'all-MiniLM-L6-v2 \(onnx int8\)'"):
        pipeline.search(MISSION_QUESTION)
