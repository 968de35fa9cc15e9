"""POST /ask/stream through a real uvicorn server: token events, then one answer event
that equals POST /ask; request errors as JSON before any stream; a generator failing
mid-answer as an error event."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ANSWER_KEYS, LENDERS, MISSION_QUESTION, SEED_ID
from tests.servers import EndlessGenerator, FailingGenerator, PipelineWithTestGenerators


def parse_sse(lines: Iterator[str]) -> list[tuple[str, str]]:
    """``(event, data)`` of each event in a stream of SSE lines; comments (pings) are skipped."""
    events: list[tuple[str, str]] = []
    event, data = "message", []
    for line in lines:
        if not line:
            if data:
                events.append((event, "\n".join(data)))
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
    if data:
        events.append((event, "\n".join(data)))
    return events


def stream_events(plugin_api: httpx.Client, body: dict[str, Any]) -> list[tuple[str, Any]]:
    with plugin_api.stream("POST", "/ask/stream", json=body) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = parse_sse(response.iter_lines())
    for _, data in raw:
        assert "\n" not in data, "each event's JSON must be one data line"
    return [(event, json.loads(data)) for event, data in raw]


def answer_of(events: list[tuple[str, Any]]) -> dict[str, Any]:
    names = [event for event, _ in events]
    assert names.count("answer") == 1 and names[-1] == "answer", names
    assert set(names[:-1]) <= {"token"}, names
    answer: dict[str, Any] = events[-1][1]
    assert set(answer) == ANSWER_KEYS
    return answer


@pytest.fixture(scope="module")
def mission_events(plugin_api: httpx.Client) -> list[tuple[str, Any]]:
    return stream_events(plugin_api, {"question": MISSION_QUESTION, "generator": "extractive"})


def test_tokens_come_before_the_one_answer(mission_events: list[tuple[str, Any]]) -> None:
    answer = answer_of(mission_events)
    tokens = [data["text"] for event, data in mission_events if event == "token"]
    assert tokens, "the answer's text must be streamed before the answer"
    assert all(isinstance(t, str) and t for t in tokens)
    assert "".join(tokens) == answer["answer"]  # the extractive generator's pieces are its checked text


def test_streamed_answer_names_the_lenders_with_exact_citations(
    plugin_api: httpx.Client, mission_events: list[tuple[str, Any]]
) -> None:
    answer = answer_of(mission_events)
    assert answer["abstained"] is False and answer["generator"] == "extractive"
    for lender in LENDERS:
        assert lender in answer["answer"], f"{lender} is missing from the streamed answer"
    assert answer["citations"]
    texts = {doc_id: plugin_api.get(f"/documents/{doc_id}").json()["text"] for doc_id in
             {c["doc_id"] for c in answer["citations"]}}
    assert set(texts) == {SEED_ID}
    for citation in answer["citations"]:
        assert citation["quote"] == texts[citation["doc_id"]][citation["start"]:citation["end"]]
        assert f"[{citation['n']}]" in answer["answer"]


def test_streamed_answer_equals_the_ask_response(plugin_api: httpx.Client,
                                                 mission_events: list[tuple[str, Any]]) -> None:
    streamed = answer_of(mission_events)
    asked = plugin_api.post("/ask", json={"question": MISSION_QUESTION, "generator": "extractive"}).json()
    assert {**streamed, "timings_ms": None} == {**asked, "timings_ms": None}


def test_an_abstention_streams_only_the_answer(plugin_api: httpx.Client) -> None:
    events = stream_events(plugin_api, {"question": "Who won the 2018 FIFA World Cup?", "generator": "extractive"})
    assert [event for event, _ in events] == ["answer"]
    answer = answer_of(events)
    assert answer["abstained"] is True and answer["answer"] is None
    assert answer["reason"] and answer["citations"] == []


def test_a_generator_failing_mid_answer_ends_the_stream_with_an_error_event(plugin_api: httpx.Client) -> None:
    events = stream_events(plugin_api, {"question": MISSION_QUESTION, "generator": FailingGenerator.name})
    assert events == [
        ("token", {"text": FailingGenerator.PIECE}),
        ("error", {"detail": FailingGenerator.MESSAGE, "status": 502}),
    ]


def test_a_client_leaving_mid_stream_stops_the_generator(
    plugin_api: httpx.Client, plugin_pipeline: PipelineWithTestGenerators
) -> None:
    body = {"question": MISSION_QUESTION, "generator": EndlessGenerator.name}
    with plugin_api.stream("POST", "/ask/stream", json=body) as response:
        assert response.status_code == 200
        assert next(response.iter_lines()) == "event: token"
        assert not plugin_pipeline.endless.closed.is_set()
    # hung up: the server notices and closes the generator instead of letting it talk on
    assert plugin_pipeline.endless.closed.wait(timeout=30), "the generator was not closed"
    assert plugin_api.get("/health").status_code == 200
    answer_of(stream_events(plugin_api, {"question": MISSION_QUESTION}))


# -- requests refused before the stream starts -------------------------------------------------


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        ({"question": MISSION_QUESTION, "generator": "no-such-generator"}, "no-such-generator"),
        ({"question": ""}, "question"),
        ({"question": "   "}, "empty"),
        ({"question": MISSION_QUESTION, "k": 0}, "k"),
        ({"question": MISSION_QUESTION, "colour": "red"}, "colour"),
    ],
    ids=["unknown-generator", "empty", "blank", "k0", "extra-field"],
)
def test_invalid_requests_are_json_422_not_a_stream(plugin_api: httpx.Client, body: dict[str, Any],
                                                    mentions: str) -> None:
    response = plugin_api.post("/ask/stream", json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["detail"]
    assert mentions in response.text


def test_unknown_generator_detail_names_the_known_ones(plugin_api: httpx.Client) -> None:
    response = plugin_api.post("/ask/stream", json={"question": MISSION_QUESTION, "generator": "nope"})
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "extractive" in detail and "scripted" in detail


def test_a_server_without_an_index_answers_json_503(empty_api: httpx.Client) -> None:
    response = empty_api.post("/ask/stream", json={"question": MISSION_QUESTION})
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/json")
    assert "rag ingest" in response.json()["detail"]
