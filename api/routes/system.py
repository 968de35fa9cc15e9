"""GET /health (alive), GET /ready (able to answer), GET /metrics (Prometheus) and GET /generators."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import get_pipeline
from api.schemas import GeneratorList, Health, NotReady, Ready
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


@router.get("/ready", response_model=Ready, responses={503: {"model": NotReady}})
def ready(request: Request, pipeline: Pipeline) -> Response | dict[str, object]:
    """Able to answer: 200 once the embedding model and a committed index are loaded,
    503 with the reason until then (for load balancers and orchestrators)."""
    if not getattr(request.app.state, "model_loaded", False):
        return _not_ready("the embedding model is not loaded yet")
    try:
        snapshot = pipeline.snapshot()
    except RagError as exc:
        return _not_ready(str(exc))
    return {
        "ready": True,
        "generation": snapshot.generation,
        "documents": len(snapshot.documents),
        "chunks": len(snapshot.chunks),
    }


def _not_ready(reason: str) -> Response:
    return JSONResponse(status_code=503, content={"ready": False, "detail": reason})


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"description": "Prometheus text format.", "content": {CONTENT_TYPE_LATEST: {}}}},
)
def metrics(request: Request) -> Response:
    """Request latency by route, time per stage (embed, search, generate), answers and
    refusals, index size and age, in Prometheus' text format."""
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/generators", response_model=GeneratorList)
def generators(pipeline: Pipeline) -> dict[str, object]:
    """The installed answer generators and the default one."""
    found = available_generators()
    return {
        "default": pipeline.settings.generator,
        "generators": [{"name": name, "target": ep.value} for name, ep in found.items()],
    }
