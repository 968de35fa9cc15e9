"""``rag.evaluation`` and ``rag eval``: every metric on tiny cases worked out by hand,
the gold-file checks, and the installed command end to end on a made-up corpus.

The metric values are literal numbers; the comment beside each shows the arithmetic."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from rag.errors import InvalidRequestError
from rag.evaluation import (
    Evidence,
    GoldQuestion,
    chunk_metrics,
    contains,
    default_index_dir,
    document_metrics,
    load_gold,
    normalised_tokens,
    quoted_facts,
    refusal_scores,
    run_eval,
    shares_a_word,
    summary_lines,
    token_f1,
)
from tests.processes import Run, assert_clean_error, run_rag

# -- document level -------------------------------------------------------------------------


def test_document_metrics_two_gold_docs_at_ranks_1_and_3() -> None:
    m = document_metrics(["a", "x", "b", "y"], ["a", "b"])
    assert m["recall@1"] == pytest.approx(0.5)  # 1 of 2 gold docs in the first 1
    assert m["recall@5"] == pytest.approx(1.0)
    assert m["recall@10"] == pytest.approx(1.0)
    assert m["recall@20"] == pytest.approx(1.0)
    assert m["mrr@10"] == pytest.approx(1.0)  # first gold at rank 1
    # DCG = 1/log2(2) + 1/log2(4) = 1.5; ideal = 1 + 1/log2(3) = 1.6309297535714575
    assert m["ndcg@10"] == pytest.approx(0.9197207891481876)
    # AP = (1/1 + 2/3) / 2
    assert m["map@10"] == pytest.approx(0.8333333333333334)


def test_document_metrics_collapse_duplicates_to_their_first_appearance() -> None:
    # distinct order: x, y, a, b (a would be at rank 4 and b at 6 if duplicates counted)
    m = document_metrics(["x", "x", "y", "a", "x", "b"], ["a", "b", "c"])
    assert m["recall@1"] == 0.0
    assert m["recall@5"] == pytest.approx(0.6666666666666666)  # 2 of 3
    assert m["recall@20"] == pytest.approx(0.6666666666666666)
    assert m["mrr@10"] == pytest.approx(0.3333333333333333)  # a at rank 3, not 4
    # DCG = 1/log2(4) + 1/log2(5) = 0.93067655807; ideal over 3 = 1 + 0.63092975357 + 0.5
    assert m["ndcg@10"] == pytest.approx(0.4367467095119258)
    # AP = (1/3 + 2/4) / 3
    assert m["map@10"] == pytest.approx(0.2777777777777778)


def test_document_metrics_count_a_gold_doc_beyond_rank_10_only_in_recall_at_20() -> None:
    ranked = ["n1", "g1", *(f"n{i}" for i in range(3, 11)), "g2"]  # g1 at rank 2, g2 at rank 11
    m = document_metrics(ranked, ["g1", "g2"])
    assert m["recall@1"] == 0.0
    assert m["recall@5"] == pytest.approx(0.5)
    assert m["recall@10"] == pytest.approx(0.5)
    assert m["recall@20"] == pytest.approx(1.0)
    assert m["mrr@10"] == pytest.approx(0.5)
    # DCG = 1/log2(3) (g2 at 11 is cut off); ideal = 1 + 1/log2(3)
    assert m["ndcg@10"] == pytest.approx(0.38685280723454163)
    # AP = (1/2) / 2
    assert m["map@10"] == pytest.approx(0.25)


def test_document_metrics_recall_at_20_stops_at_rank_20() -> None:
    ranked = [f"n{i}" for i in range(1, 21)] + ["g"]  # g at rank 21
    m = document_metrics(ranked, ["g"])
    assert m == {"recall@1": 0.0, "recall@5": 0.0, "recall@10": 0.0, "recall@20": 0.0,
                 "mrr@10": 0.0, "ndcg@10": 0.0, "map@10": 0.0}


def test_document_metrics_with_no_hit_are_all_zero() -> None:
    m = document_metrics(["x", "y", "z"], ["a"])
    assert set(m) == {"recall@1", "recall@5", "recall@10", "recall@20", "mrr@10", "ndcg@10", "map@10"}
    assert all(value == 0.0 for value in m.values()), m


def test_document_metrics_normalise_by_at_most_10_gold_docs() -> None:
    gold = [f"g{i}" for i in range(1, 13)]  # 12 gold docs, all ranked first
    m = document_metrics(gold, gold)
    assert m["recall@10"] == pytest.approx(0.8333333333333334)  # 10 / 12
    assert m["recall@20"] == pytest.approx(1.0)
    assert m["ndcg@10"] == pytest.approx(1.0)  # ideal DCG over min(12, 10) ranks
    assert m["map@10"] == pytest.approx(1.0)  # (1/1 + 2/2 + ... + 10/10) / min(12, 10)

    only_first = document_metrics(["g1", "x"], gold)
    assert only_first["map@10"] == pytest.approx(0.1)  # (1/1) / 10
    assert only_first["recall@1"] == pytest.approx(0.08333333333333333)  # 1 / 12


def test_document_metrics_count_a_repeated_gold_doc_once() -> None:
    m = document_metrics(["a", "x"], ["a", "a", "b"])  # gold set {a, b}
    assert m["recall@1"] == pytest.approx(0.5)  # 1 / 2, not 1 / 3
    assert m["map@10"] == pytest.approx(0.5)  # (1/1) / 2


def test_document_metrics_need_a_gold_doc() -> None:
    with pytest.raises(ValueError):
        document_metrics(["a"], [])


# -- chunk level (MultiHop-RAG's definition) -----------------------------------------------


def test_chunk_metrics_ignore_whitespace_when_matching_a_fact() -> None:
    passages = ["Unrelated text.", "The  ferry\nholds twelve\tthousand books, the mayor said."]
    m = chunk_metrics(passages, ["The ferry holds twelve thousand books"])
    assert m == {"hits@4": 1.0, "hits@10": 1.0, "mrr@10": 0.5, "map@10": 0.5}  # MAP = (1/2) / 1


@pytest.mark.parametrize("rank", [5, 10])
def test_chunk_metrics_a_first_hit_at_rank_5_to_10_is_a_hit_at_10_only(rank: int) -> None:
    passages = [f"filler {i}" for i in range(1, rank)] + ["it holds THE FACT here"]
    m = chunk_metrics(passages, ["THE FACT"])
    assert m["hits@4"] == 0.0
    assert m["hits@10"] == 1.0
    assert m["mrr@10"] == pytest.approx(1 / rank)
    assert m["map@10"] == pytest.approx(1 / rank)  # (1/rank) / 1


def test_chunk_metrics_a_hit_at_rank_4_counts_for_hits_at_4() -> None:
    m = chunk_metrics(["x", "y", "z", "FACT"], ["FACT"])
    assert m["hits@4"] == 1.0
    assert m["mrr@10"] == pytest.approx(0.25)


def test_chunk_metrics_ignore_passages_beyond_rank_10() -> None:
    passages = [f"filler {i}" for i in range(1, 11)] + ["FACT"]  # rank 11
    assert chunk_metrics(passages, ["FACT"]) == {"hits@4": 0.0, "hits@10": 0.0, "mrr@10": 0.0, "map@10": 0.0}


def test_chunk_metrics_count_each_fact_only_at_the_rank_it_is_first_found() -> None:
    passages = ["ONE is here", "nothing", "ONE again", "TWO at last"]
    m = chunk_metrics(passages, ["ONE", "TWO"])
    # rank 1: 1 new fact -> 1/1; rank 3: ONE again, nothing new -> 0; rank 4: TWO -> 1/4
    # MAP = (1/1 + 0 + 1/4) / 2
    assert m["map@10"] == pytest.approx(0.625)
    assert m["mrr@10"] == 1.0
    assert m["hits@4"] == 1.0


def test_chunk_metrics_a_passage_holding_two_facts_at_once() -> None:
    passages = ["nothing", "ALPHA and BETA together", "nothing", "nothing", "GAMMA alone"]
    m = chunk_metrics(passages, ["ALPHA", "BETA", "GAMMA"])
    # rank 2: two new facts -> 2/2; rank 5: one new fact -> 1/5; MAP = (1 + 0.2) / 3
    assert m["map@10"] == pytest.approx(0.4)
    assert m["mrr@10"] == pytest.approx(0.5)
    assert m["hits@4"] == 1.0


def test_chunk_metrics_normalise_by_at_most_10_facts() -> None:
    facts = [f"F{i:02d}" for i in range(1, 13)]  # 12 facts
    passages = ["F01 F02 F03 F04 F05", "F06"]
    m = chunk_metrics(passages, facts)
    # (5/1 + 1/2) / min(12, 10) = 5.5 / 10
    assert m["map@10"] == pytest.approx(0.55)


def test_chunk_metrics_with_no_hit_and_without_facts() -> None:
    assert chunk_metrics(["a", "b"], ["c"]) == {"hits@4": 0.0, "hits@10": 0.0, "mrr@10": 0.0, "map@10": 0.0}
    with pytest.raises(ValueError):
        chunk_metrics(["a"], [])


def _fake_snapshot_pipeline(texts: dict[str, str]) -> Any:
    documents = {doc_id: SimpleNamespace(article=SimpleNamespace(text=text)) for doc_id, text in texts.items()}
    return SimpleNamespace(snapshot=lambda: SimpleNamespace(documents=documents))


def test_quoted_facts_keeps_only_facts_that_quote_their_article() -> None:
    pipeline = _fake_snapshot_pipeline({"a": "The ferry holds twelve thousand books.\nIt sails weekly."})
    q = GoldQuestion(id="q", question="?", answer="x", evidence=(
        Evidence("a", "The ferry  holds twelve thousand\nbooks."),  # a quote, other whitespace
        Evidence("a", "A ferry with 12,000 books."),  # a summary
        Evidence("missing", "It sails weekly."),  # an article not in the index
        Evidence("a", ""),  # no fact
    ))
    assert quoted_facts(pipeline, q, {}) == ["The ferry  holds twelve thousand\nbooks."]


# -- answers --------------------------------------------------------------------------------


def test_normalised_tokens_drop_markers_punctuation_case_and_articles() -> None:
    assert normalised_tokens("The CEO of the firm, Tesla[1] and SpaceX [12].") == [
        "ceo", "of", "firm", "tesla", "and", "spacex"]  # "of"/"and" stay: only articles go
    assert normalised_tokens("Ｔｅｓｌａ in Zürich") == ["tesla", "in", "zürich"]  # NFKC, any script
    assert normalised_tokens("Trump's 1,240-metre [x] bridge") == ["trump", "s", "1", "240", "metre", "x", "bridge"]
    assert normalised_tokens("[1] [2]") == []


def test_shares_a_word_ignores_stop_words() -> None:
    prediction = normalised_tokens("It was in the report [1].")
    assert not shares_a_word(prediction, normalised_tokens("It was in 2019"))  # it/was/in do not count
    assert shares_a_word(prediction, normalised_tokens("The Report"))
    # the possessive "s" is a stop word too
    assert not shares_a_word(normalised_tokens("Biden's plan"), normalised_tokens("Trump's"))
    # a citation marker is not the number 1
    assert not shares_a_word(normalised_tokens("Yes [1]"), normalised_tokens("1"))


def test_shares_a_word_with_a_gold_made_only_of_stop_words() -> None:
    gold = normalised_tokens("He")
    assert shares_a_word(normalised_tokens("He did."), gold)
    assert not shares_a_word(normalised_tokens("She did."), gold)


def test_token_f1() -> None:
    # common 2; precision 2/3, recall 2/2; F1 = 2 * 2/3 * 1 / (2/3 + 1)
    assert token_f1(["tesla", "inc", "said"], ["tesla", "inc"]) == pytest.approx(0.8)
    # common 1 (one "x" of two counts); precision 1/2, recall 1/3; F1 = 2 * 1/6 / (5/6)
    assert token_f1(["x", "y"], ["x", "x", "z"]) == pytest.approx(0.4)
    # repeated tokens count as often as both sides have them: common 2; precision 2/3, recall 2/2
    assert token_f1(["new", "york", "new"], ["new", "new"]) == pytest.approx(0.8)
    assert token_f1(["a"], ["b"]) == 0.0
    assert token_f1([], ["b"]) == 0.0
    assert token_f1(["b"], ["b"]) == pytest.approx(1.0)


def test_contains_needs_the_gold_as_one_contiguous_run() -> None:
    prediction = normalised_tokens("The CEO, Elon Musk, said so [1].")
    assert contains(prediction, normalised_tokens("Elon Musk"))
    assert not contains(prediction, normalised_tokens("Musk Elon"))
    assert not contains(prediction, normalised_tokens("CEO Musk"))
    assert not contains(prediction, [])
    assert not contains(["musk"], ["elon", "musk"])


def test_refusal_scores_by_hand() -> None:
    refused = [True, True, False, False, True]
    answerable = [False, True, False, True, True]
    # refusals: 3, of which 1 on an unanswerable question; unanswerable: 2, 1 refused
    assert refusal_scores(refused, answerable) == {
        "refusal_precision": pytest.approx(0.3333333333333333),  # 1 / 3
        "refusal_recall": pytest.approx(0.5),  # 1 / 2
    }


def test_refusal_scores_are_none_when_undefined() -> None:
    # no refusal: precision undefined; one unanswerable question, not refused: recall 0 / 1
    assert refusal_scores([False, False], [False, True]) == {"refusal_precision": None, "refusal_recall": 0.0}
    # every question answerable: recall undefined; one refusal, wrong: precision 0 / 1
    assert refusal_scores([True, False], [True, True]) == {"refusal_precision": 0.0, "refusal_recall": None}
    assert refusal_scores([], []) == {"refusal_precision": None, "refusal_recall": None}
    with pytest.raises(ValueError):
        refusal_scores([True], [True, False])


# -- gold files -----------------------------------------------------------------------------


def _write(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


GOOD = json.dumps({"id": "q1", "question": "Who?", "answer": "Ann", "type": "inference_query",
                   "evidence": [{"doc_id": "d1", "fact": "Ann did it."}]})


def test_load_gold_reads_questions(tmp_path: Path) -> None:
    gold = _write(
        tmp_path / "gold.jsonl",
        GOOD,
        "",
        json.dumps({"question": "  Which day?  ", "answer": "Monday", "question_date": "2024/01/02",
                    "evidence": [{"doc_id": "d2", "fact": "a"}, {"doc_id": "d2", "fact": "b"}, {"fact": "c"}]}),
        json.dumps({"id": "q4", "question": "Who won?", "answer": "Insufficient information.", "type": "null_query",
                    "evidence": []}),
        json.dumps({"id": "q5", "question": "When?", "answer": None}),
    )
    q1, q3, q4, q5 = load_gold(gold)
    assert (q1.id, q1.question, q1.answer, q1.type, q1.answerable) == ("q1", "Who?", "Ann", "inference_query", True)
    assert q1.gold_docs == ["d1"]
    assert q1.evidence[0].fact == "Ann did it."
    assert q3.id == "line-3"  # the file's line number: the blank line 2 still counts
    assert q3.question == "Which day?"
    assert q3.question_date == "2024/01/02"
    assert q3.gold_docs == ["d2"]  # repeated and empty doc ids collapse
    assert q4.answer is None and not q4.answerable and q4.gold_docs == []
    assert q5.answer is None and not q5.answerable


@pytest.mark.parametrize(
    ("bad_line", "fragments"),
    [
        ('{"id": "q2", "question": "Unfinished', [":2: not valid JSON"]),
        ('{"id": "q2", "answer": "x"}', [":2:", '"question"']),
        ('{"id": "q2", "question": "   "}', [":2:", '"question"']),
        ('["q2", "Who?"]', [":2:", '"question"']),
        ('{"id": "q1", "question": "Who again?"}', [":2: duplicate question id 'q1'"]),
        ('{"id": "q2", "question": "Who?", "evidence": {"doc_id": "d1", "fact": "x"}}', [":2:", '"evidence"']),
        ('{"id": "q2", "question": "Who?", "evidence": ["d1"]}', [":2:", '"evidence"']),
    ],
    ids=["malformed-json", "no-question", "blank-question", "not-an-object", "duplicate-id",
         "evidence-an-object", "evidence-of-strings"],
)
def test_load_gold_names_file_and_line_of_a_bad_record(tmp_path: Path, bad_line: str, fragments: list[str]) -> None:
    gold = _write(tmp_path / "gold.jsonl", GOOD, bad_line, GOOD.replace('"q1"', '"q3"'))
    with pytest.raises(InvalidRequestError) as caught:
        load_gold(gold)
    message = str(caught.value)
    assert message.startswith(f"{gold}:2"), message
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize("content", ["", "\n  \n\n"], ids=["empty", "blank-lines"])
def test_load_gold_rejects_a_file_without_questions(tmp_path: Path, content: str) -> None:
    gold = tmp_path / "gold.jsonl"
    gold.write_text(content, encoding="utf-8")
    with pytest.raises(InvalidRequestError, match="holds no questions"):
        load_gold(gold)


def test_load_gold_rejects_an_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="cannot read the gold file"):
        load_gold(tmp_path / "missing.jsonl")
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes('{"question": "Zürich?"}\n'.encode("latin-1"))
    with pytest.raises(InvalidRequestError, match="cannot read the gold file"):
        load_gold(latin1)


# -- running over a fake pipeline ----------------------------------------------------------


class _FakePipeline:
    """Fixed passages for every question; a canned answer per question."""

    def __init__(self) -> None:
        self.texts = {"a": "Alpha one. Alpha two.", "b": "Beta one.", "c": "Gamma one."}
        self.passages = [SimpleNamespace(doc_id=d, text=t) for d, t in
                         [("a", "Alpha one."), ("c", "Gamma one."), ("a", "Alpha two."), ("b", "Beta one.")]]
        self.answers = {
            "Which beta?": SimpleNamespace(answer="Beta one. [1]", abstained=False, reason=None, citations=[
                SimpleNamespace(doc_id="b", start=0, end=9, quote="Beta one."),  # exact
                SimpleNamespace(doc_id="a", start=0, end=4, quote="Alpha"),  # text[0:4] is "Alph"
            ]),
            "Which delta?": SimpleNamespace(answer=None, abstained=True, reason="no support", citations=[]),
        }

    def search(self, question: str, *args: Any, **kwargs: Any) -> list[Any]:
        return self.passages

    def snapshot(self) -> Any:
        return _fake_snapshot_pipeline(self.texts).snapshot()

    def ask(self, question: str, **kwargs: Any) -> Any:
        return self.answers[question]

    def document(self, doc_id: str) -> Any:
        return SimpleNamespace(text=self.texts[doc_id])


def test_run_eval_scores_each_question_and_averages() -> None:
    questions = [
        GoldQuestion(id="q1", question="Which beta?", answer="Beta", type="inference_query",
                     evidence=(Evidence("b", "Beta one."), Evidence("a", "A summary, not a quote."))),
        GoldQuestion(id="q2", question="Which delta?", answer=None, type="null_query"),
    ]
    calls: list[int] = []
    result = run_eval(_FakePipeline(), questions, depth=10, answers=True, on_question=lambda: calls.append(1))
    assert len(calls) == 2
    first, second = result.records
    assert first["retrieved_docs"] == ["a", "c", "b"]
    assert first["gold_docs"] == ["b", "a"]
    # gold b, a at distinct ranks 3 and 1: AP = (1/1 + 2/3) / 2; DCG = 1 + 1/log2(4)
    assert first["document"] == {"recall@1": 0.5, "recall@5": 1.0, "recall@10": 1.0, "recall@20": 1.0,
                                 "mrr@10": 1.0, "ndcg@10": 0.9197, "map@10": 0.8333}
    # only the quoted fact, "Beta one.", is looked for: passage 4; MAP = (1/4) / 1
    assert first["chunk"] == {"hits@4": 1.0, "hits@10": 1.0, "mrr@10": 0.25, "map@10": 0.25}
    answer = first["answer"]
    assert (answer["correct"], answer["exact_match"], answer["contains_gold"]) == (True, False, True)
    assert answer["f1"] == pytest.approx(0.6667)  # [beta, one] vs [beta]: 2 * 1/2 * 1 / (1/2 + 1)
    assert (answer["citations"], answer["exact_citations"], answer["cited_docs"]) == (2, 1, ["b", "a"])
    assert "document" not in second and "chunk" not in second
    assert second["answer"]["refused"] is True and second["answer"]["correct"] is False

    summary = result.summary
    assert summary["questions"] == 2
    assert summary["document"]["questions"] == 1 and summary["chunk"]["questions"] == 1
    answers = summary["answers"]
    assert answers["questions"] == 2 and answers["answerable"] == 1
    assert answers["accuracy"] == 1.0 and answers["exact_match"] == 0.0 and answers["contains_gold"] == 1.0
    assert answers["citations"] == 2
    assert answers["citation_exactness"] == pytest.approx(0.5)  # 1 of 2 quotes equals the text
    assert answers["refusal_precision"] == 1.0 and answers["refusal_recall"] == 1.0  # 1/1, 1/1
    assert answers["false_refusals"] == 0.0

    lines = list(summary_lines(summary))
    assert "retrieval, document level (1 questions)" in lines
    assert any(line.split() == ["citation_exactness", "0.500"] for line in lines), lines


def test_run_eval_without_answers_has_no_answer_scores() -> None:
    question = GoldQuestion(id="q", question="Which beta?", answer="Beta", evidence=())
    result = run_eval(_FakePipeline(), [question], depth=10)
    assert "answer" not in result.records[0] and "answers" not in result.summary
    assert result.summary["document"] == {"questions": 0}
    lines = list(summary_lines(result.summary))
    assert not any(line.startswith("retrieval") for line in lines)  # empty tables are left out
    assert lines[-1].startswith("search p50: ")


def test_default_index_dir_is_one_cache_folder_per_corpus_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    one = default_index_dir(tmp_path / "multihop" / "corpus.jsonl")
    other = default_index_dir(tmp_path / "realtime" / "corpus.jsonl")
    assert one.parent == tmp_path / "cache" / "rag-news" / "eval"
    assert one.name.startswith("multihop-") and other.name.startswith("realtime-")
    assert default_index_dir(tmp_path / "news.jsonl").name.startswith("news-")
    assert one == default_index_dir(tmp_path / "multihop" / "corpus.jsonl")


# -- the rag eval command -------------------------------------------------------------------

ARTICLES = [
    ("kelmsby-library", "Harbour town opens a floating library", "Estuary Gazette", "2024-03-02",
     "The town of Kelmsby opened a floating library on an old ferry on Saturday, the mayor said. "
     "The ferry holds twelve thousand books and will visit four villages along the estuary each week. "
     "Volunteers from the Kelmsby Rowing Club repainted the hull over the winter."),
    ("quillon-bridge", "Engineers finish the Quillon suspension bridge", "Marrow Courier", "2024-04-16",
     "Engineers finished the Quillon suspension bridge across the Marrow river on Tuesday after six years of "
     "work. The bridge is 1,240 metres long and carries a tram line as well as two cycle lanes. "
     "The regional transport office said the first trams will cross it in May."),
    ("brindle-cheese", "Brindle valley cheesemakers win gold", "Dairy Weekly", "2024-05-20",
     "A cooperative of cheesemakers from the Brindle valley won the gold medal at the Northern Dairy Fair for "
     "its smoked goat cheese. The cooperative was founded in 1987 by eleven farming families. "
     "Its chairwoman, Oona Palethorpe, said the prize money would pay for a new cellar."),
    ("vantor-observatory", "Vantor observatory spots a new comet", "Sky Notes", "2024-02-15",
     "Astronomers at the Vantor observatory discovered a comet on the night of 14 February. "
     "The comet, named Vantor-3, will pass closest to the Sun in October. "
     "It is expected to be visible through binoculars in the southern hemisphere."),
]
GOLD = [
    {"id": "q-books", "question": "How many books does the Kelmsby floating library ferry hold?",
     "answer": "twelve thousand", "type": "inference_query",
     "evidence": [{"doc_id": "kelmsby-library",
                   "fact": "The ferry holds twelve thousand books and will visit four villages along the estuary "
                           "each week."}]},
    {"id": "q-chair", "question": "Who is the chairwoman of the Brindle valley cheese cooperative?",
     "answer": "Oona Palethorpe", "type": "inference_query",
     "evidence": [{"doc_id": "brindle-cheese",
                   "fact": "Its chairwoman, Oona Palethorpe, said the prize money would pay for a new cellar."}]},
    {"id": "q-two", "question": "How long is the Quillon suspension bridge, and what is the name of the comet "
                                "found at the Vantor observatory?",
     "answer": "1,240 metres; Vantor-3", "type": "comparison_query",
     "evidence": [{"doc_id": "quillon-bridge",
                   "fact": "The bridge is 1,240 metres long and carries a tram line as well as two cycle lanes."},
                  {"doc_id": "vantor-observatory",  # a quote all the same: whitespace does not count
                   "fact": "The comet, named  Vantor-3,\nwill pass closest to the Sun in October."}]},
    {"id": "q-null", "question": "Which football club did the Zorvath city council sell its stadium to?",
     "answer": "Insufficient information.", "type": "null_query", "evidence": []},
]


@pytest.fixture(scope="module")
def eval_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("eval-work")
    corpus = work / "corpus.jsonl"
    corpus.write_text("".join(
        json.dumps({"id": i, "title": t, "source": s, "published_at": p, "url": f"https://example.com/{i}",
                    "text": x}) + "\n"
        for i, t, s, p, x in ARTICLES), encoding="utf-8")
    gold = work / "gold.jsonl"
    gold.write_text("".join(json.dumps(q) + "\n" for q in GOLD), encoding="utf-8")
    return {"work": work, "corpus": corpus, "gold": gold, "index": work / "idx"}


@pytest.fixture(scope="module")
def first_eval(eval_files: dict[str, Path]) -> tuple[Run, Path]:
    f, output = eval_files, eval_files["work"] / "out.jsonl"
    result = run_rag(f["work"], "eval", str(f["gold"]), "--corpus", str(f["corpus"]), "--index", str(f["index"]),
                  "--output", str(output), "--json", "-q", "--answers")
    return result, output


def test_eval_scores_retrieval_and_answers_end_to_end(first_eval: tuple[Run, Path]) -> None:
    result, output = first_eval
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "Indexing " in result.stderr  # progress words go to stderr with --json
    summary = json.loads(result.stdout)
    assert summary["questions"] == 4
    assert summary["results_file"] == str(output)
    assert summary["document"]["questions"] == 3
    assert summary["document"]["recall@20"] == 1.0  # 4 articles, 50 passages retrieved
    assert summary["chunk"]["questions"] == 3  # every answerable question quotes its articles
    assert summary["chunk"]["hits@10"] == 1.0
    answers = summary["answers"]
    assert answers["questions"] == 4 and answers["answerable"] == 3
    assert answers["citations"] >= 1
    assert answers["citation_exactness"] == 1.0

    records = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in records] == [q["id"] for q in GOLD]
    by_id = {r["id"]: r for r in records}
    for q in GOLD:
        record = by_id[q["id"]]
        assert {"id", "type", "retrieved_docs", "answer"} <= set(record), record
        assert record["type"] == q["type"]
        assert isinstance(record["answer"]["refused"], bool)
        if q["evidence"]:
            assert {"document", "chunk"} <= set(record), record
            assert record["document"]["recall@20"] == 1.0
            assert set(record["gold_docs"]) <= set(record["retrieved_docs"])
        else:
            assert "document" not in record and "chunk" not in record
    assert set(by_id["q-null"]["retrieved_docs"]) <= {a[0] for a in ARTICLES}


def test_eval_reuses_a_matching_index(eval_files: dict[str, Path], first_eval: tuple[Run, Path]) -> None:
    assert first_eval[0].returncode == 0, first_eval[0].stderr
    f, output = eval_files, eval_files["work"] / "out-again.jsonl"
    current = (f["index"] / "CURRENT").read_text()
    result = run_rag(f["work"], "eval", str(f["gold"]), "--corpus", str(f["corpus"]), "--index", str(f["index"]),
                  "--output", str(output), "-q")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout.startswith(f"Using the index in {f['index']}"), result.stdout
    assert "Indexing" not in result.stdout + result.stderr
    assert (f["index"] / "CURRENT").read_text() == current  # nothing was rebuilt
    assert "retrieval, document level (3 questions)" in result.stdout
    assert f"Per-question results: {output}" in result.stdout
    assert len(output.read_text(encoding="utf-8").splitlines()) == len(GOLD)


def test_eval_with_a_malformed_gold_file_is_a_clean_error(eval_files: dict[str, Path]) -> None:
    gold = eval_files["work"] / "broken-gold.jsonl"
    _write(gold, json.dumps(GOLD[0]), json.dumps(GOLD[1]), '{"id": "q3", "question": "Unfinished')
    result = run_rag(eval_files["work"], "eval", str(gold), "--corpus", str(eval_files["corpus"]),
                  "--index", str(eval_files["work"] / "never-built"), "-q")
    assert result.returncode == 1
    assert_clean_error(result, f"{gold}:3", "not valid JSON")
    assert result.stdout == ""


def test_eval_never_replaces_an_index_of_other_articles_without_rebuild(
    eval_files: dict[str, Path], first_eval: tuple[Run, Path]
) -> None:
    """`--index` pointing at someone's index of other articles: refused, the index untouched."""
    assert first_eval[0].returncode == 0, first_eval[0].stderr
    f = eval_files
    other_corpus = f["work"] / "other.jsonl"
    other_corpus.write_text(json.dumps({"id": "other-1", "title": "Other", "text": "Nothing alike here."}) + "\n",
                            encoding="utf-8")
    current = (f["index"] / "CURRENT").read_text()
    result = run_rag(f["work"], "eval", str(f["gold"]), "--corpus", str(other_corpus), "--index", str(f["index"]), "-q")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: the index in") and "--rebuild" in result.stderr
    assert (f["index"] / "CURRENT").read_text() == current
