"""Operating the API: a request id on every request and every log line, one JSON access-log
line per request, and Prometheus metrics (``GET /metrics``).

- ``RequestContextMiddleware`` takes the client's ``X-Request-ID`` when it is a sane token
  (at most 128 characters of ``[A-Za-z0-9._-]``) or makes one (a uuid4 in hex), returns it
  in the ``X-Request-ID`` response header, keeps it in a context variable for the request's
  duration, and logs one line on ``rag.access`` (method, route template, path without the
  query string, status, duration, client address; never a header) while observing the
  request-latency histogram.
- ``install_request_id_factory`` makes every log record carry ``request_id`` (``None``
  outside a request), whatever logger or handler it goes to.
- ``configure_logging`` writes the ``rag`` loggers as JSON lines on stderr, unless logging
  has been configured already.
- ``Metrics`` owns one ``CollectorRegistry`` per app, so several apps in one process
  (tests) do not share or clash over series. The library reports stage timings and answers
  through the pipeline's optional ``on_stage``/``on_answer`` hooks; index size and age are
  read at scrape time.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import IO, Any

from prometheus_client import CollectorRegistry, Counter, GCCollector, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.datastructures import Headers, MutableHeaders
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag.errors import RagError
from rag.pipeline import RagPipeline
from rag.types import Answer

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_request_id: ContextVar[str | None] = ContextVar("rag_request_id", default=None)

access_log = logging.getLogger("rag.access")

# -- request ids and logging ----------------------------------------------------------------


def current_request_id() -> str | None:
    """The id of the request being served by this task or thread, if any."""
    return _request_id.get()


def request_id_from(headers: Headers) -> str:
    """The client's ``X-Request-ID`` if it is a sane token, else a fresh one."""
    given = headers.get(REQUEST_ID_HEADER)
    if given is not None and _SANE_REQUEST_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


class _RequestIdRecordFactory:
    """Wraps the log-record factory so that every record gets ``request_id``."""

    def __init__(self, previous: Callable[..., logging.LogRecord]):
        self.previous = previous

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.previous(*args, **kwargs)
        record.request_id = _request_id.get()
        return record


def install_request_id_factory() -> None:
    """Make every log record carry ``request_id``; calling it again changes nothing."""
    current = logging.getLogRecordFactory()
    if not isinstance(current, _RequestIdRecordFactory):
        logging.setLogRecordFactory(_RequestIdRecordFactory(current))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, request_id, the fields a record
    carries in ``extra={"fields": {...}}`` (the access log's), and exc for a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        # ASCII: a path or message may hold a lone surrogate that UTF-8 cannot encode.
        return json.dumps(line, ensure_ascii=True, default=str)


def configure_logging(level: int = logging.INFO, stream: IO[str] | None = None) -> bool:
    """Write the ``rag`` loggers (``rag.access`` and the rest) as JSON lines on ``stream``
    (stderr), unless a handler already serves them (logging configured by the host, or a
    test runner): then change nothing. Returns whether a handler was installed."""
    install_request_id_factory()
    logger = logging.getLogger("rag")
    if logger.hasHandlers():
        return False
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    return True


# -- metrics --------------------------------------------------------------------------------

_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"


class CacheCollector(Collector):
    """Hits and misses of the pipeline's memory of recent searches and answers (read at scrape
    time; an answer hit is also counted as a search hit, since asking searches first)."""

    def __init__(self, pipeline_of: Callable[[], RagPipeline | None]):
        self.pipeline_of = pipeline_of

    def describe(self) -> Iterator[Metric]:
        yield from self._families(None)

    def collect(self) -> Iterator[Metric]:
        yield from self._families(self.pipeline_of())

    @staticmethod
    def _families(pipeline: RagPipeline | None) -> Iterator[Metric]:
        hits = CounterMetricFamily("rag_cache_hits", "Searches and answers served from memory.", labels=["cache"])
        misses = CounterMetricFamily("rag_cache_misses", "Searches and answers computed.", labels=["cache"])
        if pipeline is not None:
            for name, cache in (("searches", pipeline.recent_searches), ("answers", pipeline.recent_answers)):
                hits.add_metric([name], cache.hits)
                misses.add_metric([name], cache.misses)
        yield hits
        yield misses


class IndexCollector(Collector):
    """Index size and age, read from the pipeline's committed generation at scrape time
    (so a generation committed by another process shows on the next scrape)."""

    def __init__(self, pipeline_of: Callable[[], RagPipeline | None]):
        self.pipeline_of = pipeline_of

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        pipeline = self.pipeline_of()
        try:
            snapshot = pipeline.snapshot() if pipeline is not None else None
        except RagError:  # no index yet, or one this model cannot read: /ready says why
            snapshot = None
        if snapshot is None:
            yield from self._families(loaded=0, documents=0, chunks=0)
            return
        age = None
        created = snapshot.manifest.get("created_at")
        if isinstance(created, str):
            try:
                made = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
                age = max(0.0, time.time() - made.timestamp())
            except ValueError:
                pass
        yield from self._families(1, len(snapshot.documents), len(snapshot.chunks), age)

    @staticmethod
    def _families(
        loaded: int | None = None, documents: int | None = None, chunks: int | None = None,
        age: float | None = None,
    ) -> Iterator[Metric]:
        yield GaugeMetricFamily("rag_index_loaded", "1 when a committed index is loaded, else 0.", value=loaded)
        yield GaugeMetricFamily("rag_index_documents", "Documents in the loaded index.", value=documents)
        yield GaugeMetricFamily("rag_index_chunks", "Chunks in the loaded index.", value=chunks)
        yield GaugeMetricFamily(
            "rag_index_age_seconds", "Seconds since the loaded index generation was committed.", value=age
        )


class Metrics:
    """The app's metrics, in a registry of its own. ``attach(pipeline)`` sets the pipeline's
    hooks; ``detach`` clears them again (when they are still this object's)."""

    def __init__(self, pipeline_of: Callable[[], RagPipeline | None]):
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "rag_http_request_duration_seconds", "HTTP request latency, by route template, method and status.",
            ["route", "method", "status"], buckets=_HTTP_BUCKETS, registry=self.registry,
        )
        self.stages = Histogram(
            "rag_stage_duration_seconds",
            "Time per pipeline stage: embed (query embedding), search (the rest of retrieval), generate.",
            ["stage"], buckets=_STAGE_BUCKETS, registry=self.registry,
        )
        self.answers = Counter("rag_answers", "Answers given, refusals included.", ["generator"],
                               registry=self.registry)
        self.refusals = Counter("rag_refusals", "Answers that abstained (answer null).", ["generator"],
                                registry=self.registry)
        self.registry.register(IndexCollector(pipeline_of))
        self.registry.register(CacheCollector(pipeline_of))
        ProcessCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stages.labels(stage=stage).observe(seconds)

    def observe_answer(self, answer: Answer) -> None:
        self.answers.labels(generator=answer.generator).inc()
        if answer.abstained:
            self.refusals.labels(generator=answer.generator).inc()

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route=route, method=method, status=str(status)).observe(seconds)

    def attach(self, pipeline: RagPipeline) -> None:
        pipeline.on_stage = self.observe_stage
        pipeline.on_answer = self.observe_answer
        # Series that exist from the start, so that rates and ratios are defined before the first answer.
        for stage in ("embed", "search", "generate"):
            self.stages.labels(stage=stage)
        self.answers.labels(generator=pipeline.settings.generator)
        self.refusals.labels(generator=pipeline.settings.generator)

    def detach(self, pipeline: RagPipeline) -> None:
        if pipeline.on_stage == self.observe_stage:
            pipeline.on_stage = None
        if pipeline.on_answer == self.observe_answer:
            pipeline.on_answer = None


# -- the middleware -------------------------------------------------------------------------


def route_template(scope: Scope) -> str:
    """The template of the route that served (or would serve) the request, e.g.
    ``/documents/{doc_id}``; requests answered before routing (refused by the key check)
    are matched here. Raw paths would give every document its own series."""
    route = scope.get("route")
    if route is None:
        _, route = _match_route(getattr(getattr(scope.get("app"), "router", None), "routes", ()), scope)
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return str(template) if template else UNMATCHED_ROUTE


def _match_route(routes: Iterable[Any], scope: Scope) -> tuple[Match, Any]:
    """The route that fully matches, else the first that matches all but the method, looking
    into included routers (FastAPI keeps each as one entry holding ``original_router``)."""
    partial: tuple[Match, Any] = (Match.NONE, None)
    for candidate in routes:
        included = getattr(candidate, "original_router", None)
        if included is not None:
            match, route = _match_route(included.routes, scope)
        else:
            match, route = candidate.matches(scope)[0], candidate
        if match == Match.FULL:
            return match, route
        if match == Match.PARTIAL and partial[1] is None:
            partial = (match, route)
    return partial


class RequestContextMiddleware:
    """Request id, access log and latency metrics for every HTTP request (pure ASGI, so
    it also sees requests refused before routing). The log line and the observation are
    made just before the last body message goes out, so a client that has its response
    can already find both."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = request_id_from(Headers(scope=scope))
        scope.setdefault("state", {})["request_id"] = request_id
        token = _request_id.set(request_id)
        status = 0
        finished = False

        def finish(final_status: int) -> None:
            nonlocal finished
            if finished:
                return
            finished = True
            seconds = time.perf_counter() - started
            method = scope["method"] if scope["method"] in _METHODS else "other"
            route = route_template(scope)
            self.metrics.observe_request(route, method, final_status, seconds)
            client = scope.get("client")
            access_log.info(
                "%s %s %s", method, route, final_status,
                extra={"fields": {
                    "method": method,
                    "route": route,
                    "path": scope["path"],  # never the query string
                    "status": final_status,
                    "duration_ms": round(seconds * 1000, 2),
                    "client": client[0] if client else None,
                }},
            )

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                finish(status)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            # The error handler outside this middleware answers 500 and logs the traceback;
            # the request id stays set for that log line (each request runs in its own task).
            finish(status or 500)
            raise
        finish(status or 500)  # a client that went away before the last body message
        _request_id.reset(token)
