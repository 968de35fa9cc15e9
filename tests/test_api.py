"""The HTTP API through a real uvicorn server on 127.0.0.1 (no TestClient): answers,
exact citations, refusals, search, documents, request errors and an index-less server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from rag.config import Settings
from rag.embedding import Embedder
from rag.generators.registry import available_generators
from rag.pipeline import RagPipeline
from tests.conftest import ANSWER_KEYS, CITATION_KEYS, LENDERS, MISSION_QUESTION, PASSAGE_KEYS, SEED_ID
from tests.servers import serve_app

SEED_TITLE = "Xiaomi steps on the accelerator to enter the banking market"
DOCUMENT_KEYS = {"id", "title", "url", "published_at", "source", "text"}


@pytest.fixture(scope="module")
def api(seed_index: Path, embedder: Embedder) -> Iterator[httpx.Client]:
    app = create_app(pipeline=RagPipeline(Settings(index_dir=seed_index), embedder=embedder))
    with serve_app(app) as client:
        yield client


@pytest.fixture(scope="module")
def seed_text(api: httpx.Client) -> str:
    response = api.get(f"/documents/{SEED_ID}")
    assert response.status_code == 200
    text = response.json()["text"]
    assert isinstance(text, str) and text
    return text


def _ask(api: httpx.Client, **body: Any) -> dict[str, Any]:
    response = api.post("/ask", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def _document_texts(api: httpx.Client, doc_ids: set[str]) -> dict[str, str]:
    texts = {}
    for doc_id in doc_ids:
        response = api.get(f"/documents/{doc_id}")
        assert response.status_code == 200, response.text
        texts[doc_id] = response.json()["text"]
    return texts


def _assert_citations_exact(api: httpx.Client, data: dict[str, Any]) -> None:
    """Every citation quotes its document exactly at its offsets; passages too."""
    doc_ids = {c["doc_id"] for c in data["citations"]} | {p["doc_id"] for p in data["passages"]}
    texts = _document_texts(api, doc_ids)
    for citation in data["citations"]:
        text = texts[citation["doc_id"]]
        assert 0 <= citation["start"] < citation["end"] <= len(text)
        assert citation["quote"] == text[citation["start"]:citation["end"]]
    for passage in data["passages"]:
        assert passage["text"] == texts[passage["doc_id"]][passage["start"]:passage["end"]]
    assert [c["n"] for c in data["citations"]] == list(range(1, len(data["citations"]) + 1))


# -- answers -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mission(api: httpx.Client) -> dict[str, Any]:
    return _ask(api, question=MISSION_QUESTION)


def test_mission_question_names_every_lender_with_exact_citations(
    api: httpx.Client, mission: dict[str, Any], seed_text: str
) -> None:
    assert mission["abstained"] is False
    assert mission["reason"] is None
    assert mission["question"] == MISSION_QUESTION
    assert mission["generator"] == "extractive"
    answer = mission["answer"]
    assert isinstance(answer, str)
    quotes = [c["quote"] for c in mission["citations"]]
    for lender in LENDERS:
        assert lender in answer, f"{lender} is missing from the answer"
        assert any(lender in quote for quote in quotes), f"no citation quotes {lender}"
    assert mission["citations"], "an answer must cite"
    for citation in mission["citations"]:
        assert citation["doc_id"] == SEED_ID
        assert citation["title"] == SEED_TITLE
        assert citation["quote"] == seed_text[citation["start"]:citation["end"]]
        assert f"[{citation['n']}]" in answer
    _assert_citations_exact(api, mission)


def test_answer_has_the_full_response_shape(mission: dict[str, Any]) -> None:
    assert set(mission) == ANSWER_KEYS
    assert mission["citations"] and mission["passages"]
    for citation in mission["citations"]:
        assert set(citation) == CITATION_KEYS
        assert isinstance(citation["start"], int) and isinstance(citation["end"], int)
        assert isinstance(citation["support"], float) and 0.0 <= citation["support"] <= 1.0
        assert citation["supported"] is True  # an extractive answer quotes its sources
    for passage in mission["passages"]:
        assert set(passage) >= PASSAGE_KEYS
        assert isinstance(passage["score"], float)
        assert passage["chunk_id"].startswith(passage["doc_id"])
    assert mission["check"] is None  # only a language model's answer is checked
    scores = [p["score"] for p in mission["passages"]]
    assert scores == sorted(scores, reverse=True)
    assert {"retrieve", "generate", "total"} <= set(mission["timings_ms"])
    assert all(v >= 0 for v in mission["timings_ms"].values())
    assert mission["timings_ms"]["total"] >= mission["timings_ms"]["retrieve"]


@pytest.mark.parametrize(
    ("question", "fact"),
    [
        ("Who is the new vice president of Xiaomi's financial services unit?", "Zhao Weixing"),
        ("Where did Zhao Weixing work before joining Xiaomi?", "XW Bank"),
        ("When was Xiaomi founded?", "2010"),
    ],
)
def test_factual_questions_are_answered_with_the_fact_and_exact_citations(
    api: httpx.Client, question: str, fact: str
) -> None:
    data = _ask(api, question=question)
    assert data["abstained"] is False
    assert fact in data["answer"]
    assert any(fact in c["quote"] for c in data["citations"]), f"no citation supports {fact!r}"
    _assert_citations_exact(api, data)


@pytest.mark.parametrize(
    "question", ["Who won the 2018 FIFA World Cup?", "What is the boiling point of water at sea level?"]
)
def test_off_topic_questions_are_refused(api: httpx.Client, question: str) -> None:
    data = _ask(api, question=question)
    assert set(data) == ANSWER_KEYS
    assert data["answer"] is None
    assert data["abstained"] is True
    assert isinstance(data["reason"], str) and data["reason"].strip()
    assert data["citations"] == []


def test_scripted_generator_cites_exact_spans(api: httpx.Client, seed_text: str) -> None:
    data = _ask(api, question=MISSION_QUESTION, generator="scripted")
    assert data["generator"] == "scripted"
    assert data["abstained"] is False
    assert data["citations"]
    assert "[1]" in data["answer"]
    for citation in data["citations"]:
        assert citation["quote"] == seed_text[citation["start"]:citation["end"]]
        assert citation["quote"] in data["answer"]
    _assert_citations_exact(api, data)


def test_k_limits_the_passages_of_an_answer(api: httpx.Client) -> None:
    data = _ask(api, question=MISSION_QUESTION, k=1)
    assert len(data["passages"]) == 1
    assert all(c["doc_id"] == SEED_ID for c in data["citations"])


# -- search --------------------------------------------------------------------------------


def test_search_returns_at_most_k_results_in_rank_order(api: httpx.Client, seed_text: str) -> None:
    response = api.get("/search", params={"q": "Xiaomi lending partners", "k": 2})
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == 2  # the seed article has more than two chunks
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert len({r["chunk_id"] for r in results}) == len(results)
    for result in results:
        assert set(result) >= PASSAGE_KEYS
        assert result["doc_id"] == SEED_ID
        assert result["text"] == seed_text[result["start"]:result["end"]]

    everything = api.get("/search", params={"q": "Xiaomi lending partners", "k": 100}).json()["results"]
    assert len(everything) > len(results)
    all_scores = [r["score"] for r in everything]
    assert all_scores == sorted(all_scores, reverse=True)
    assert [r["chunk_id"] for r in everything[: len(results)]] == [r["chunk_id"] for r in results]

    top = api.get("/search", params={"q": "Xiaomi lending partners", "k": 1}).json()["results"]
    assert [r["chunk_id"] for r in top] == [results[0]["chunk_id"]]


# -- documents -----------------------------------------------------------------------------


def test_documents_lists_the_seed_article(api: httpx.Client) -> None:
    response = api.get("/documents")
    assert response.status_code == 200
    page = response.json()
    assert page["total"] == 1 and page["offset"] == 0 and page["limit"] == 50
    assert [d["id"] for d in page["documents"]] == [SEED_ID]
    assert set(page["documents"][0]) == DOCUMENT_KEYS - {"text"}
    assert page["documents"][0]["title"] == SEED_TITLE

    past_the_end = api.get("/documents", params={"offset": 1, "limit": 10}).json()
    assert past_the_end == {"total": 1, "offset": 1, "limit": 10, "documents": []}


def test_document_serves_the_cleaned_text(api: httpx.Client) -> None:
    response = api.get(f"/documents/{SEED_ID}")
    assert response.status_code == 200
    doc = response.json()
    assert set(doc) == DOCUMENT_KEYS
    assert doc["id"] == SEED_ID
    assert doc["title"] == SEED_TITLE
    assert "KreditBee" in doc["text"] and "Zhao Weixing" in doc["text"]
    assert "Advertisement" not in doc["text"]
    assert "Subscribe to our newsletter" not in doc["text"]


def test_unknown_document_is_a_json_404(api: httpx.Client) -> None:
    response = api.get("/documents/no-such-document")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "no-such-document" in detail


# -- request errors ------------------------------------------------------------------------


def test_malformed_json_is_422(api: httpx.Client) -> None:
    response = api.post("/ask", content=b"{bad", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        ({}, "question"),
        ({"question": ""}, "question"),
        ({"question": "   "}, "empty"),
        ({"question": MISSION_QUESTION, "k": 0}, "k"),
        ({"question": MISSION_QUESTION, "k": 101}, "k"),
        ({"question": MISSION_QUESTION, "k": "many"}, "k"),
        ({"question": MISSION_QUESTION, "colour": "red"}, "colour"),
        ({"question": 42}, "question"),
        ({"question": "x" * 2001}, "question"),
        ({"question": MISSION_QUESTION, "filters": {"published_after": "last week"}}, "ISO date"),
        ([MISSION_QUESTION], ""),
    ],
    ids=["missing", "empty", "blank", "k0", "k101", "k-text", "extra-field", "not-a-string", "too-long",
         "bad-date", "not-an-object"],
)
def test_invalid_ask_requests_are_422(api: httpx.Client, body: Any, mentions: str) -> None:
    response = api.post("/ask", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"]
    assert mentions in response.text


def test_unknown_generator_is_422_naming_the_known_ones(api: httpx.Client) -> None:
    response = api.post("/ask", json={"question": MISSION_QUESTION, "generator": "no-such-generator"})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "no-such-generator" in detail
    known = list(available_generators())
    assert {"extractive", "scripted"} <= set(known)
    for name in known:
        assert name in detail


@pytest.mark.parametrize(
    "params",
    [{}, {"q": ""}, {"q": "   "}, {"q": "Xiaomi", "k": 0}, {"q": "Xiaomi", "k": 101},
     {"q": "Xiaomi", "k": "x"}],
    ids=["missing", "empty", "blank", "k0", "k101", "k-text"],
)
def test_invalid_search_requests_are_422(api: httpx.Client, params: dict[str, Any]) -> None:
    response = api.get("/search", params=params)
    assert response.status_code == 422, response.text
    assert response.json()["detail"]


def test_invalid_document_paging_is_422(api: httpx.Client) -> None:
    assert api.get("/documents", params={"limit": 0}).status_code == 422
    assert api.get("/documents", params={"offset": -1}).status_code == 422


# -- system --------------------------------------------------------------------------------


def test_health_reports_the_index(api: httpx.Client) -> None:
    response = api.get("/health")
    assert response.status_code == 200
    health = response.json()
    assert health["status"] == "ok" and health["index"] is True
    assert health["documents"] == 1
    assert health["chunks"] >= 1
    assert isinstance(health["generation"], str) and health["generation"]


def test_generators_lists_the_installed_ones(api: httpx.Client) -> None:
    data = api.get("/generators").json()
    assert data["default"] == "extractive"
    assert {"extractive", "scripted"} <= {g["name"] for g in data["generators"]}


def test_openapi_and_docs_are_served(api: httpx.Client) -> None:
    response = api.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert {"/ask", "/ask/stream", "/search", "/documents", "/v1/models", "/v1/chat/completions"} <= set(paths)
    assert "post" in paths["/ask"] and "get" in paths["/search"]

    docs = api.get("/docs")
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert "<html" in docs.text.lower() and "openapi.json" in docs.text


# -- a server without an index ---------------------------------------------------------------


def test_server_without_an_index_answers_503_pointing_at_ingest(empty_api: httpx.Client) -> None:
    health = empty_api.get("/health")
    assert health.status_code == 200
    assert health.json()["index"] is False
    assert health.json()["status"] == "ok"

    responses = [
        empty_api.post("/ask", json={"question": MISSION_QUESTION}),
        empty_api.get("/search", params={"q": "Xiaomi lenders"}),
        empty_api.get("/documents"),
        empty_api.get(f"/documents/{SEED_ID}"),
    ]
    for response in responses:
        assert response.status_code == 503, f"{response.request.url}: {response.status_code} {response.text}"
        detail = response.json()["detail"]
        assert isinstance(detail, str) and "rag ingest" in detail

    # request validation still comes first
    assert empty_api.post("/ask", json={"question": ""}).status_code == 422


@pytest.mark.parametrize(
    "body",
    [b'{"question": "\\ud800 lenders"}', b'{"question": "lenders", "\\ud800": 1}'],
    ids=["surrogate-in-question", "surrogate-in-field-name"],
)
def test_a_lone_surrogate_in_the_body_is_422_not_500(api: httpx.Client, body: bytes) -> None:
    response = api.post("/ask", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"]


def test_as_of_filter_keeps_undated_articles_and_rejects_a_bad_day(api: httpx.Client) -> None:
    # The seed article has no publication date, so an as-of day cannot rule it out.
    data = _ask(api, question=MISSION_QUESTION, filters={"as_of": "2020-01-01"})
    assert not data["abstained"] and all(lender in data["answer"] for lender in LENDERS)
    results = api.get("/search", params={"q": "Xiaomi credit", "as_of": "2020-01-01"}).json()["results"]
    assert results and results[0]["doc_id"] == SEED_ID
    for bad in ("2020", "2020-01-01T10:00", "yesterday"):
        response = api.post("/ask", json={"question": MISSION_QUESTION, "filters": {"as_of": bad}})
        assert response.status_code == 422, response.text
        assert "ISO day" in response.text
    response = api.get("/search", params={"q": "Xiaomi", "as_of": "2020-13-45"})
    assert response.status_code == 422
    assert "YYYY-MM-DD" in response.text
    for params in ({"as_of": "x"}, {"as_of": ""}, {"published_after": ""}, {"published_before": "soon"}):
        response = api.get("/search", params={"q": "Xiaomi", **params})
        assert response.status_code == 422, response.text
        [field] = params
        assert response.json()["detail"][0]["loc"] == ["query", field]
