"""POST /ask/stream: an answer as server-sent events.

Events, each ``data`` one line of JSON:

- ``event: token``, ``data: {"text": "..."}`` for each piece of answer text as the generator
  produces it (the extractive generator's cited sentences, an LLM's raw tokens);
- ``event: answer``, ``data:`` the POST /ask response object, once, last: the checked answer,
  whose text and citations may differ from the raw pieces of an LLM;
- ``event: error``, ``data: {"detail": "...", "status": 502}`` instead of the answer when the
  generator fails mid-stream; the stream ends after it.

A request that cannot be answered at all (invalid body, unknown generator, no index) fails
before the stream starts, with the same JSON error and status code as POST /ask.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any, TypeVar, cast

import anyio
from fastapi import APIRouter, Depends
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from api.deps import get_pipeline
from api.routes.answers import search_filters
from api.schemas import AskRequest, ErrorOut
from rag.errors import RagError
from rag.pipeline import RagPipeline
from rag.types import Answer

log = logging.getLogger("rag.api")
router = APIRouter(tags=["answers"])
Pipeline = Annotated[RagPipeline, Depends(get_pipeline)]
T = TypeVar("T")

PING_SECONDS = 10  # keeps proxies from closing the connection while a slow model thinks
INTERNAL_ERROR = "internal error; the server log has details"


def json_line(data: Any) -> str:
    """``data`` as one line of ASCII JSON: SSE splits data at line breaks, and escaping
    keeps a lone surrogate echoed from the question from breaking the UTF-8 encoding."""
    return json.dumps(data, ensure_ascii=True, separators=(",", ":"))


async def iterate_off_loop(iterator: Iterator[T]) -> AsyncIterator[T]:
    """Items of a blocking iterator, each ``next()`` run in the thread pool. The iterator is
    closed however iteration ends, a client going away included, so that a generator
    stops its work (an LLM request, say) instead of running on for nobody."""
    done = object()
    try:
        while True:
            item = await run_in_threadpool(next, iterator, done)
            if item is done:
                return
            yield cast(T, item)
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            with anyio.CancelScope(shield=True):  # also when the stream was cancelled
                await run_in_threadpool(close)


def mid_stream_error(exc: Exception, path: str) -> tuple[str, int]:
    """The message and status to report for an exception raised after the stream began."""
    if isinstance(exc, RagError):
        return str(exc), exc.http_status
    log.error("unhandled error while streaming %s", path, exc_info=exc)
    return INTERNAL_ERROR, 500


async def _events(pieces: Iterator[str | Answer]) -> AsyncIterator[ServerSentEvent]:
    try:
        async for piece in iterate_off_loop(pieces):
            if isinstance(piece, Answer):
                yield ServerSentEvent(json_line(piece.to_dict()), event="answer")
            else:
                yield ServerSentEvent(json_line({"text": piece}), event="token")
    except Exception as exc:
        detail, status = mid_stream_error(exc, "/ask/stream")
        yield ServerSentEvent(json_line({"detail": detail, "status": status}), event="error")


@router.post(
    "/ask/stream",
    response_class=EventSourceResponse,
    responses={
        200: {"description": "Server-sent events: token*, then answer (or error).",
              "content": {"text/event-stream": {}}},
        422: {"model": ErrorOut},
        503: {"model": ErrorOut},
    },
)
def ask_stream(body: AskRequest, pipeline: Pipeline) -> EventSourceResponse:
    """Answer a question as server-sent events: ``token`` events with text as it is produced,
    then one ``answer`` event holding the POST /ask response (see the module docs)."""
    # Runs (in the thread pool) before the response exists: a bad request gets a JSON error.
    pieces = pipeline.ask_stream(
        body.question, k=body.k, generator=body.generator, filters=search_filters(body.filters)
    )
    return EventSourceResponse(_events(pieces), ping=PING_SECONDS)
