"""GET /health and GET /generators."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from api.deps import get_pipeline
from api.schemas import GeneratorList, Health
from rag.errors import RagError
from rag.generators.registry import available_generators
from rag.pipeline import RagPipeline

router = APIRouter(tags=["system"])
Pipeline = Annotated[RagPipeline, Depends(get_pipeline)]


@router.get("/health", response_model=Health)
def health(pipeline: Pipeline) -> dict[str, object]:
    """Alive; says whether an index is loaded and how large it is."""
    try:
        snapshot = pipeline.snapshot()
    except RagError:
        return {"status": "ok", "index": False}
    return {
        "status": "ok",
        "index": True,
        "documents": len(snapshot.documents),
        "chunks": len(snapshot.chunks),
        "generation": snapshot.generation,
    }


@router.get("/generators", response_model=GeneratorList)
def generators(pipeline: Pipeline) -> dict[str, object]:
    """The installed answer generators and the default one."""
    found = available_generators()
    return {
        "default": pipeline.settings.generator,
        "generators": [{"name": name, "target": ep.value} for name, ep in found.items()],
    }
