"""The FastAPI application: ``create_app(settings)`` builds it; the lifespan
loads the model (and the index, if one exists) once, before the first request."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from api.routes import answers, documents, system
from rag import __version__
from rag.config import Settings
from rag.errors import RagError
from rag.pipeline import RagPipeline

log = logging.getLogger("rag.api")


def create_app(settings: Settings | None = None, pipeline: RagPipeline | None = None) -> FastAPI:
    """The app; pass ``pipeline`` to share an already loaded one (tests do)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if getattr(app.state, "pipeline", None) is None:
            app.state.pipeline = RagPipeline(settings or Settings())
        try:
            app.state.pipeline.warm_up()
        except RagError as exc:  # e.g. no index yet: serve, and answer 503 until there is one
            log.warning("starting without a usable index: %s", exc)
        yield

    app = FastAPI(
        title="rag",
        version=__version__,
        summary="Question answering over news articles with exact citations.",
        lifespan=lifespan,
    )
    app.state.pipeline = pipeline
    app.include_router(answers.router)
    app.include_router(documents.router)
    app.include_router(system.router)

    @app.exception_handler(RagError)
    async def rag_error(request: Request, exc: RagError) -> JSONResponse:
        return JSONResponse(status_code=exc.http_status, content={"detail": str(exc)})

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        # ASCII-escaped JSON: the echoed input may hold lone surrogates that UTF-8 cannot encode.
        body = json.dumps({"detail": jsonable_encoder(exc.errors())}, ensure_ascii=True, default=str)
        return Response(body, status_code=422, media_type="application/json")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(status_code=500, content={"detail": "internal error; the server log has details"})

    return app
