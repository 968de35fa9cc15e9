"""The stages of retrieval after the first-stage search: questions that name their
sources (``rag.decompose``), the model-free re-ranking (``rag.rerank``), leaders,
fusion and the as-of filter (``rag.retrieval``), near-duplicate folding
(``rag.dedup``), and the extractive generator keeping a sentence with the one it
leans on across overlapping passages.

One small real index (the packaged embedding model, real FAISS and BM25) is built
once for the module from the articles below."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import date

import numpy as np
import pytest

from rag.config import Settings
from rag.decompose import (
    SubQuery,
    day_mask,
    named_day,
    source_aliases,
    source_mask,
    sub_queries,
)
from rag.dedup import collapse, signature, similarity
from rag.embedding import Embedder
from rag.generators.base import GeneratorContext
from rag.generators.extractive import ExtractiveGenerator
from rag.lexical import tokenize
from rag.pipeline import RagPipeline
from rag.rerank import QueryTerms, RerankWeights, distinct_leads, diversify, features, rerank
from rag.retrieval import allowed_rows, lead_with, part_text, reciprocal_rank
from rag.retrieval import search as retrieve
from rag.store import IndexSnapshot
from rag.support import passage_sentences
from rag.types import Passage, SearchFilters

WIRE = (
    "Harbour workers in Port Kembla walked off the job on Monday after talks over pay broke down. "
    "The union said its members had been offered a raise of two per cent a year, well below inflation. "
    "Shipping companies warned that container ships would queue outside the port within days. "
    "The state government urged both sides to return to the table and avoid a long dispute. "
    "Farmers said grain exports due to leave this month could be delayed by the strike. "
    "A spokesman for the port operator said contingency plans were in place for urgent cargo. "
    "Talks are expected to resume on Thursday with an independent mediator in the room. "
    "The last strike at the port, in 2019, lasted eleven days and cost exporters millions."
)

ARTICLES = [
    {"id": "age-rba", "title": "Reserve Bank weighs interest rate decision", "source": "The Age",
     "published_at": "2023-10-31",
     "text": "The Reserve Bank of Australia is weighing another lift in interest rates as inflation proves "
             "stubborn. Economists expect the cash rate to rise by a quarter of a point next week. "
             "Mortgage holders would pay about one hundred dollars more each month."},
    {"id": "age-rba-dec", "title": "Reserve Bank interest rate decision", "source": "The Age",
     "published_at": "2023-12-05",
     "text": "The Reserve Bank of Australia left interest rates on hold in December after last month's rise. "
             "The governor said inflation was easing but remained too high. "
             "Borrowers were relieved that the cash rate stayed at 4.35 per cent."},
    {"id": "guardian-rba", "title": "Interest rates set to rise", "source": "The Guardian",
     "published_at": "2023-10-31",
     "text": "Interest rates are set to rise next week, the Reserve Bank of Australia signalled. "
             "The cash rate decision will hurt mortgage holders already under pressure."},
    {"id": "tc-gpts", "title": "OpenAI launches custom GPTs", "source": "TechCrunch",
     "published_at": "2023-11-06",
     "text": "OpenAI announced custom GPTs at its first developer conference, DevDay, in San Francisco. "
             "Anyone can build a tailored version of ChatGPT without writing code. "
             "A GPT Store to share and sell these chatbots will open later this month."},
    {"id": "cnbc-gpts", "title": "OpenAI DevDay brings GPT-4 Turbo", "source": "Cnbc | World Business News Leader",
     "published_at": "2023-11-07",
     "text": "At DevDay, OpenAI chief Sam Altman unveiled GPT-4 Turbo and custom GPTs for ChatGPT users. "
             "Investors see the developer platform as a way to lock in businesses."},
    {"id": "wired-drones", "title": "Delivery drones take off in Texas", "source": "Wired",
     "published_at": "2023-10-20",
     "text": "Delivery drones now drop groceries at homes in suburban Texas. "
             "Neighbours complain about the buzzing noise of the propellers."},
    {"id": "fox-flu", "title": "Flu shots recommended before winter", "source": "FOX News - Health",
     "published_at": "2023-10-15",
     "text": "Doctors urge adults to get a flu shot before the winter season. "
             "The vaccine takes about two weeks to protect against the virus."},
    {"id": "garden", "title": "Growing tomatoes at home",  # neither dated nor sourced
     "text": "Tomatoes need six hours of sun a day and regular watering. "
             "Gardeners should stake the plants so that the fruit stays off the ground."},
    {"id": "prox-one", "title": "Local round-up", "source": "Town Crier", "published_at": "2023-10-01",
     "text": "The mayor opened the new bridge on Friday. Traffic was light all weekend."},
    {"id": "prox-spread", "title": "Local round-up", "source": "Town Crier", "published_at": "2023-10-02",
     "text": "The mayor spoke to residents on Friday. A new bridge was opened later. Traffic was light."},
    # One wire story twice: the later copy has the smaller id, so only the date can pick the earlier one.
    {"id": "strike-z", "title": "Port workers strike over pay", "source": "Reuters",
     "published_at": "2023-09-01", "text": WIRE},
    {"id": "strike-a", "title": "Port workers strike over pay", "source": "Yahoo News",
     "published_at": "2023-09-03T08:00:00Z", "text": WIRE},
]
SOURCES = {a["id"]: a.get("source") for a in ARTICLES}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> RagPipeline:
    root = tmp_path_factory.mktemp("stages")
    feed = root / "news.jsonl"
    feed.write_text("\n".join(json.dumps(a) for a in ARTICLES) + "\n", encoding="utf-8")
    # Small chunks, so that the wire story has several.
    pipe = RagPipeline(Settings(index_dir=root / "index", chunk_tokens=48, chunk_overlap=12), embedder=embedder)
    report = pipe.ingest([feed])
    assert not report.problems and sorted(report.added) == sorted(SOURCES)
    return pipe


@pytest.fixture(scope="module")
def snapshot(pipeline: RagPipeline) -> IndexSnapshot:
    return pipeline.snapshot()


def _rows(snapshot: IndexSnapshot, doc_id: str) -> list[int]:
    return snapshot.rows_by_doc[doc_id]


def _docs(snapshot: IndexSnapshot, mask: np.ndarray) -> set[str]:
    return {c.doc_id for c, ok in zip(snapshot.chunks, mask, strict=True) if ok}


# -- rag.decompose: days -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "day"),
    [
        ("Did it happen on October 31, 2023?", date(2023, 10, 31)),
        ("on october 31st 2023", date(2023, 10, 31)),
        ("Reported on 31st October 2023 by the paper", date(2023, 10, 31)),
        ("31 October, 2023", date(2023, 10, 31)),
        ("published 2023-10-31 in the morning", date(2023, 10, 31)),
        ("Between 5 November 2023 and October 31, 2023", date(2023, 11, 5)),
        ("from October 31, 2023 to 2023-11-05", date(2023, 10, 31)),
        ("on 2023-11-05, not on October 31, 2023", date(2023, 11, 5)),
        ("on February 30, 2023", None),
        ("on February 30, 2023 or March 1, 2023", date(2023, 3, 1)),
        ("on 2023-13-01", None),
        ("Did the Reserve Bank raise rates?", None),
        ("in October 2023", None),
        ("", None),
    ],
)
def test_named_day(text: str, day: date | None) -> None:
    assert named_day(text) == day


# -- rag.decompose: sources -----------------------------------------------------------------------


def test_source_aliases_add_the_name_before_a_section_suffix() -> None:
    aliases = source_aliases({"FOX News - Health", "Cnbc | World Business News Leader", "Wired", "The Age", "AP"})
    assert aliases["FOX News - Health"] == {"FOX News - Health"}
    assert aliases["FOX News"] == {"FOX News - Health"}
    assert aliases["Cnbc"] == {"Cnbc | World Business News Leader"}
    assert aliases["Cnbc | World Business News Leader"] == {"Cnbc | World Business News Leader"}
    assert aliases["Wired"] == {"Wired"} and aliases["The Age"] == {"The Age"}
    assert "AP" not in aliases, "names shorter than three characters would match too much"
    assert set(aliases) == {"FOX News - Health", "FOX News", "Cnbc | World Business News Leader", "Cnbc",
                            "Wired", "The Age"}


def test_a_short_name_stands_for_every_section_of_its_publication() -> None:
    aliases = source_aliases({"FOX News - Health", "FOX News - Politics", "FOX News"})
    assert aliases["FOX News"] == {"FOX News - Health", "FOX News - Politics", "FOX News"}
    assert aliases["FOX News - Politics"] == {"FOX News - Politics"}


def test_sub_queries_split_a_question_at_each_named_source(snapshot: IndexSnapshot) -> None:
    question = ("Did TechCrunch report that OpenAI launched custom GPTs before The Age reported on the "
                "Reserve Bank, or did Wired report on delivery drones on October 20, 2023 first?")
    subs = sub_queries(snapshot, question)
    assert subs == [
        SubQuery("Did TechCrunch report that OpenAI launched custom GPTs before", ("TechCrunch",), None, "TechCrunch"),
        SubQuery("report that OpenAI launched custom GPTs before The Age reported on the Reserve Bank, or did",
                 ("The Age",), None, "The Age"),
        SubQuery("reported on the Reserve Bank, or did Wired report on delivery drones on October 20, 2023 first",
                 ("Wired",), date(2023, 10, 20), "Wired"),
    ]
    assert [s.sources for s in subs] == [("TechCrunch",), ("The Age",), ("Wired",)]


def test_a_day_is_attached_to_the_parts_that_name_it(snapshot: IndexSnapshot) -> None:
    question = "Did The Age report on interest rates on October 31, 2023, before TechCrunch reported on GPTs?"
    first, second = sub_queries(snapshot, question)
    assert first == SubQuery("Did The Age report on interest rates on October 31, 2023, before", ("The Age",),
                             date(2023, 10, 31), "The Age")
    # The second part runs from the end of the first mention, so it names the same day.
    assert second.sources == ("TechCrunch",) and second.day == date(2023, 10, 31)
    assert second.text == "report on interest rates on October 31, 2023, before TechCrunch reported on GPTs"


def test_mentions_are_whole_words_with_the_same_capitalisation(snapshot: IndexSnapshot) -> None:
    question = "In the age of AI, are wired headphones and The Ageing population covered by TechCrunch?"
    assert sub_queries(snapshot, question) == [
        SubQuery("In the age of AI, are wired headphones and The Ageing population covered by TechCrunch",
                 ("TechCrunch",), None, "TechCrunch"),
    ]
    assert sub_queries(snapshot, "What did WIRED and THE AGE say about drones?") == []


def test_a_section_suffix_is_optional_in_a_mention(snapshot: IndexSnapshot) -> None:
    assert sub_queries(snapshot, "What did FOX News say about flu shots?") == [
        SubQuery("What did FOX News say about flu shots", ("FOX News - Health",), None, "FOX News"),
    ]
    assert [s.sources for s in sub_queries(snapshot, "Did FOX News - Health or Cnbc cover it?")] == [
        ("FOX News - Health",), ("Cnbc | World Business News Leader",),
    ]


def test_a_question_naming_no_source_has_no_sub_queries(snapshot: IndexSnapshot) -> None:
    assert sub_queries(snapshot, "Did the Reserve Bank raise interest rates on October 31, 2023?") == []
    assert sub_queries(snapshot, "Which lenders did Xiaomi partner with?") == []


def test_whitespace_in_the_question_does_not_hide_a_source(snapshot: IndexSnapshot) -> None:
    subs = sub_queries(snapshot, "Did  The\nAge   report on rates?")
    assert [s.sources for s in subs] == [("The Age",)]
    assert subs[0].text == "Did The Age report on rates"


def test_source_and_day_masks_cover_the_rows_of_the_right_articles(snapshot: IndexSnapshot) -> None:
    age = source_mask(snapshot, ["The Age"])
    assert age.dtype == bool and age.shape == (len(snapshot.chunks),)
    assert _docs(snapshot, age) == {"age-rba", "age-rba-dec"}
    assert _docs(snapshot, source_mask(snapshot, ["The Age", "Wired"])) == {"age-rba", "age-rba-dec", "wired-drones"}
    assert not source_mask(snapshot, ["Nobody"]).any()
    assert not source_mask(snapshot, ["the age"]).any(), "source names are matched exactly"
    # Every chunk of a multi-chunk article is in the mask.
    assert age.sum() == len(_rows(snapshot, "age-rba")) + len(_rows(snapshot, "age-rba-dec"))

    on_31 = {"age-rba", "guardian-rba"}
    assert _docs(snapshot, day_mask(snapshot, date(2023, 10, 31))) == on_31
    assert _docs(snapshot, day_mask(snapshot, date(2023, 11, 1))) == on_31, "a day later is within the slack"
    assert _docs(snapshot, day_mask(snapshot, date(2023, 10, 30))) == on_31, "a day earlier too"
    assert _docs(snapshot, day_mask(snapshot, date(2023, 11, 2))) == set()
    # Timestamps count by their day; undated articles are never on a day.
    assert _docs(snapshot, day_mask(snapshot, date(2023, 9, 3))) == {"strike-a"}
    assert _docs(snapshot, day_mask(snapshot, date(2023, 9, 2))) == {"strike-z", "strike-a"}
    assert _docs(snapshot, day_mask(snapshot, date(2023, 11, 1), slack_days=0)) == set()


# -- rag.rerank ----------------------------------------------------------------------------------


def test_diversify_lets_at_most_per_doc_chunks_of_an_article_into_the_top_k(snapshot: IndexSnapshot) -> None:
    s0, s1, s2, s3 = _rows(snapshot, "strike-z")
    (age,) = _rows(snapshot, "age-rba")
    (fox,) = _rows(snapshot, "fox-flu")
    ranked = [(s0, 0.9), (s1, 0.8), (s2, 0.7), (age, 0.6), (s3, 0.5), (fox, 0.4)]
    assert diversify(snapshot, ranked, per_doc=1, k=3) == [
        (s0, 0.9), (age, 0.6), (fox, 0.4), (s1, 0.8), (s2, 0.7), (s3, 0.5),
    ]
    # Once the top k are full, everything else keeps its order after them.
    assert diversify(snapshot, ranked, per_doc=2, k=3) == [
        (s0, 0.9), (s1, 0.8), (age, 0.6), (s2, 0.7), (s3, 0.5), (fox, 0.4),
    ]
    assert diversify(snapshot, ranked, per_doc=0, k=3) == ranked
    assert diversify(snapshot, ranked, per_doc=5, k=6) == ranked
    assert diversify(snapshot, [], per_doc=1, k=3) == []


def test_distinct_leads_are_the_best_chunk_of_each_of_the_first_articles(snapshot: IndexSnapshot) -> None:
    s0, s1, s2, _ = _rows(snapshot, "strike-z")
    (age,) = _rows(snapshot, "age-rba")
    (fox,) = _rows(snapshot, "fox-flu")
    ranked = [(s0, 0.9), (s1, 0.8), (s2, 0.7), (age, 0.6), (fox, 0.5)]
    assert distinct_leads(snapshot, ranked, 2) == [s0, age]
    assert distinct_leads(snapshot, ranked, 3) == [s0, age, fox]
    assert distinct_leads(snapshot, ranked, 9) == [s0, age, fox], "no more than there are articles"
    assert distinct_leads(snapshot, ranked, 0) == [] and distinct_leads(snapshot, [], 2) == []
    # Moved to the top, the second article's best chunk comes before the first one's second chunk.
    assert [row for row, _ in lead_with(ranked, distinct_leads(snapshot, ranked, 2))] == [s0, age, s1, s2, fox]


def test_query_terms_weights_sum_to_one_and_ignored_words_are_left_out(snapshot: IndexSnapshot) -> None:
    query = "What did The Age report about interest rates and the mayor's bridge?"
    terms = QueryTerms.of(snapshot, query)
    assert terms.terms == tuple(dict.fromkeys(tokenize([query])[0]))
    assert "age" in terms.terms
    assert terms.weights.shape == (len(terms.terms),)
    assert terms.weights.sum() == pytest.approx(1.0)
    assert (terms.weights > 0).all()
    # A rarer term weighs more: "bridge" is in two chunks, "interest" in three.
    w = dict(zip(terms.terms, terms.weights, strict=True))
    assert w["bridg"] > w["interest"]

    without = QueryTerms.of(snapshot, query, ignore=["The Age"])
    assert "age" not in without.terms
    assert without.terms == tuple(t for t in terms.terms if t != "age")
    assert without.weights.sum() == pytest.approx(1.0)

    empty = QueryTerms.of(snapshot, "The Age?", ignore=["The Age"])
    assert empty.terms == () and len(empty.weights) == 0


def test_coverage_and_sentence_features(snapshot: IndexSnapshot) -> None:
    (one,) = _rows(snapshot, "prox-one")  # "The mayor opened the new bridge on Friday."
    (spread,) = _rows(snapshot, "prox-spread")  # mayor and bridge in different sentences
    (garden,) = _rows(snapshot, "garden")
    terms = QueryTerms.of(snapshot, "mayor bridge")
    f = features(snapshot, None, terms, [(one, 1.0), (spread, 0.5), (garden, 0.25)])
    assert f["coverage"][0] == pytest.approx(1.0)
    assert f["coverage"][1] == pytest.approx(1.0)
    assert f["coverage"][2] == pytest.approx(0.0)
    assert f["sentence"][0] == pytest.approx(1.0)
    assert f["sentence"][1] < f["sentence"][0]
    assert f["sentence"][1] == pytest.approx(max(terms.weights))
    assert f["fused"].tolist() == pytest.approx([1.0, 0.5, 0.25])
    assert f["dense"].tolist() == [0.0, 0.0, 0.0], "no query vector, no dense feature"
    assert f["recency"].tolist() == [0.0, 0.0, 0.0], "no as-of day, no recency"


def test_title_words_count_for_coverage_but_not_for_the_sentence_feature(snapshot: IndexSnapshot) -> None:
    (one,) = _rows(snapshot, "prox-one")  # titled "Local round-up"
    terms = QueryTerms.of(snapshot, "local mayor")
    f = features(snapshot, None, terms, [(one, 1.0)])
    assert f["coverage"][0] == pytest.approx(1.0)
    assert f["sentence"][0] < 1.0


def test_dense_feature_is_the_cosine_with_the_stored_vector(snapshot: IndexSnapshot, embedder: Embedder) -> None:
    (one,) = _rows(snapshot, "prox-one")
    vector = embedder.embed_query("mayor opens bridge")
    f = features(snapshot, vector, QueryTerms.of(snapshot, "mayor"), [(one, 1.0)])
    stored = snapshot.vectors.reconstruct(int(snapshot.faiss_ids[one]))
    assert f["dense"][0] == pytest.approx(float(stored @ vector), abs=1e-5)
    assert 0.3 < f["dense"][0] <= 1.0


def test_recency_halves_every_half_life(snapshot: IndexSnapshot) -> None:
    (age,) = _rows(snapshot, "age-rba")  # 2023-10-31
    (garden,) = _rows(snapshot, "garden")  # undated
    strike_a = _rows(snapshot, "strike-a")[0]  # 2023-09-03T08:00:00Z
    terms = QueryTerms.of(snapshot, "rates")
    candidates = [(age, 1.0), (garden, 1.0), (strike_a, 1.0)]

    def recency(as_of: date | None) -> list[float]:
        return features(snapshot, None, terms, candidates, as_of, half_life_days=14.0)["recency"].tolist()

    assert recency(date(2023, 10, 31))[0] == pytest.approx(1.0)
    assert recency(date(2023, 11, 14))[0] == pytest.approx(0.5)
    assert recency(date(2023, 11, 28))[0] == pytest.approx(0.25)
    assert recency(date(2023, 11, 14))[1] == 0.0, "an undated article gets no recency"
    assert recency(date(2023, 9, 17))[2] == pytest.approx(0.5), "a timestamp counts by its day"
    assert recency(date(2023, 10, 1))[0] == pytest.approx(1.0), "a later article is not older than the day"
    assert recency(None) == [0.0, 0.0, 0.0]


def test_rerank_reorders_the_head_and_keeps_the_tail_after_it(snapshot: IndexSnapshot) -> None:
    (one,) = _rows(snapshot, "prox-one")
    (spread,) = _rows(snapshot, "prox-spread")
    (garden,) = _rows(snapshot, "garden")
    (fox,) = _rows(snapshot, "fox-flu")
    terms = QueryTerms.of(snapshot, "mayor bridge")
    weights = RerankWeights()
    # The chunk with both terms in one sentence overtakes a slightly better fused one.
    head = rerank(snapshot, None, terms, [(spread, 1.0), (one, 0.95)], 2, weights)
    assert [row for row, _ in head] == [one, spread]
    assert head[0][1] > head[1][1]

    # prox-one would win a re-ranking, but it is below the depth: it stays after every re-ranked row.
    fused = [(garden, 1.0), (fox, 0.9), (one, 0.8), (spread, 0.7)]
    out = rerank(snapshot, None, terms, fused, 2, weights)
    assert sorted(row for row, _ in out[:2]) == sorted([garden, fox])
    assert [row for row, _ in out[2:]] == [one, spread]
    scores = [score for _, score in out]
    assert scores == sorted(scores, reverse=True)
    assert max(scores[2:]) < min(scores[:2])

    assert rerank(snapshot, None, terms, fused, 0, weights) == fused
    assert rerank(snapshot, None, terms, [], 5, weights) == []


def test_recency_lifts_the_newer_of_two_equal_candidates(snapshot: IndexSnapshot) -> None:
    (z,) = _rows(snapshot, "strike-z")[:1]
    (a,) = _rows(snapshot, "strike-a")[:1]  # the same text, two days newer
    terms = QueryTerms.of(snapshot, "harbour workers")
    fused = [(z, 1.0), (a, 1.0)]
    as_of = date(2023, 9, 10)
    assert [row for row, _ in rerank(snapshot, None, terms, fused, 2, RerankWeights(), as_of)] == [a, z]
    assert [row for row, _ in rerank(snapshot, None, terms, fused, 2, RerankWeights(recency=0.0), as_of)] \
        == sorted([a, z]), "equal scores fall back to row order"


# -- rag.retrieval: list operations and filters -------------------------------------------------


def test_lead_with_moves_the_leaders_to_the_top_in_ranked_order() -> None:
    ranked = [(1, 0.9), (2, 0.8), (3, 0.7), (4, 0.6)]
    led = lead_with(ranked, [4, 2])
    assert [row for row, _ in led] == [2, 4, 1, 3]
    assert led[1][1] > 0.9 and led[0][1] > led[1][1], "leaders score above the best of the list, in order"
    assert led[2:] == [(1, 0.9), (3, 0.7)]
    assert lead_with(ranked, []) == ranked
    assert lead_with(ranked, [99]) == ranked, "a leader that is not ranked changes nothing"
    assert [row for row, _ in lead_with(ranked, [3, 99])] == [3, 1, 2, 4]


def test_reciprocal_rank_fusion_of_several_lists() -> None:
    fused = reciprocal_rank([[(1, 5.0), (2, 4.0)], [(2, 0.3), (3, 0.2)], [(3, 9.0)]], rrf_k=60)
    assert [row for row, _ in fused] == [2, 3, 1]
    scores = dict(fused)
    assert scores[2] == pytest.approx(1 / 62 + 1 / 61)
    assert scores[3] == pytest.approx(1 / 62 + 1 / 61)
    assert scores[1] == pytest.approx(1 / 61)
    # Scores of the input lists do not matter, only ranks; ties go to the smaller row.
    assert reciprocal_rank([[(5, 100.0)], [(4, 0.001)]], rrf_k=1) == [(4, 0.5), (5, 0.5)]
    assert reciprocal_rank([], rrf_k=60) == [] and reciprocal_rank([[], []], rrf_k=60) == []


def test_allowed_rows_as_of_leaves_out_later_articles_and_keeps_undated_ones(snapshot: IndexSnapshot) -> None:
    mask = allowed_rows(snapshot, SearchFilters(as_of="2023-11-01"))
    assert mask.shape == (len(snapshot.chunks),)
    assert _docs(snapshot, ~mask) == {"age-rba-dec", "tc-gpts", "cnbc-gpts"}
    assert "garden" in _docs(snapshot, mask), "an undated article is kept"
    assert _docs(snapshot, allowed_rows(snapshot, SearchFilters(as_of="2023-10-31"))) >= {"age-rba", "guardian-rba"}, \
        "an article of the as-of day itself is kept"
    # A timestamp counts by its day.
    assert "strike-a" in _docs(snapshot, allowed_rows(snapshot, SearchFilters(as_of="2023-09-03")))
    assert "strike-a" not in _docs(snapshot, allowed_rows(snapshot, SearchFilters(as_of="2023-09-02")))
    # Unlike published_before, which drops undated articles.
    assert "garden" not in _docs(snapshot, allowed_rows(snapshot, SearchFilters(published_before="2023-11-01")))


# -- rag.retrieval: end to end --------------------------------------------------------------------


@pytest.mark.parametrize(
    "question",
    [
        "Did The Age report that the Reserve Bank would lift interest rates before TechCrunch reported that "
        "OpenAI launched custom GPTs?",
        "Did TechCrunch report that OpenAI launched custom GPTs after The Age reported on interest rates?",
        "Was the cash rate story in The Age published before TechCrunch covered DevDay?",
    ],
)
def test_a_question_naming_two_sources_gets_a_chunk_of_each_in_the_top_two(
    pipeline: RagPipeline, question: str
) -> None:
    passages = pipeline.search(question, k=5)
    assert {p.source for p in passages[:2]} == {"The Age", "TechCrunch"}
    for passage in passages:
        assert passage.text == pipeline.document(passage.doc_id).text[passage.start:passage.end]


def test_a_named_day_picks_that_days_article_of_the_source(pipeline: RagPipeline) -> None:
    for day, expected in (("October 31, 2023", "age-rba"), ("December 5, 2023", "age-rba-dec")):
        question = (f"Did The Age report on the Reserve Bank interest rate decision on {day}, "
                    "before TechCrunch reported on custom GPTs?")
        top = pipeline.search(question, k=5)[:2]
        assert {p.doc_id for p in top} == {expected, "tc-gpts"}, day


def test_a_named_source_leads_even_when_another_source_matches_better(pipeline: RagPipeline) -> None:
    passages = pipeline.search("Did Wired report on custom GPTs at DevDay?", k=5)
    assert passages[0].doc_id == "wired-drones"
    assert {"tc-gpts", "cnbc-gpts"} <= {p.doc_id for p in passages[1:]}


def test_passage_scores_descend_when_a_named_source_leads(pipeline: RagPipeline) -> None:
    scores = [p.score for p in pipeline.search("Did Wired report on custom GPTs at DevDay?", k=5)]
    assert scores == sorted(scores, reverse=True)


def test_only_the_words_of_a_mention_are_ignored_when_re_ranking(
    pipeline: RagPipeline, snapshot: IndexSnapshot, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rag.retrieval

    seen: list[tuple[str, ...]] = []
    original = QueryTerms.of

    def spy(snap: IndexSnapshot, query: str, ignore: Sequence[str] = ()) -> QueryTerms:
        terms = original(snap, query, ignore)
        seen.append(terms.terms)
        return terms

    monkeypatch.setattr(rag.retrieval.QueryTerms, "of", staticmethod(spy))
    retrieve(snapshot, pipeline.embedder.embed_query, "What did FOX News report about health risks?", 3,
             pipeline.retrieval_params)
    assert seen and all("health" in terms for terms in seen), seen


def test_a_part_with_few_words_of_its_own_asks_the_whole_question() -> None:
    question = "Did the Reserve Bank leave interest rates on hold in December, according to The Guardian and The Age?"
    short = SubQuery("and The Age", ("The Age",), None, "The Age")
    assert part_text(short, question, min_terms=3) == question
    assert part_text(short, question, min_terms=0) == "and The Age", "0 keeps every part as it is"
    long = SubQuery("Did the Reserve Bank leave interest rates on hold in December, according to The Guardian",
                    ("The Guardian",), None, "The Guardian")
    assert part_text(long, question, min_terms=3) == long.text
    assert part_text(long, question, min_terms=99) == question


def test_a_source_listed_at_the_end_of_a_question_is_searched_with_the_whole_question(
    pipeline: RagPipeline, snapshot: IndexSnapshot
) -> None:
    # The Age's part is "and The Age": alone it cannot tell the October article from December's.
    question = "Did the Reserve Bank leave interest rates on hold in December, according to The Guardian and The Age?"
    passages = retrieve(snapshot, pipeline.embedder.embed_query, question, 3, pipeline.retrieval_params)
    assert passages[0].doc_id == "age-rba-dec"
    assert {p.doc_id for p in passages[:2]} == {"age-rba-dec", "guardian-rba"}


def test_the_second_article_comes_before_more_chunks_of_the_first(
    pipeline: RagPipeline, snapshot: IndexSnapshot
) -> None:
    question = "According to Reuters, how long did the last port strike last and what did farmers say?"
    params = pipeline.retrieval_params
    off = retrieve(snapshot, pipeline.embedder.embed_query, question, 4, replace(params, distinct_articles=0))
    assert len({p.doc_id for p in off[:2]}) == 1, "without the stage, one article holds the top two"
    passages = retrieve(snapshot, pipeline.embedder.embed_query, question, 4, params)
    assert len({p.doc_id for p in passages[:2]}) == 2
    assert {p.chunk_id for p in off} == {p.chunk_id for p in passages}, "only the order changes"
    scores = [p.score for p in passages]
    assert scores == sorted(scores, reverse=True)
    # A question that names no source is not taken to relate several reports: order unchanged.
    plain = "How long did the last port strike last and what did farmers say?"
    assert ([p.chunk_id for p in retrieve(snapshot, pipeline.embedder.embed_query, plain, 4, params)]
            == [p.chunk_id for p in retrieve(snapshot, pipeline.embedder.embed_query, plain, 4,
                                             replace(params, distinct_articles=0))])


def test_source_queries_can_be_switched_off(pipeline: RagPipeline, snapshot: IndexSnapshot) -> None:
    question = "Did The Age report that interest rates would rise before TechCrunch reported on custom GPTs?"
    params = replace(pipeline.retrieval_params, source_queries=False)
    passages = retrieve(snapshot, pipeline.embedder.embed_query, question, 5, params)
    assert len(passages) == 5 and len({p.chunk_id for p in passages}) == 5
    scores = [p.score for p in passages]
    assert scores == sorted(scores, reverse=True)


def test_an_as_of_day_never_returns_a_later_article(pipeline: RagPipeline) -> None:
    everything = {p.doc_id for p in pipeline.search("Reserve Bank interest rates decision", k=50)}
    assert "age-rba-dec" in everything
    questions = [
        "Reserve Bank interest rates decision",
        "What did The Age report about the Reserve Bank interest rate decision?",
        "What did The Age report about interest rates on December 5, 2023?",
        "Did The Age report on interest rates before TechCrunch reported on custom GPTs?",
    ]
    for question in questions:
        passages = pipeline.search(question, k=50, filters=SearchFilters(as_of="2023-11-01"))
        docs = {p.doc_id for p in passages}
        assert docs.isdisjoint({"age-rba-dec", "tc-gpts", "cnbc-gpts"}), question
        assert all((p.published_at or "")[:10] <= "2023-11-01" for p in passages), question
    top = pipeline.search(questions[1], k=1, filters=SearchFilters(as_of="2023-11-01"))[0]
    assert top.doc_id == "age-rba"


# -- rag.dedup -----------------------------------------------------------------------------------

LONG = " ".join(
    f"Item {n}: the {what} was reviewed by the {who} on {day}." for n, (what, who, day) in enumerate([
        ("harbour budget", "finance committee", "Monday"),
        ("bridge repair plan", "engineering panel", "Tuesday"),
        ("library opening hours", "community board", "Wednesday"),
        ("bus timetable", "transport office", "Thursday"),
        ("school zoning map", "education council", "Friday"),
        ("park lighting", "safety group", "Saturday"),
        ("water pricing", "utilities regulator", "Sunday"),
        ("festival permit", "events team", "the first of May"),
        ("parking fines", "traffic unit", "the second of May"),
        ("recycling contract", "waste committee", "the third of May"),
        ("tree planting scheme", "parks department", "the fourth of May"),
        ("housing grant", "planning authority", "the fifth of May"),
        ("swimming pool roof", "sports trust", "the sixth of May"),
        ("cycle lane", "road safety board", "the seventh of May"),
        ("museum loan", "heritage office", "the eighth of May"),
        ("market stall fees", "trading standards team", "the ninth of May"),
        ("flood barrier", "emergency planners", "the tenth of May"),
        ("ferry subsidy", "island council", "the eleventh of May"),
        ("airport noise report", "environment office", "the twelfth of May"),
        ("youth club funding", "social services board", "the thirteenth of May"),
    ], start=1)
)


def test_minhash_similarity() -> None:
    assert similarity(signature(WIRE), signature(WIRE)) == 1.0
    assert np.array_equal(signature(WIRE), signature(WIRE.upper())), "case does not matter"
    assert np.array_equal(signature(WIRE), signature("  ".join(WIRE.split()))), "nor spacing"
    unrelated = " ".join(str(a["text"]) for a in ARTICLES[:3])
    assert similarity(signature(WIRE), signature(unrelated)) < 0.2
    assert similarity(signature(LONG), signature(WIRE)) < 0.2
    changed = LONG.replace("the swimming pool roof was reviewed by the sports trust",
                           "a new ice rink was proposed by a private developer")
    assert changed != LONG
    assert similarity(signature(LONG), signature(changed)) > 0.8
    assert similarity(signature(LONG), signature(changed)) < 1.0


def test_collapse_keeps_the_earlier_copy_at_the_best_place_any_copy_had(snapshot: IndexSnapshot) -> None:
    earlier, later = _rows(snapshot, "strike-z"), _rows(snapshot, "strike-a")
    assert len(earlier) == len(later) >= 3
    (age,) = _rows(snapshot, "age-rba")
    (fox,) = _rows(snapshot, "fox-flu")
    ranked = [(later[1], 0.9), (age, 0.8), (earlier[1], 0.7), (later[0], 0.6), (fox, 0.5), (earlier[2], 0.4)]
    assert collapse(snapshot, ranked) == [(earlier[1], 0.9), (age, 0.8), (earlier[0], 0.6), (fox, 0.5),
                                          (earlier[2], 0.4)]
    # Each chunk of the later copy becomes the chunk at its position in the earlier one.
    for position, row in enumerate(later):
        out = collapse(snapshot, [(row, 1.0), (earlier[-1], 0.1)])
        assert out[0] == (earlier[position], 1.0)
        assert snapshot.chunks[out[0][0]].position == snapshot.chunks[row].position == position


def test_collapse_leaves_distinct_articles_alone(snapshot: IndexSnapshot) -> None:
    rows = [_rows(snapshot, d)[0] for d in ("age-rba", "age-rba-dec", "guardian-rba", "tc-gpts", "cnbc-gpts",
                                           "prox-one", "prox-spread", "strike-a")]
    ranked = [(row, 1.0 - i / 10) for i, row in enumerate(rows)]
    assert collapse(snapshot, ranked) == ranked, "a copy alone in the ranking is not replaced"
    assert collapse(snapshot, []) == []
    # With a threshold above 1, nothing is a copy of anything.
    pair = [(_rows(snapshot, "strike-a")[0], 1.0), (_rows(snapshot, "strike-z")[0], 0.5)]
    assert collapse(snapshot, pair, threshold=1.01) == pair


def test_search_with_duplicates_collapsed_never_returns_the_later_copy(
    pipeline: RagPipeline, snapshot: IndexSnapshot
) -> None:
    question = "Why did harbour workers at Port Kembla strike?"
    plain = retrieve(snapshot, pipeline.embedder.embed_query, question, 8, pipeline.retrieval_params)
    assert {"strike-a", "strike-z"} <= {p.doc_id for p in plain}
    params = replace(pipeline.retrieval_params, collapse_duplicates=True)
    folded = retrieve(snapshot, pipeline.embedder.embed_query, question, 8, params)
    docs = [p.doc_id for p in folded]
    assert "strike-a" not in docs and docs[0] == "strike-z"
    assert len({p.chunk_id for p in folded}) == len(folded)


# -- the extractive generator across overlapping passages ----------------------------------------

LENDING = (
    "Xiaomi announced its online credit system in India at the end of 2019. "
    "To run the service, Xiaomi had to partner with companies. "
    "Some of them were KreditBee, Money View and ZestMoney. "
    "The company was founded in 2010 and keeps growing."
)
SENTENCE_A = "To run the service, Xiaomi had to partner with companies."
SENTENCE_B = "Some of them were KreditBee, Money View and ZestMoney."


def _passage(n: int, start: int, end: int) -> Passage:
    return Passage(chunk_id=f"xiaomi#{n}", doc_id="xiaomi", title="Xiaomi enters banking",
                   text=LENDING[start:end], start=start, end=end, score=1.0 - n / 10)


def _overlapping() -> list[Passage]:
    """The first passage ends with A; the second starts with A, then B."""
    a = LENDING.index(SENTENCE_A)
    return [_passage(0, 0, a + len(SENTENCE_A)), _passage(1, a, len(LENDING))]


def test_a_shared_sentence_is_kept_once_and_the_next_one_still_follows_it() -> None:
    sentences = passage_sentences(_overlapping())
    texts = [s.text for s in sentences]
    assert texts.count(SENTENCE_A) == 1
    a, b = texts.index(SENTENCE_A), texts.index(SENTENCE_B)
    assert sentences[a].passage == 0 and sentences[b].passage == 1
    assert b == a + 1
    assert sentences[b].follows(sentences[a])
    assert sentences[b].prev_doc_start == sentences[a].doc_start == LENDING.index(SENTENCE_A)
    assert not sentences[a].follows(sentences[b])
    assert sentences[0].prev_doc_start is None and not sentences[0].follows(sentences[-1])
    # Offsets are within the passage, and doc_start within the article.
    for s in sentences:
        assert LENDING[s.doc_start:s.doc_start + len(s.text)] == s.text


@pytest.mark.parametrize("max_sentences", [1, 3])
def test_extractive_answer_keeps_the_list_with_the_sentence_it_leans_on_across_passages(
    embedder: Embedder, max_sentences: int
) -> None:
    passages = _overlapping()
    for p in passages:
        assert p.text == LENDING[p.start:p.end]
    generator = ExtractiveGenerator(GeneratorContext(embedder=embedder, max_answer_sentences=max_sentences))
    answer = generator.generate("Which companies did Xiaomi partner with?", passages)
    assert answer.answer is not None
    quotes = [c.quote for c in answer.citations]
    assert SENTENCE_A in quotes and SENTENCE_B in quotes
    assert quotes.index(SENTENCE_B) == quotes.index(SENTENCE_A) + 1, "shown in reading order"
    assert "KreditBee" in answer.answer
    for c in answer.citations:
        assert LENDING[c.start:c.end] == c.quote
    a = next(c for c in answer.citations if c.quote == SENTENCE_A)
    b = next(c for c in answer.citations if c.quote == SENTENCE_B)
    assert a.doc_id == b.doc_id == "xiaomi" and b.start > a.end
