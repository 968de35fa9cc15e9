"""The packaged embedding model: offline, normalised, bf16 as a working setting."""

from __future__ import annotations

import numpy as np

from rag.embedding import Embedder, packaged_model_path


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
