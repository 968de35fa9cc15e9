"""The OpenAI-compatible endpoint: GET /v1/models and POST /v1/chat/completions, so that
OpenAI clients and chat front ends can ask the corpus questions.

A model is a generator (``extractive``, ``local``, ...); the question is the last message
with role ``user`` (earlier messages are not read: every question is answered from the
corpus alone). The reply's content is the answer with its ``[n]`` markers, a blank line and
one line per citation, ``[n] Title (doc_id, characters start-end): “quote”``; an abstention
reads ``I cannot answer this from the corpus: <reason>``. Beside the standard fields a
completion carries ``citations`` (the POST /ask citation objects) and ``rag`` (the whole
POST /ask response). ``usage`` is all zeros: tokens are not counted.

Errors on /v1 have OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, with
the status POST /ask would give; an unknown model is a 404 ``model_not_found``, and a
conversation without a (non-empty) user message is a 422, like every invalid body here.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from sse_starlette import EventSourceResponse

from api.deps import get_pipeline
from api.routes.stream import PING_SECONDS, iterate_off_loop, json_line, mid_stream_error
from api.schemas import ChatCompletionOut, ChatCompletionRequest, ModelList, OpenAIErrorOut
from rag.errors import GeneratorFailedError, RagError, UnknownGeneratorError
from rag.generators.registry import available_generators
from rag.pipeline import RagPipeline
from rag.types import Answer, Citation

router = APIRouter(prefix="/v1", tags=["openai"])
Pipeline = Annotated[RagPipeline, Depends(get_pipeline)]

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": OpenAIErrorOut} for status in (404, 422, 502, 503)
}
_MARKER_END = re.compile(r"(?<=\])(?=\s)")  # after an [n] marker, before the space that follows it


# -- errors ------------------------------------------------------------------------------------


def is_openai_path(path: str) -> bool:
    return path == "/v1" or path.startswith("/v1/")


def openai_error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def openai_error(
    status: int, message: str, param: str | None = None, code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """An error response in OpenAI's shape (ASCII JSON: the message may echo a lone surrogate)."""
    body = json.dumps(openai_error_body(status, message, param, code), ensure_ascii=True)
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def error_code(exc: RagError) -> str:
    """``IndexNotFoundError`` -> ``index_not_found``."""
    name = type(exc).__name__.removesuffix("Error") or "rag"
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def rag_error(exc: RagError) -> Response:
    return openai_error(exc.http_status, str(exc), code=error_code(exc))


# -- replies -----------------------------------------------------------------------------------


def source_line(citation: Citation) -> str:
    """``[n] Title (doc_id, characters start-end): “quote”``, on one line."""
    title, quote = " ".join(citation.title.split()), " ".join(citation.quote.split())
    return f"[{citation.n}] {title} ({citation.doc_id}, characters {citation.start}-{citation.end}): “{quote}”"


def content_pieces(answer: Answer) -> list[str]:
    """The reply's content in the pieces a stream sends: the answer cut after each ``[n]``
    marker (so roughly sentence by sentence), then the source list line by line. Joined,
    they are the content of the non-streaming reply."""
    if answer.answer is None:
        return [f"I cannot answer this from the corpus: {answer.reason or 'no reason was given'}"]
    pieces = [p for p in _MARKER_END.split(answer.answer) if p]
    pieces += [("\n\n" if i == 0 else "\n") + source_line(c) for i, c in enumerate(answer.citations)]
    return pieces


def _completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def _usage() -> dict[str, int]:
    return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


def _completion(answer: Answer, model: str) -> dict[str, Any]:
    return {
        "id": _completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "".join(content_pieces(answer))},
            "finish_reason": "stop",
            "logprobs": None,
        }],
        "usage": _usage(),
        "citations": [c.to_dict() for c in answer.citations],
        "rag": answer.to_dict(),
    }


async def _chunks(pieces: Iterator[str | Answer], model: str, include_usage: bool) -> AsyncIterator[str]:
    """The ``data:`` payloads of a streamed completion, ``[DONE]`` last."""
    head = {"id": _completion_id(), "object": "chat.completion.chunk", "created": int(time.time()), "model": model}

    def chunk(delta: dict[str, str], finish_reason: str | None = None, **extra: Any) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return json_line({**head, "choices": [choice], **extra})

    yield chunk({"role": "assistant", "content": ""})
    answer: Answer | None = None
    try:
        async for piece in iterate_off_loop(pieces):
            if isinstance(piece, Answer):  # raw pieces are skipped: only the checked answer is sent
                answer = piece
        if answer is None:
            raise GeneratorFailedError(f"generator {model!r} ended without an answer")
    except Exception as exc:
        message, status = mid_stream_error(exc, "/v1/chat/completions")
        code = error_code(exc) if isinstance(exc, RagError) else None
        yield json_line(openai_error_body(status, message, code=code))
        return
    for text in content_pieces(answer):
        yield chunk({"content": text})
    yield chunk({}, "stop", citations=[c.to_dict() for c in answer.citations])
    if include_usage:
        yield json_line({**head, "choices": [], "usage": _usage()})
    yield "[DONE]"


# -- routes ------------------------------------------------------------------------------------


@router.get("/models", response_model=ModelList)
def list_models(pipeline: Pipeline) -> dict[str, Any]:
    """The generators, as OpenAI models; the default generator first. ``created`` is 0 (unknown)."""
    names = list(available_generators())
    default = pipeline.settings.generator
    if default in names:
        names = [default, *(n for n in names if n != default)]
    return {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "rag"} for n in names]}


@router.post(
    "/chat/completions",
    response_model=ChatCompletionOut,
    responses={
        200: {"description": "A chat.completion, or with stream=true server-sent chat.completion.chunk events.",
              "content": {"text/event-stream": {}}},
        **ERRORS,
    },
)
def chat_completions(body: ChatCompletionRequest, pipeline: Pipeline) -> Response | dict[str, Any]:
    """Answer the last user message from the corpus with the generator named by ``model``.

    With ``stream: true`` the reply is OpenAI's stream of ``chat.completion.chunk`` events:
    first a delta with the role, then the content, then a chunk with ``finish_reason: "stop"``
    and the ``citations`` field, then ``[DONE]``. An LLM's raw tokens are checked against the
    sources and rewritten only once the whole answer is there, so the stream does not relay
    them: it waits for the checked answer and then sends its content in a few deltas (cut
    after each ``[n]`` marker, then one per source line), the same text the non-streaming reply
    holds. A failure after the stream began arrives as a ``data: {"error": {...}}`` event, which
    OpenAI clients raise.
    """
    try:
        pipeline.generator(body.model)  # loads it once; an unknown name fails here, naming the known ones
    except UnknownGeneratorError as exc:
        return openai_error(404, str(exc), param="model", code="model_not_found")
    asked = next((m for m in reversed(body.messages) if m.role == "user"), None)
    try:
        question = "" if asked is None else asked.text()
    except ValueError as exc:
        return openai_error(422, str(exc), param="messages", code="invalid_value")
    if not question.strip():
        problem = "has no message with role 'user'" if asked is None else "ends with an empty user message"
        return openai_error(422, f"the conversation {problem}; the last user message is the question",
                            param="messages", code="invalid_value")
    if not body.stream:
        return _completion(pipeline.ask(question, generator=body.model), body.model)
    # Asked before the response exists, so that a bad request still gets its error status.
    pieces = pipeline.ask_stream(question, generator=body.model)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return EventSourceResponse(_chunks(pieces, body.model, include_usage), ping=PING_SECONDS, sep="\n")
