"""Settings: read from ``RAG_*`` environment variables (and an optional ``.env``
file) once, at the CLI or app entry point. Library code takes plain arguments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting of the system; each field maps to ``RAG_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="RAG_", env_file=".env", extra="ignore")

    index_dir: Path = Field(Path("index"), description="Where the index lives.")
    model_path: Path | None = Field(
        None,
        description="A sentence-transformers model folder; default: the packaged all-MiniLM-L6-v2.",
    )
    bf16: bool | None = Field(
        None,
        description="Run the embedder in bfloat16; default: on when the CPU has native bf16.",
    )
    embed_backend: Literal["torch", "onnx", "auto"] = Field(
        "auto",
        description="What runs the embedder: onnx (int8 weights on onnxruntime, exported locally from the "
        "packaged model on first use); torch (sentence-transformers, bfloat16 where the CPU has it); auto: "
        "the backend an existing index was built with, else onnx (torch where onnxruntime is not installed). "
        "Their vectors differ slightly, so an index is searched only with the backend that built it.",
    )
    embed_cache_dir: Path | None = Field(
        None, description="Where the onnx backend keeps its one-time export; default: ~/.cache/rag-news/models."
    )
    embed_batch_size: int = Field(32, ge=1, le=1024)
    embed_threads: int | None = Field(
        None, ge=1, le=512,
        description="CPU threads for embedding a batch of passages; default: all cores, except in `rag serve`, "
        "where it is 1 so that concurrent requests share the cores. Queries always use one.",
    )
    chunk_tokens: int = Field(200, ge=16, le=512, description="Chunk size in model tokens.")
    chunk_overlap: int = Field(40, ge=0, description="Tokens shared by neighbouring chunks.")
    embed_titles: bool = Field(
        True, description="Embed each chunk after its article's title (the stored text stays the chunk's)."
    )
    top_k: int = Field(5, ge=1, le=100, description="Passages returned by default.")
    candidates: int = Field(50, ge=1, le=1000, description="Candidates per retriever before fusion.")
    fusion: Literal["rrf", "weighted", "dense", "bm25"] = "rrf"
    rrf_k: int = Field(20, ge=1, description="Constant of reciprocal rank fusion.")
    dense_weight: float = Field(0.5, ge=0.0, le=1.0, description="Dense share in weighted fusion.")
    source_queries: bool = Field(
        True, description="Give each source a question names its own sub-query (and the day it names, if any)."
    )
    rerank_depth: int = Field(
        100, ge=0, le=1000, description="Fused candidates re-ranked by term coverage and proximity; 0: none."
    )
    max_chunks_per_article: int = Field(
        0, ge=0, le=100, description="At most this many chunks of one article in the results; 0: no limit."
    )
    collapse_duplicates: bool = Field(
        False, description="Fold near-duplicate articles (syndicated copies) into the earliest one."
    )
    recency_weight: float = Field(
        1.5, ge=0.0, le=10.0, description="Preference for recent articles when a search has an as-of day."
    )
    recency_half_life_days: float = Field(14.0, gt=0, le=3650)
    cache_size: int = Field(
        256, ge=0, le=1_000_000,
        description="Recent searches (per index generation) and extractive answers (per passages) kept in memory; "
        "0: none.",
    )
    generator: str = Field("extractive", description="Default answer generator.")
    answer_passages: int = Field(5, ge=1, le=50, description="Passages a generator reads.")
    max_answer_sentences: int = Field(
        3, ge=1, le=20,
        description="Sentences in an extractive answer; the best one and a sentence it leans on always stay together.",
    )
    min_support: float = Field(
        0.40, ge=0.0, le=1.0, description="Below this sentence score the extractive generator abstains."
    )
    answer_candidates: int = Field(
        8, ge=0, le=1000,
        description="Sentences the extractive generator scores with the embedder: those sharing most of the "
        "question's words, with their neighbours when they lean on each other; 0: every sentence.",
    )
    min_claim_support: float = Field(
        0.65, ge=0.0, le=1.0,
        description="An LLM answer sentence is supported when a passage sentence scores at least this against it.",
    )
    unsupported_sentences: Literal["drop", "flag"] = Field(
        "drop", description="What happens to LLM answer sentences the passages do not support."
    )
    local_model: Path | None = Field(
        None, description="GGUF file for the local generator; default: the packaged SmolLM2-135M-Instruct."
    )
    llm_threads: int | None = Field(None, ge=1, le=512, description="CPU threads for the local LLM; default: all.")
    llm_context: int = Field(4096, ge=512, le=131072, description="Context window of the local LLM, in tokens.")
    llm_max_tokens: int = Field(256, ge=1, le=8192, description="Most tokens an LLM may write per answer.")
    llm_temperature: float = Field(0.0, ge=0.0, le=2.0)
    openai_base_url: str = Field(
        "http://127.0.0.1:8080/v1", description="Base URL of the OpenAI-compatible server (ends in /v1)."
    )
    openai_model: str = Field("default", min_length=1, description="Model name sent to that server.")
    openai_api_key: SecretStr = Field(SecretStr("none"), description="API key for that server, if it needs one.")
    openai_timeout: float = Field(60.0, gt=0, le=3600, description="Seconds to wait for that server.")
    api_keys: SecretStr = Field(
        SecretStr(""),
        description="Comma-separated API keys; when set, writes (and, with auth_reads, reads) need "
        "'Authorization: Bearer <key>'.",
    )
    auth_reads: bool = Field(
        False,
        description="With api_keys set, every endpoint but /health, /ready, the docs and the web page needs a key.",
    )
    cors_origins: str = Field(
        "", description="Comma-separated origins allowed to call the API from a browser ('*': any); empty: no CORS."
    )
    ann_threshold: int = Field(
        150_000, ge=1_000,
        description="From this many chunks on, a commit builds an approximate IVF-SQ8 index instead of the exact "
        "flat one (an index already approximate stays so down to half this many).",
    )
    ann_nlist: int = Field(
        0, ge=0, le=1_000_000, description="Inverted lists of the approximate index; 0: about sqrt(chunks)."
    )
    ann_nprobe: int = Field(
        64, ge=1, le=1_000_000, description="Inverted lists searched per query with the approximate index."
    )
    ann_retrain_growth: float = Field(
        2.0, ge=1.0, le=100.0,
        description="A commit trains the approximate index afresh once the corpus is this many times the size "
        "it was trained on (otherwise it only removes and adds the changed chunks).",
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    max_question_chars: int = Field(2000, ge=1)
    max_document_chars: int = Field(
        2_000_000, ge=1, description="Longest article (cleaned characters) that is stored; longer ones are refused."
    )
    max_request_bytes: int = Field(
        50_000_000, ge=1, description="Largest HTTP request body the API accepts (413 above it)."
    )
    debug_pause_at: Literal["embedded", "written", "renamed", "switched"] | None = Field(
        None, description="For crash tests: every write stops at this step, says so on stderr and waits to be killed."
    )
    write_wait: float = Field(
        30.0, ge=0.0, le=3600,
        description="Seconds a write through the API or the library waits for another writer to finish "
        "(the CLI waits only when given --wait).",
    )

    @model_validator(mode="after")
    def _overlap_below_size(self) -> Settings:
        if self.chunk_overlap >= self.chunk_tokens:
            raise ValueError(
                f"chunk_overlap ({self.chunk_overlap}) must be smaller than chunk_tokens ({self.chunk_tokens})"
            )
        return self
