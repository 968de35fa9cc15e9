"""A real uvicorn server on 127.0.0.1 for HTTP tests: ``serve_app`` runs an app in a
thread and yields an httpx client bound to it. Also a pipeline with a generator that
fails mid-answer, for the error paths of streams."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import httpx
import uvicorn
from fastapi import FastAPI

from rag.config import Settings
from rag.embedding import Embedder
from rag.errors import GeneratorFailedError
from rag.generators.base import Generator
from rag.pipeline import RagPipeline
from rag.types import GeneratedAnswer, Passage


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_error_guard(allowed: frozenset[int]) -> Callable[[httpx.Response], None]:
    """A response hook: any 5xx not in ``allowed`` fails the test that caused it."""

    def check(response: httpx.Response) -> None:
        status = response.status_code
        if status < 500 or status in allowed:
            return
        where = f"{response.request.method} {response.request.url}"
        response.read()  # hooks run before the body is read
        raise AssertionError(f"{where} -> {status}: {response.text}")

    return check


@contextmanager
def serve_app(app: FastAPI, allowed_5xx: frozenset[int] = frozenset()) -> Iterator[httpx.Client]:
    """Run ``app`` under a real uvicorn server in a thread; yield a client bound to its URL
    (``str(client.base_url)``). Every response the client gets is checked: no 500s anywhere
    (only ``allowed_5xx``)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=base_url, timeout=120, trust_env=False,
                          event_hooks={"response": [server_error_guard(allowed_5xx)]})
    try:
        deadline = time.monotonic() + 120
        while True:
            assert thread.is_alive(), "the uvicorn server stopped before it answered /health"
            try:
                if client.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the uvicorn server did not answer /health in time"
            time.sleep(0.1)
        yield client
    finally:
        client.close()
        server.should_exit = True
        thread.join(timeout=30)
        assert not thread.is_alive(), "the uvicorn server did not stop"


class FailingGenerator:
    """A generator whose model breaks off mid-answer, as an LLM server that dies would."""

    name = "failing"
    PIECE = "The lenders were "
    MESSAGE = "the model server closed the connection mid-answer"

    def generate(self, question: str, passages: Sequence[Passage]) -> GeneratedAnswer:
        raise GeneratorFailedError(self.MESSAGE)

    def stream(self, question: str, passages: Sequence[Passage]) -> Iterator[str | GeneratedAnswer]:
        yield self.PIECE
        raise GeneratorFailedError(self.MESSAGE)


class EndlessGenerator:
    """A generator that talks until it is stopped, and records that it was: ``closed``."""

    name = "endless"

    def __init__(self) -> None:
        self.closed = threading.Event()

    def generate(self, question: str, passages: Sequence[Passage]) -> GeneratedAnswer:
        raise GeneratorFailedError("the endless generator only streams")

    def stream(self, question: str, passages: Sequence[Passage]) -> Iterator[str | GeneratedAnswer]:
        self.closed.clear()
        try:
            while True:
                yield "and "
                time.sleep(0.02)
        finally:
            self.closed.set()


class PipelineWithTestGenerators(RagPipeline):
    """A pipeline that also knows the generators ``failing`` and ``endless`` (one instance,
    ``self.endless``, so that a test can see it being closed)."""

    def __init__(self, settings: Settings, embedder: Embedder) -> None:
        super().__init__(settings, embedder=embedder)
        self.endless = EndlessGenerator()

    def generator(self, name: str | None = None) -> Generator:
        if name == FailingGenerator.name:
            return FailingGenerator()
        if name == EndlessGenerator.name:
            return self.endless
        return super().generator(name)
