"""POST /ask and GET /search."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from api.deps import get_pipeline
from api.schemas import AskRequest, AskResponse, Filters, SearchResponse
from rag.pipeline import RagPipeline
from rag.types import SearchFilters

router = APIRouter(tags=["answers"])
Pipeline = Annotated[RagPipeline, Depends(get_pipeline)]


def search_filters(filters: Filters | None) -> SearchFilters | None:
    if filters is None:
        return None
    return SearchFilters(tuple(filters.sources), filters.published_after, filters.published_before, filters.as_of)


@router.post("/ask", response_model=AskResponse)
def ask(body: AskRequest, pipeline: Pipeline) -> dict[str, object]:
    """Answer a question from the corpus; every citation quotes its document exactly."""
    answer = pipeline.ask(body.question, k=body.k, generator=body.generator, filters=search_filters(body.filters))
    return answer.to_dict()


@router.get("/search", response_model=SearchResponse)
def search(
    pipeline: Pipeline,
    q: Annotated[str, Query(min_length=1, description="The query (at most RAG_MAX_QUESTION_CHARS characters).")],
    k: Annotated[int | None, Query(ge=1, le=100)] = None,
    source: Annotated[list[str] | None, Query(description="Keep only these sources.")] = None,
    published_after: Annotated[str | None, Query()] = None,
    published_before: Annotated[str | None, Query()] = None,
    as_of: Annotated[str | None, Query(description="ISO day the question is asked on.")] = None,
) -> dict[str, object]:
    """Passages that best match ``q``, in rank order."""
    try:
        filters = Filters(sources=source or [], published_after=published_after,
                          published_before=published_before, as_of=as_of)
    except ValidationError as exc:  # the query parameters' own checks: a 422 like any other
        raise RequestValidationError([{**e, "loc": ("query", *e["loc"])} for e in exc.errors()]) from None
    passages = pipeline.search(q, k=k, filters=search_filters(filters))
    return {"results": [p.to_dict() for p in passages]}
