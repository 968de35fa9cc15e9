"""The FastAPI application: ``create_app(settings)`` builds it; the lifespan
loads the model (and the index, if one exists) once, before the first request.

``GET /`` serves the web page (``api/routes/web.py``). Around the routes: request ids, JSON
access logs and Prometheus metrics (``api/observability.py``), CORS (``RAG_CORS_ORIGINS``) and
API keys (``api/security.py``)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware

from api.limits import BodySizeLimit
from api.observability import REQUEST_ID_HEADER, Metrics, RequestContextMiddleware, configure_logging
from api.routes import answers, documents, openai_compat, stream, system, web
from api.routes.openai_compat import is_openai_path, openai_error
from api.security import ALWAYS_OPEN, ApiKeyMiddleware
from rag import __version__
from rag.config import Settings
from rag.errors import RagError
from rag.pipeline import RagPipeline

log = logging.getLogger("rag.api")


def create_app(settings: Settings | None = None, pipeline: RagPipeline | None = None) -> FastAPI:
    """The app; pass ``pipeline`` to share an already loaded one (tests do)."""
    settings = pipeline.settings if pipeline is not None else (settings or Settings())
    if pipeline is None and settings.embed_threads is None:
        # A server runs requests side by side: each embeds with one thread, so that two of them
        # share two cores instead of four threads contending for them. (Queries embed and
        # FAISS searches on one thread everywhere.)
        settings = settings.model_copy(update={"embed_threads": 1})

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if getattr(app.state, "pipeline", None) is None:
            app.state.pipeline = RagPipeline(settings)
        served: RagPipeline = app.state.pipeline
        app.state.metrics.attach(served)
        try:
            served.embedder.embed_query("warm up")  # the model: /ready answers 503 until it is loaded
            app.state.model_loaded = True
            served.warm_up()
        except RagError as exc:  # e.g. no index yet: serve, and answer 503 until there is one
            log.warning("starting without a usable index: %s", exc)
        try:
            yield
        finally:
            app.state.metrics.detach(served)

    app = FastAPI(
        title="rag",
        version=__version__,
        summary="Question answering over news articles with exact citations.",
        lifespan=lifespan,
    )
    app.state.pipeline = pipeline
    app.state.settings = settings
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    app.include_router(answers.router)
    app.include_router(stream.router)
    app.include_router(documents.router)
    app.include_router(system.router)
    app.include_router(openai_compat.router)
    app.include_router(web.router)

    # Added last, so outermost (in this order): request id, access log and latency; CORS, so that
    # preflights and refusals carry its headers; the API-key check, before any body is read.
    configure_logging()
    app.state.model_loaded = False
    app.state.metrics = Metrics(lambda: getattr(app.state, "pipeline", None))
    # The web page's files hold no data: the page itself asks for a key when reads need one.
    open_paths = ALWAYS_OPEN | web.PAGE_PATHS | {
        path for path in (app.docs_url, app.redoc_url, app.openapi_url, app.swagger_ui_oauth2_redirect_url) if path
    }
    app.add_middleware(ApiKeyMiddleware, keys=settings.api_keys, auth_reads=settings.auth_reads,
                       open_paths=open_paths)
    origins = [origin.strip() for origin in settings.cors_origins.split(",") if origin.strip()]
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=["*"] if "*" in origins else origins,
            allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", REQUEST_ID_HEADER],
            expose_headers=[REQUEST_ID_HEADER],
        )
    app.add_middleware(RequestContextMiddleware, metrics=app.state.metrics)

    # Errors are {"detail": ...}, except on /v1, where OpenAI clients expect {"error": {...}}.

    @app.exception_handler(RagError)
    async def rag_error(request: Request, exc: RagError) -> Response:
        if is_openai_path(request.url.path):
            return openai_compat.rag_error(exc)
        return JSONResponse(status_code=exc.http_status, content={"detail": str(exc)})

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if is_openai_path(request.url.path):
            return openai_error(exc.status_code, str(exc.detail), headers=exc.headers)
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        if is_openai_path(request.url.path):
            errors = [(".".join(str(part) for part in e["loc"][1:]), str(e["msg"])) for e in exc.errors()]
            message = "; ".join(f"{where}: {msg}" if where else msg for where, msg in errors)
            param = errors[0][0] if errors else ""
            return openai_error(422, message or "invalid request", param=param or None, code="invalid_request")
        # ASCII-escaped JSON: the echoed input may hold lone surrogates that UTF-8 cannot encode.
        body = json.dumps({"detail": jsonable_encoder(exc.errors())}, ensure_ascii=True, default=str)
        return Response(body, status_code=422, media_type="application/json")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        if is_openai_path(request.url.path):
            return openai_error(500, "internal error; the server log has details")
        return JSONResponse(status_code=500, content={"detail": "internal error; the server log has details"})

    return app
