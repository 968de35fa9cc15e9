"""The OpenAI-compatible endpoint through the official ``openai`` client against a real
uvicorn server: models, answers with their source list and exact citations, streaming
that adds up to the same content, and errors the client raises as the right exception.

A conversation without a user message is refused with 422, like every invalid body of
this API, so the client raises ``openai.UnprocessableEntityError``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import CITATION_KEYS, LENDERS, MISSION_QUESTION, SEED_ID
from tests.servers import EndlessGenerator, FailingGenerator, PipelineWithTestGenerators

OFF_TOPIC = "Who won the 2018 FIFA World Cup?"


def _client(api: httpx.Client) -> openai.OpenAI:
    # max_retries=0: a 5xx must surface at once, not after the client's back-off.
    return openai.OpenAI(
        base_url=str(api.base_url.join("/v1")), api_key="not-checked", max_retries=0, timeout=120,
        http_client=openai.DefaultHttpxClient(trust_env=False),
    )


@pytest.fixture(scope="module")
def client(plugin_api: httpx.Client) -> Iterator[openai.OpenAI]:
    with _client(plugin_api) as oai:
        yield oai


@pytest.fixture(scope="module")
def empty_client(empty_api: httpx.Client) -> Iterator[openai.OpenAI]:
    with _client(empty_api) as oai:
        yield oai


def ask(client: openai.OpenAI, question: str, **options: Any) -> Any:
    return client.chat.completions.create(
        model=options.pop("model", "extractive"), messages=[{"role": "user", "content": question}], **options
    )


def source_line(c: dict[str, Any]) -> str:
    return f"[{c['n']}] {c['title']} ({c['doc_id']}, characters {c['start']}-{c['end']}): “{c['quote']}”"


@pytest.fixture(scope="module")
def mission(client: openai.OpenAI) -> Any:
    return ask(client, MISSION_QUESTION)


# -- models ----------------------------------------------------------------------------------


def test_models_lists_the_generators_default_first(client: openai.OpenAI) -> None:
    models = list(client.models.list())
    ids = [m.id for m in models]
    assert ids[0] == "extractive"  # the default generator
    assert {"extractive", "scripted"} <= set(ids)
    assert len(ids) == len(set(ids))
    for model in models:
        assert model.object == "model" and model.owned_by == "rag" and isinstance(model.created, int)


# -- answers ---------------------------------------------------------------------------------


def test_completion_answers_with_markers_and_a_source_list(mission: Any) -> None:
    assert mission.object == "chat.completion" and mission.id.startswith("chatcmpl-")
    assert mission.model == "extractive"
    assert len(mission.choices) == 1
    choice = mission.choices[0]
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    content = choice.message.content
    for lender in LENDERS:
        assert lender in content, f"{lender} is missing from the reply"
    assert "[1]" in content

    extra = mission.model_extra
    citations, rag = extra["citations"], extra["rag"]
    assert citations and citations == rag["citations"]
    assert rag["answer"] and rag["abstained"] is False and rag["generator"] == "extractive"
    expected = rag["answer"] + "\n\n" + "\n".join(source_line(c) for c in citations)
    assert content == expected
    assert mission.usage.total_tokens == 0


def test_completion_citations_quote_their_documents_exactly(plugin_api: httpx.Client, mission: Any) -> None:
    citations = mission.to_dict()["citations"]
    assert citations and [c["n"] for c in citations] == list(range(1, len(citations) + 1))
    text = plugin_api.get(f"/documents/{SEED_ID}").json()["text"]
    for citation in citations:
        assert set(citation) == CITATION_KEYS
        assert citation["doc_id"] == SEED_ID
        assert citation["quote"] == text[citation["start"]:citation["end"]]


def test_streamed_deltas_add_up_to_the_completion(client: openai.OpenAI, mission: Any) -> None:
    chunks = list(ask(client, MISSION_QUESTION, stream=True))
    assert all(c.object == "chat.completion.chunk" and c.model == "extractive" for c in chunks)
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert chunks[0].choices[0].delta.role == "assistant"
    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(contents) > 2, "the content should arrive in several deltas"
    assert "".join(contents) == mission.choices[0].message.content

    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert last.model_extra["citations"] == mission.model_extra["citations"]


def test_stream_usage_is_sent_when_asked_for(client: openai.OpenAI) -> None:
    chunks = list(ask(client, MISSION_QUESTION, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-2].choices[0].finish_reason == "stop"


def test_the_last_user_message_is_the_question_and_other_fields_are_ignored(
    client: openai.OpenAI, mission: Any
) -> None:
    reply = client.chat.completions.create(
        model="extractive",
        messages=[
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": OFF_TOPIC},
            {"role": "assistant", "content": "I cannot say."},
            {"role": "user", "content": [{"type": "text", "text": MISSION_QUESTION}]},
        ],
        temperature=0.2, max_tokens=50, top_p=0.9, n=1, stop=["\n\n\n"], user="someone",
    )
    assert reply.choices[0].message.content == mission.choices[0].message.content


def test_an_abstention_says_why(client: openai.OpenAI) -> None:
    reply = ask(client, OFF_TOPIC)
    content = reply.choices[0].message.content
    rag = reply.model_extra["rag"]
    assert rag["abstained"] is True and rag["reason"]
    assert content == f"I cannot answer this from the corpus: {rag['reason']}"
    assert reply.model_extra["citations"] == []

    chunks = list(ask(client, OFF_TOPIC, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == content


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_an_unknown_model_is_not_found(client: openai.OpenAI, stream: bool) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        ask(client, MISSION_QUESTION, model="gpt-4o", stream=stream)
    assert raised.value.status_code == 404
    assert raised.value.code == "model_not_found" and raised.value.param == "model"
    assert "gpt-4o" in raised.value.message and "extractive" in raised.value.message


@pytest.mark.parametrize(
    "messages",
    [
        [],
        [{"role": "system", "content": "Answer briefly."}],
        [{"role": "user", "content": MISSION_QUESTION}, {"role": "user", "content": "   "}],
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}],
    ],
    ids=["no-messages", "no-user-message", "empty-user-message", "image-part"],
)
def test_a_conversation_without_a_question_is_422(client: openai.OpenAI, messages: list[Any]) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as raised:
        client.chat.completions.create(model="extractive", messages=messages)
    assert raised.value.status_code == 422
    assert raised.value.param == "messages" and raised.value.type == "invalid_request_error"
    assert raised.value.message


def test_errors_on_v1_have_the_openai_shape(plugin_api: httpx.Client) -> None:
    cases = [
        (plugin_api.post("/v1/chat/completions", content=b"{bad", headers={"content-type": "application/json"}), 422),
        (plugin_api.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}), 422),
        (plugin_api.get("/v1/chat/completions"), 405),
        (plugin_api.get("/v1/no-such-thing"), 404),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("application/json")
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert isinstance(error["message"], str) and error["message"]
        assert error["type"] == "invalid_request_error"
    assert cases[1][0].json()["error"]["param"] == "model"
    assert plugin_api.get("/no-such-thing").json() == {"detail": "Not Found"}  # outside /v1 errors keep their shape


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_server_without_an_index_is_503_pointing_at_ingest(empty_client: openai.OpenAI, stream: bool) -> None:
    with pytest.raises(openai.InternalServerError) as raised:
        ask(empty_client, MISSION_QUESTION, stream=stream)
    assert raised.value.status_code == 503
    assert "rag ingest" in raised.value.message
    assert raised.value.code == "index_not_found"


def test_a_failing_generator_is_502(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as raised:
        ask(client, MISSION_QUESTION, model=FailingGenerator.name)
    assert raised.value.status_code == 502
    assert raised.value.message == f"Error code: 502 - {FailingGenerator.MESSAGE}"  # readable, no JSON
    assert raised.value.code == "generator_failed"


def test_a_generator_failing_mid_stream_raises_in_the_client(client: openai.OpenAI) -> None:
    stream = ask(client, MISSION_QUESTION, model=FailingGenerator.name, stream=True)
    first = next(iter(stream))
    assert first.choices[0].delta.role == "assistant"
    with pytest.raises(openai.APIError) as raised:
        list(stream)
    assert FailingGenerator.MESSAGE in raised.value.message



def test_a_client_leaving_mid_stream_stops_the_generator(
    client: openai.OpenAI, plugin_pipeline: PipelineWithTestGenerators
) -> None:
    stream = ask(client, MISSION_QUESTION, model=EndlessGenerator.name, stream=True)
    assert next(iter(stream)).choices[0].delta.role == "assistant"
    assert not plugin_pipeline.endless.closed.is_set()
    stream.close()
    assert plugin_pipeline.endless.closed.wait(timeout=30), "the generator was not closed"
