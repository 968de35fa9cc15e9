"""The shortcuts that make queries cheap give what the long way gives.

* Tokenising: ``rag.lexical.tokenize`` against bm25s's own tokeniser.
* Re-ranking features read from the tokens saved with each generation, against
  tokenising the candidates at query time; an index saved before sentence sizes
  existed is searched the long way and upgraded by its next commit.
* The extractive generator embeds only its candidate sentences, and answers the
  mission question as it does with every sentence embedded.
* Recent searches and answers are remembered per index generation and per passages,
  never served across a change.
* An answer embeds its question once: retrieval's vector is handed on to the generator,
  also when a stream's pieces are produced on different threads; sentences embedded in
  small batches, and the question as a query, score as embedding them together did.
* Queries embed on one thread, and FAISS searches on one (on whichever thread searches,
  leaving the caller's setting as it was); a server embeds batches on one thread too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
import pytest
import torch

from rag.config import Settings
from rag.embedding import Embedder
from rag.generators.base import GeneratorContext
from rag.generators.extractive import ExtractiveGenerator
from rag.lexical import TERMS_SENTENCE_OFFSETS, TERMS_SENTENCES, ChunkTerms, LexicalIndex, _stemmer, tokenize
from rag.pipeline import RagPipeline
from rag.rerank import QueryTerms, features
from rag.retrieval import dense_search
from rag.support import SourceSentence, passage_sentences, question_support, support_matrix
from rag.types import Article
from tests.conftest import LENDERS, MISSION_QUESTION, SEEDS
from tests.test_retrieval_stages import ARTICLES

QUESTIONS = [
    MISSION_QUESTION,
    "Will the Reserve Bank lift interest rates?",
    "Who opened the new bridge?",
    "What did the governor say about inflation?",
    "Xiaomi financial services vice president",
]


def _bm25s_tokens(texts: Sequence[str]) -> list[list[str]]:
    out = bm25s.tokenize(list(texts), stopwords="en", stemmer=_stemmer(), return_ids=False, show_progress=False)
    return [list(t) for t in out]


def _feed(tmp_path: Path) -> Path:
    feed = tmp_path / "news.jsonl"
    feed.write_text("\n".join(json.dumps(a) for a in ARTICLES) + "\n", encoding="utf-8")
    return feed


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> RagPipeline:
    root = tmp_path_factory.mktemp("cheap")
    pipe = RagPipeline(Settings(index_dir=root / "index", chunk_tokens=48, chunk_overlap=12), embedder=embedder)
    pipe.ingest([SEEDS, _feed(root)])
    return pipe


def test_tokenize_gives_the_tokens_bm25s_gives() -> None:
    seed = next(SEEDS.glob("*")).read_text(encoding="utf-8")
    texts = [
        seed, *seed.split(". "), *(a["text"] for a in ARTICLES), *(a["title"] for a in ARTICLES),
        "", "   ", "THE the The", "Ünïcödé café NAÏVE straße İstanbul", "x2 3d 42 4.5 co-operate don't",
        "non\u00a0breaking\u2009thin spaces", "a b c", "Running runners ran; RUNS!",
    ]
    assert tokenize(texts) == _bm25s_tokens(texts)
    assert tokenize(texts[::-1]) == _bm25s_tokens(texts[::-1]), "remembered stems change nothing"


def test_saved_chunk_tokens_are_the_chunks_tokens(pipeline: RagPipeline) -> None:
    snapshot = pipeline.snapshot()
    saved = LexicalIndex.load_terms(snapshot.directory / "bm25")  # type: ignore[operator]
    assert saved is not None
    texts = [c.text for c in snapshot.chunks]
    assert saved.tokens == tokenize(texts)
    assert saved.sentence_sizes == ChunkTerms.of(texts).sentence_sizes
    assert all(sum(sizes) == len(tokens) for sizes, tokens in zip(saved.sentence_sizes, saved.tokens, strict=True))
    assert any(len(sizes) > 1 for sizes in saved.sentence_sizes)


def _features_both_ways(pipeline: RagPipeline, embedder: Embedder) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    snapshot = pipeline.snapshot()
    assert snapshot.sentence_terms() is not None
    rows = list(range(len(snapshot.chunks)))
    out = []
    for question in QUESTIONS:
        terms = QueryTerms.of(snapshot, question)
        vector = embedder.embed_query(question)
        candidates = [(r, 1.0 / (1 + r)) for r in rows]
        saved = features(snapshot, vector, terms, candidates)
        snapshot.derived["sentence_terms"] = None  # as if the generation had saved no sentence sizes
        try:
            tokenised = features(snapshot, vector, terms, candidates)
        finally:
            del snapshot.derived["sentence_terms"]
        out.append((saved, tokenised))
    return out


def test_features_from_saved_tokens_equal_those_from_tokenising(pipeline: RagPipeline, embedder: Embedder) -> None:
    for saved, tokenised in _features_both_ways(pipeline, embedder):
        assert saved.keys() == tokenised.keys()
        for name in saved:
            assert np.allclose(saved[name], tokenised[name], atol=1e-12), name
        assert saved["coverage"].max() > 0 and saved["sentence"].max() > 0


def test_an_index_saved_without_sentence_sizes_is_searched_and_upgraded(tmp_path: Path, embedder: Embedder) -> None:
    pipe = RagPipeline(Settings(index_dir=tmp_path / "index", chunk_tokens=48, chunk_overlap=12), embedder=embedder)
    pipe.ingest([_feed(tmp_path)])
    before = pipe.snapshot()
    expected = [p.chunk_id for p in pipe.search("Will the Reserve Bank lift interest rates?")]
    for name in (TERMS_SENTENCES, TERMS_SENTENCE_OFFSETS):  # what an older version wrote
        (before.directory / "bm25" / name).unlink()  # type: ignore[operator]
    old = RagPipeline(Settings(index_dir=tmp_path / "index", chunk_tokens=48, chunk_overlap=12, cache_size=0),
                      embedder=embedder)
    assert old.snapshot().sentence_terms() is None
    assert [p.chunk_id for p in old.search("Will the Reserve Bank lift interest rates?")] == expected
    old.delete(["garden"])
    after = old.snapshot()
    upgraded = after.sentence_terms()
    assert after.generation != before.generation and upgraded is not None
    assert LexicalIndex.load_terms(after.directory / "bm25").tokens == tokenize(  # type: ignore[operator, union-attr]
        [c.text for c in after.chunks])


def _sentence(i: int, text: str, passage: int = 0) -> SourceSentence:
    return SourceSentence(passage, i, 0, len(text), text, "doc", i * 100, (i - 1) * 100 if i else None)


def test_candidates_are_the_sentences_sharing_most_words_with_their_neighbours(embedder: Embedder) -> None:
    sentences = [
        _sentence(0, "The weather was mild on Tuesday."),
        _sentence(1, "Xiaomi partnered with several lenders in India."),
        _sentence(2, "Some of them were KreditBee and Money View."),  # leans on sentence 1
        _sentence(3, "Shares rose in early trading."),
        _sentence(4, "Lenders in India welcomed the news."),
        _sentence(5, "The stadium was full."),
    ]
    generator = ExtractiveGenerator(GeneratorContext(embedder=embedder, answer_candidates=2))
    assert generator.candidates_for("Which lenders did Xiaomi partner with in India?", sentences) == [1, 2, 4]
    every = ExtractiveGenerator(GeneratorContext(embedder=embedder, answer_candidates=0))
    assert every.candidates_for("Which lenders did Xiaomi partner with?", sentences) == list(range(6))


class CountingEmbedder:
    """The real embedder, counting the sentences the generator asks it to embed."""

    def __init__(self, inner: Embedder):
        self.inner = inner
        self.sentences = 0

    def embed_sentences(self, texts: Sequence[str]) -> np.ndarray:
        self.sentences += len(texts)
        return self.inner.embed_sentences(texts)

    def embed_query(self, text: str) -> np.ndarray:
        return self.inner.embed_query(text)


@pytest.mark.parametrize("question", [MISSION_QUESTION, "Who will be vice president of Xiaomi's financial unit?"])
def test_embedding_only_candidates_answers_as_embedding_every_sentence(
    seed_pipeline: RagPipeline, embedder: Embedder, question: str
) -> None:
    passages = seed_pipeline.search(question)
    answers, embedded = [], []
    for candidates in (0, Settings().answer_candidates):
        counting = CountingEmbedder(embedder)
        context = GeneratorContext(embedder=counting, answer_candidates=candidates)  # type: ignore[arg-type]
        answers.append(ExtractiveGenerator(context).generate(question, passages))
        embedded.append(counting.sentences)
    assert answers[0] == answers[1]
    assert embedded[1] < embedded[0], "fewer sentences embedded"
    if question == MISSION_QUESTION:
        assert all(name in (answers[1].answer or "") for name in LENDERS)


class EncodeLog:
    """Every text the embedder's model is asked to encode, whatever the entry point."""

    def __init__(self, embedder: Embedder, monkeypatch: pytest.MonkeyPatch):
        self.texts: list[str] = []
        encode = embedder._encode

        def logged(texts: Sequence[str], *args: Any, **kwargs: Any) -> np.ndarray:
            self.texts.extend(texts)
            return encode(texts, *args, **kwargs)

        monkeypatch.setattr(embedder, "_encode", logged)


def test_an_answer_embeds_its_question_once(
    seed_pipeline: RagPipeline, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipe = RagPipeline(Settings(index_dir=seed_pipeline.settings.index_dir, cache_size=0), embedder=embedder)
    log = EncodeLog(embedder, monkeypatch)
    answer = pipe.ask(MISSION_QUESTION)
    assert all(name in (answer.answer or "") for name in LENDERS)
    assert log.texts.count(MISSION_QUESTION) == 1, "retrieval's vector is reused by the generator"
    assert len(log.texts) > 1, "the candidate sentences are embedded"
    # Outside an answer the vector is not remembered: a plain query embeds again.
    embedder.embed_query(MISSION_QUESTION)
    assert log.texts.count(MISSION_QUESTION) == 2


def test_a_streamed_answer_embeds_its_question_once_across_threads(
    seed_pipeline: RagPipeline, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipe = RagPipeline(Settings(index_dir=seed_pipeline.settings.index_dir, cache_size=0), embedder=embedder)
    log = EncodeLog(embedder, monkeypatch)
    stream: Iterator[object] = pipe.ask_stream(MISSION_QUESTION)
    pieces = []
    with ThreadPoolExecutor(max_workers=2) as pool:  # each step on whichever thread is free, as a server does
        while (piece := pool.submit(next, stream, None).result()) is not None:
            pieces.append(piece)
    answer = pieces[-1]
    assert all(name in (answer.answer or "") for name in LENDERS)  # type: ignore[attr-defined]
    assert log.texts.count(MISSION_QUESTION) == 1


@pytest.mark.parametrize("question", [MISSION_QUESTION, "When did Xiaomi launch Mi Credit in India?"])
def test_question_support_scores_as_the_joint_embedding(
    seed_pipeline: RagPipeline, embedder: Embedder, question: str
) -> None:
    sentences = [s.text for s in passage_sentences(seed_pipeline.search(question))]
    joint = support_matrix(embedder, [question], sentences)[0]
    alone = question_support(embedder, question, sentences)
    assert np.allclose(alone, joint, atol=0.01), "the same scores, up to the model's rounding"
    assert int(np.argmax(alone)) == int(np.argmax(joint))
    one_by_one = np.stack([embedder.embed_query(s) for s in sentences])
    assert np.all(np.sum(embedder.embed_sentences(sentences) * one_by_one, axis=1) > 0.999)


def test_searches_are_remembered_per_generation(tmp_path: Path, embedder: Embedder) -> None:
    pipe = RagPipeline(Settings(index_dir=tmp_path / "index", chunk_tokens=48, chunk_overlap=12), embedder=embedder)
    pipe.ingest([_feed(tmp_path)])
    question = "Which lighthouse keeper rescued the sailors?"
    first = pipe.search(question)
    assert pipe.search(question) == first and pipe.recent_searches.hits == 1
    new = {"id": "lighthouse", "title": "Lighthouse keeper rescues sailors",
           "text": "The lighthouse keeper rescued three sailors from the storm on Sunday night."}
    _add(pipe, new)
    after = pipe.search(question)
    assert after[0].doc_id == "lighthouse", "a commit is never hidden by a remembered search"


def _add(pipe: RagPipeline, record: dict[str, str]) -> None:
    report = pipe.add([Article(**record)])
    assert not report.problems and (report.added or report.updated)


def test_extractive_answers_are_remembered_for_the_same_passages_only(tmp_path: Path, embedder: Embedder) -> None:
    pipe = RagPipeline(Settings(index_dir=tmp_path / "index"), embedder=embedder)
    original = {"id": "port", "title": "Port reopens",
                "text": "The harbour master said the port would reopen on Monday after the storm."}
    _add(pipe, original)
    question = "When will the port reopen?"
    first = pipe.ask(question)
    assert "Monday" in (first.answer or "")
    second = pipe.ask(question)
    assert second.answer == first.answer and pipe.recent_answers.hits == 1
    # The same id and chunk id, new text: the remembered answer must not be served.
    _add(pipe, original | {"text": "The harbour master said the port would reopen on Thursday after "
                                            "the storm."})
    corrected = pipe.ask(question)
    assert "Thursday" in (corrected.answer or "") and "Monday" not in (corrected.answer or "")
    assert corrected.citations[0].quote in pipe.document("port").text


def test_a_cache_of_size_zero_remembers_nothing(seed_pipeline: RagPipeline, embedder: Embedder) -> None:
    pipe = RagPipeline(Settings(index_dir=seed_pipeline.settings.index_dir, cache_size=0), embedder=embedder)
    for _ in range(2):
        pipe.ask(MISSION_QUESTION)
    assert len(pipe.recent_searches) == len(pipe.recent_answers) == 0
    assert pipe.recent_searches.hits == pipe.recent_answers.hits == 0


def test_queries_embed_on_one_thread_and_batches_on_the_batch_setting() -> None:
    default = torch.get_num_threads()
    embedder = Embedder(threads=None)
    embedder.embed_query("one question")
    assert torch.get_num_threads() == 1
    embedder.embed_passages(["a passage", "another passage"])
    assert torch.get_num_threads() == default
    two = Embedder(threads=1)
    two.embed_passages(["a passage"])
    assert torch.get_num_threads() == 1
    torch.set_num_threads(default)


def test_a_server_embeds_on_one_thread_unless_told_otherwise(tmp_path: Path) -> None:
    from api.app import create_app

    served = create_app(Settings(index_dir=tmp_path / "index"))
    told = create_app(Settings(index_dir=tmp_path / "index", embed_threads=2))
    assert served.state.settings.embed_threads == 1
    assert told.state.settings.embed_threads == 2
    shared = RagPipeline(Settings(index_dir=tmp_path / "index"))
    assert create_app(pipeline=shared).state.settings.embed_threads is None, "a given pipeline is left alone"



class ThreadsSeen:
    """A FAISS index that notes how many threads FAISS would use for each search."""

    def __init__(self, inner: Any):
        self.inner, self.threads = inner, []

    def search(self, *args: Any, **kwargs: Any) -> Any:
        import faiss

        self.threads.append(faiss.omp_get_max_threads())
        return self.inner.search(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_faiss_searches_on_one_thread_on_any_thread_and_leaves_the_setting_as_it_was(
    seed_pipeline: RagPipeline, embedder: Embedder
) -> None:
    import faiss

    snapshot = seed_pipeline.snapshot()
    query = embedder.embed_query(MISSION_QUESTION)
    seen = ThreadsSeen(snapshot.vectors)
    snapshot.vectors = seen

    def search_with(threads: int) -> int:
        faiss.omp_set_num_threads(threads)
        assert dense_search(snapshot, query, 5)
        return int(faiss.omp_get_max_threads())

    try:
        assert search_with(2) == 2, "the caller's setting is put back"
        with ThreadPoolExecutor(max_workers=1) as pool:  # a server's worker thread
            assert pool.submit(search_with, 2).result() == 2
    finally:
        snapshot.vectors = seen.inner
    assert seen.threads == [1, 1]
