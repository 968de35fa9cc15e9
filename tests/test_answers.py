"""Retrieval fusion and filters, the generator registry, and the extractive
generator's answers and refusals over the seed article."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rag.errors import InvalidRequestError, UnknownGeneratorError
from rag.generators.base import GeneratorContext
from rag.generators.registry import available_generators, load_generator
from rag.pipeline import RagPipeline
from rag.retrieval import RetrievalParams, fuse
from rag.types import Answer, SearchFilters
from tests.conftest import LENDERS, MISSION_QUESTION, SEED_ID

OFF_TOPIC = [
    "Who won the 2018 FIFA World Cup?",
    "What is the boiling point of water at sea level?",
    "How many moons does Jupiter have?",
    "What is the recipe for a chocolate cake?",
]


def _assert_exact(answer: Answer, pipeline: RagPipeline) -> None:
    for citation in answer.citations:
        text = pipeline.document(citation.doc_id).text
        assert citation.quote == text[citation.start:citation.end]
        assert citation.title == pipeline.document(citation.doc_id).title
    for passage in answer.passages:
        assert passage.text == pipeline.document(passage.doc_id).text[passage.start:passage.end]


def test_mission_question_names_every_lender_with_exact_citations(seed_pipeline: RagPipeline) -> None:
    answer = seed_pipeline.ask(MISSION_QUESTION)
    assert not answer.abstained and answer.answer
    _assert_exact(answer, seed_pipeline)
    for lender in LENDERS:
        assert lender in answer.answer
        assert any(lender in c.quote and c.doc_id == SEED_ID for c in answer.citations), lender
    # Every citation is marked in the answer text.
    assert all(f"[{c.n}]" in answer.answer for c in answer.citations)


def test_a_one_sentence_answer_keeps_the_sentence_the_list_leans_on(
    make_pipeline: Callable[..., RagPipeline], seed_index: Path
) -> None:
    pipeline = make_pipeline(index_dir=seed_index, max_answer_sentences=1)
    answer = pipeline.ask(MISSION_QUESTION)
    assert answer.answer and all(lender in answer.answer for lender in LENDERS)
    assert [c.quote.split()[:3] for c in answer.citations] == [["Only", "happens", "to"], ["Some", "of", "them"]]


@pytest.mark.parametrize(
    ("question", "fact"),
    [
        ("Who will be the vice president of Xiaomi's financial services unit?", "Zhao Weixing"),
        ("Which bank did Zhao Weixing come from?", "XW Bank"),
        ("When was Xiaomi founded?", "2010"),
        ("What is the name of Xiaomi's online credit system?", "Xiaomi Mi Credit"),
    ],
)
def test_factual_questions_are_answered_and_cited(seed_pipeline: RagPipeline, question: str, fact: str) -> None:
    answer = seed_pipeline.ask(question)
    assert answer.answer and fact in answer.answer
    assert any(fact in c.quote for c in answer.citations)
    _assert_exact(answer, seed_pipeline)


@pytest.mark.parametrize("question", OFF_TOPIC)
def test_questions_the_corpus_cannot_answer_are_refused(seed_pipeline: RagPipeline, question: str) -> None:
    answer = seed_pipeline.ask(question)
    assert answer.abstained and answer.answer is None
    assert answer.citations == ()
    assert answer.reason and "does not appear to answer" in answer.reason
    assert answer.passages, "the passages that were considered are still returned"


def test_streaming_yields_text_then_the_same_answer(seed_pipeline: RagPipeline) -> None:
    pieces = list(seed_pipeline.ask_stream(MISSION_QUESTION))
    final = pieces[-1]
    assert isinstance(final, Answer)
    assert "".join(p for p in pieces[:-1] if isinstance(p, str)) == final.answer
    assert final.citations == seed_pipeline.ask(MISSION_QUESTION).citations


def test_reciprocal_rank_fusion_and_weighted_fusion() -> None:
    dense = [(1, 0.9), (2, 0.8), (3, 0.1)]
    lexical = [(3, 12.0), (1, 4.0)]
    rrf = fuse(dense, lexical, RetrievalParams(fusion="rrf", rrf_k=60))
    assert [row for row, _ in rrf] == [1, 3, 2]
    assert rrf[0][1] == pytest.approx(1 / 61 + 1 / 62)
    weighted = fuse(dense, lexical, RetrievalParams(fusion="weighted", dense_weight=0.5))
    scores = dict(weighted)
    assert scores[1] == pytest.approx(0.5 * 1.0 + 0.5 * 0.0)
    assert scores[3] == pytest.approx(0.5 * 0.0 + 0.5 * 1.0)
    assert scores[2] == pytest.approx(0.5 * (0.8 - 0.1) / 0.8)
    assert fuse(dense, lexical, RetrievalParams(fusion="dense")) == dense
    assert fuse(dense, lexical, RetrievalParams(fusion="bm25")) == lexical


def test_search_filters_on_source_and_date(tmp_path: Path, make_pipeline: Callable[..., RagPipeline]) -> None:
    corpus = tmp_path / "news.jsonl"
    corpus.write_text(
        "\n".join([
            '{"id": "old", "title": "Storm", "text": "A storm hit the coast and closed the port.",'
            ' "source": "Coast Times", "published_at": "2020-01-05"}',
            '{"id": "new", "title": "Storm again", "text": "Another storm hit the coast and closed the port.",'
            ' "source": "Daily Wire", "published_at": "2023-06-01"}',
        ]) + "\n",
        encoding="utf-8",
    )
    pipeline = make_pipeline()
    pipeline.ingest([corpus])
    assert {p.doc_id for p in pipeline.search("storm port", k=5)} == {"old", "new"}
    assert [p.doc_id for p in pipeline.search("storm port", filters=SearchFilters(sources=("coast times",)))] \
        == ["old"]
    assert [p.doc_id for p in pipeline.search("storm", filters=SearchFilters(published_after="2021-01-01"))] \
        == ["new"]
    assert [p.doc_id for p in pipeline.search("storm", filters=SearchFilters(published_before="2020-12-31"))] \
        == ["old"]
    assert pipeline.search("storm", filters=SearchFilters(sources=("Nobody",))) == []
    top = pipeline.search("storm port", k=1)[0]
    assert (top.source, top.published_at) in {("Coast Times", "2020-01-05"), ("Daily Wire", "2023-06-01")}


def test_bad_requests_are_refused(seed_pipeline: RagPipeline) -> None:
    with pytest.raises(InvalidRequestError, match="empty"):
        seed_pipeline.ask("   ")
    with pytest.raises(InvalidRequestError, match="k must be"):
        seed_pipeline.search("Xiaomi", k=0)
    with pytest.raises(InvalidRequestError, match="limit"):
        seed_pipeline.ask("x" * 5000)


def test_registry_lists_builtins_and_names_them_on_unknown(seed_pipeline: RagPipeline) -> None:
    assert {"extractive", "scripted"} <= set(available_generators())
    with pytest.raises(UnknownGeneratorError, match=r"available: .*extractive.*scripted"):
        seed_pipeline.ask(MISSION_QUESTION, generator="no-such-generator")


def test_scripted_generator_cites_exact_first_sentences(seed_pipeline: RagPipeline) -> None:
    answer = seed_pipeline.ask(MISSION_QUESTION, generator="scripted")
    assert answer.generator == "scripted" and len(answer.citations) == 1
    _assert_exact(answer, seed_pipeline)
    assert answer.answer == f"{answer.citations[0].quote} [1]"


@pytest.fixture
def plugin_on_path(tmp_path: Path) -> Iterator[None]:
    """A third-party generator installed the way pip would: a module plus dist-info entry points."""
    (tmp_path / "echo_plugin.py").write_text(textwrap.dedent('''
        from rag.generators.base import BaseGenerator, cite
        from rag.types import GeneratedAnswer

        class EchoGenerator(BaseGenerator):
            name = "echo"
            def __init__(self, context):
                self.context = context
            def generate(self, question, passages):
                c = cite(1, passages[0], 0, len(passages[0].text))
                return GeneratedAnswer(f"echo: {question} [1]", (c,))
    '''), encoding="utf-8")
    dist = tmp_path / "echo_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-plugin\nVersion: 1.0\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text("[rag.generators]\necho = echo_plugin:EchoGenerator\n",
                                           encoding="utf-8")
    sys.path.insert(0, str(tmp_path))
    yield
    sys.path.remove(str(tmp_path))
    sys.modules.pop("echo_plugin", None)


@pytest.mark.usefixtures("plugin_on_path")
def test_third_party_generators_are_found_through_entry_points(seed_pipeline: RagPipeline) -> None:
    assert "echo" in available_generators()
    generator = load_generator("echo", GeneratorContext(embedder=seed_pipeline.embedder))
    passages = seed_pipeline.search("Xiaomi", k=1)
    result = generator.generate("hi", passages)
    assert result.answer == "echo: hi [1]" and result.citations[0].quote == passages[0].text
