"""Shared fixtures: the real packaged embedding model, an index of seeds/, and
a guard that fails any test that tries to reach beyond the loopback interface."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rag.config import Settings
from rag.embedding import Embedder
from rag.pipeline import RagPipeline

REPO = Path(__file__).resolve().parent.parent
SEEDS = REPO / "seeds"
SEED_ID = "000_dc0a8f6f0901bab2"
LENDERS = ["KreditBee", "Aditya Birla Finance Limited", "Money View", "EarlySalary", "CreditVidya", "ZestMoney"]
MISSION_QUESTION = "Which lenders did Xiaomi partner with?"
# The fields of an answer, a citation and a passage, in the API and `rag ask --json` alike.
ANSWER_KEYS = {
    "question", "answer", "abstained", "reason", "citations", "passages", "generator", "timings_ms", "check",
}
CITATION_KEYS = {"n", "doc_id", "title", "url", "published_at", "quote", "start", "end", "support", "supported"}
PASSAGE_KEYS = {"chunk_id", "doc_id", "title", "text", "start", "end", "score"}

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

_real_connect = socket.socket.connect


def _loopback_only(self: socket.socket, address: object) -> None:
    if self.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
        host = str(address[0])
        try:
            allowed = ipaddress.ip_address(host).is_loopback
        except ValueError:
            allowed = host == "localhost"
        if not allowed:
            raise OSError(f"tests may not use the network: connection to {host} refused")
    _real_connect(self, address)  # type: ignore[arg-type]


socket.socket.connect = _loopback_only  # type: ignore[method-assign]


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return Embedder()


@pytest.fixture(scope="session")
def seed_index(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Path:
    """An index of seeds/ built once per session; tests must not modify it."""
    index_dir = tmp_path_factory.mktemp("seed-index")
    RagPipeline(Settings(index_dir=index_dir), embedder=embedder).ingest([SEEDS])
    return index_dir


@pytest.fixture(scope="session")
def seed_pipeline(seed_index: Path, embedder: Embedder) -> RagPipeline:
    return RagPipeline(Settings(index_dir=seed_index), embedder=embedder)


@pytest.fixture
def make_pipeline(tmp_path: Path, embedder: Embedder) -> Iterator[object]:
    """A factory for pipelines over a fresh, empty index directory."""

    def make(**overrides: object) -> RagPipeline:
        overrides.setdefault("index_dir", tmp_path / "index")
        return RagPipeline(Settings(**overrides), embedder=embedder)  # type: ignore[arg-type]

    yield make


@pytest.fixture(scope="module")
def empty_api(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Iterator[httpx.Client]:
    """An API over an index directory that exists but where nothing was ever built."""
    from api.app import create_app
    from tests.servers import serve_app

    index_dir = tmp_path_factory.mktemp("empty-index")
    app = create_app(pipeline=RagPipeline(Settings(index_dir=index_dir), embedder=embedder))
    with serve_app(app, allowed_5xx=frozenset({503})) as client:
        yield client


@pytest.fixture(scope="module")
def plugin_pipeline(seed_index: Path, embedder: Embedder) -> RagPipeline:
    """The seed index, with the test generators of tests/servers.py beside the installed ones."""
    from tests.servers import PipelineWithTestGenerators

    return PipelineWithTestGenerators(Settings(index_dir=seed_index), embedder=embedder)


@pytest.fixture(scope="module")
def plugin_api(plugin_pipeline: RagPipeline) -> Iterator[httpx.Client]:
    from api.app import create_app
    from tests.servers import serve_app

    with serve_app(create_app(pipeline=plugin_pipeline), allowed_5xx=frozenset({502})) as client:
        yield client
