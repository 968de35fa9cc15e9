"""GET /documents and GET /documents/{doc_id}."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from api.deps import get_pipeline
from api.schemas import DocumentOut, DocumentPage, DocumentSummary, ErrorOut
from rag.pipeline import RagPipeline

router = APIRouter(tags=["documents"])
Pipeline = Annotated[RagPipeline, Depends(get_pipeline)]


@router.get("/documents", response_model=DocumentPage)
def list_documents(
    pipeline: Pipeline,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, object]:
    """A page of the stored articles (without their text), in id order."""
    total, page = pipeline.documents(offset, limit)
    docs = [{k: v for k, v in a.to_dict().items() if k in DocumentSummary.model_fields} for a in page]
    return {"total": total, "offset": offset, "limit": limit, "documents": docs}


@router.get("/documents/{doc_id:path}", response_model=DocumentOut, responses={404: {"model": ErrorOut}})
def get_document(doc_id: str, pipeline: Pipeline) -> dict[str, object]:
    """One article's cleaned text, the text that citations' offsets point into."""
    return pipeline.document(doc_id).to_dict()
