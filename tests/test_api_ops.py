"""Operating the API, through a real uvicorn server: API keys, CORS, /metrics, request ids
and JSON access logs, /ready."""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from api.observability import JsonFormatter
from rag.config import Settings
from rag.embedding import Embedder
from rag.pipeline import RagPipeline
from tests.conftest import MISSION_QUESTION, REPO, SEED_ID
from tests.servers import serve_app

KEY = "k-3f9a1c-correct-horse"
OTHER_KEY = "k-second-battery-staple"
WRONG_KEY = "k-wrong-key-77d2e1"
OFF_TOPIC = "Who won the 2018 FIFA World Cup?"
GOOD_ORIGIN = "https://app.example.org"
BAD_ORIGIN = "https://evil.example.net"
HEX_ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture(scope="module")
def index_copy(seed_index: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the seed index: writes let through by a valid key cannot touch the shared one."""
    target = tmp_path_factory.mktemp("ops") / "index"
    shutil.copytree(seed_index, target)
    return target


def _app_client(index_dir: Path, embedder: Embedder, **settings: Any) -> Iterator[httpx.Client]:
    pipeline = RagPipeline(Settings(index_dir=index_dir, **settings), embedder=embedder)
    with serve_app(create_app(pipeline=pipeline)) as client:
        yield client


@pytest.fixture(scope="module")
def open_api(index_copy: Path, embedder: Embedder) -> Iterator[httpx.Client]:
    """No keys, no CORS: the defaults."""
    yield from _app_client(index_copy, embedder)


@pytest.fixture(scope="module")
def keyed_api(index_copy: Path, embedder: Embedder) -> Iterator[httpx.Client]:
    """Keys for writes; reads open."""
    yield from _app_client(index_copy, embedder, api_keys=f"{KEY}, {OTHER_KEY}")


@pytest.fixture(scope="module")
def locked_api(index_copy: Path, embedder: Embedder) -> Iterator[httpx.Client]:
    """Keys for everything (RAG_AUTH_READS), and a browser origin allowed."""
    yield from _app_client(index_copy, embedder, api_keys=KEY, auth_reads=True, cors_origins=GOOD_ORIGIN)


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _metrics(client: httpx.Client, headers: dict[str, str] | None = None) -> dict[str, list[Any]]:
    """Samples by sample name (``rag_answers_total``, ``..._count``), parsed by prometheus_client."""
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def _value(samples: dict[str, list[Any]], name: str, **labels: str) -> float:
    """The value of the one sample ``name`` with these labels; 0 when there is none."""
    found = [s.value for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) <= 1, (name, labels, found)
    return float(found[0]) if found else 0.0


# -- API keys ----------------------------------------------------------------------------------


def test_without_keys_every_endpoint_is_open(open_api: httpx.Client) -> None:
    assert open_api.get("/search", params={"q": "Xiaomi lenders"}).status_code == 200
    assert open_api.post("/ask", json={"question": MISSION_QUESTION}).status_code == 200
    assert open_api.get("/metrics").status_code == 200
    # An invalid write body: refused by validation (or the route), never by a key check.
    assert open_api.post("/documents", json={}).status_code not in (401, 403)


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_writes_without_a_key_are_401_before_routing(keyed_api: httpx.Client, method: str) -> None:
    path = "/documents" if method == "POST" else f"/documents/{SEED_ID}"
    response = keyed_api.request(method, path, json={})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer <key>" in response.json()["detail"]
    assert keyed_api.get(f"/documents/{SEED_ID}").status_code == 200  # the document is still there


def test_a_malformed_authorization_header_is_401(keyed_api: httpx.Client) -> None:
    for header in (f"Basic {KEY}", "Bearer", f"Token {KEY}", KEY):
        response = keyed_api.post("/documents", json={}, headers={"Authorization": header})
        assert response.status_code == 401, header
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json() == {"detail": "the Authorization header must read 'Bearer <key>'"}


def test_a_wrong_key_is_403_and_a_right_key_passes(keyed_api: httpx.Client) -> None:
    wrong = keyed_api.post("/documents", json={}, headers=_bearer(WRONG_KEY))
    assert wrong.status_code == 403
    assert wrong.json() == {"detail": "the API key is not valid"}
    assert "www-authenticate" not in wrong.headers
    # A prefix of a key is not the key.
    assert keyed_api.post("/documents", json={}, headers=_bearer(KEY[:-1])).status_code == 403
    for key in (KEY, OTHER_KEY):  # every configured key works; "bearer" in any case
        for scheme in ("Bearer", "bearer"):
            response = keyed_api.post("/documents", json={}, headers={"Authorization": f"{scheme} {key}"})
            assert response.status_code not in (401, 403), response.text


def test_with_keys_reads_stay_open_unless_auth_reads(keyed_api: httpx.Client) -> None:
    assert keyed_api.get("/search", params={"q": "Xiaomi"}).status_code == 200
    assert keyed_api.post("/ask", json={"question": MISSION_QUESTION}).status_code == 200  # a POST that reads
    chat = {"model": "extractive", "messages": [{"role": "user", "content": MISSION_QUESTION}]}
    assert keyed_api.post("/v1/chat/completions", json=chat).status_code == 200
    assert keyed_api.get("/documents").status_code == 200
    assert keyed_api.get("/metrics").status_code == 200


def test_auth_reads_protects_reads_but_not_health_ready_or_docs(locked_api: httpx.Client) -> None:
    search = locked_api.get("/search", params={"q": "Xiaomi"})
    assert search.status_code == 401
    assert search.headers["www-authenticate"] == "Bearer"
    assert locked_api.get("/search", params={"q": "Xiaomi"}, headers=_bearer(WRONG_KEY)).status_code == 403
    assert locked_api.get("/search", params={"q": "Xiaomi"}, headers=_bearer(KEY)).status_code == 200
    assert locked_api.post("/ask", json={"question": MISSION_QUESTION}).status_code == 401
    assert locked_api.get("/metrics").status_code == 401
    assert locked_api.get("/metrics", headers=_bearer(KEY)).status_code == 200
    for path in ("/health", "/ready", "/openapi.json", "/docs"):
        assert locked_api.get(path).status_code == 200, path


def test_refusals_under_v1_have_openais_error_shape(locked_api: httpx.Client) -> None:
    missing = locked_api.get("/v1/models")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    error = missing.json()["error"]
    assert error["code"] == "missing_api_key" and error["type"] == "invalid_request_error"
    assert "Bearer" in error["message"]
    wrong = locked_api.post("/v1/chat/completions", headers=_bearer(WRONG_KEY),
                            json={"model": "extractive", "messages": [{"role": "user", "content": "hi"}]})
    assert wrong.status_code == 403
    assert wrong.json()["error"]["code"] == "invalid_api_key"
    assert locked_api.get("/v1/models", headers=_bearer(KEY)).status_code == 200


def test_keys_never_reach_logs_or_reprs(keyed_api: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(index_dir=Path("unused"), api_keys=f"{KEY},{OTHER_KEY}")
    assert KEY not in repr(settings) and KEY not in str(settings.model_dump())
    with caplog.at_level(logging.DEBUG):
        for key in (WRONG_KEY, KEY):
            keyed_api.post("/documents", json={}, headers=_bearer(key))
            keyed_api.post("/documents", json={}, headers={"Authorization": f"Basic {key}"})
            keyed_api.get("/search", params={"q": "Xiaomi"}, headers=_bearer(key))
    refusals = [r for r in caplog.records if r.name == "rag.security"]
    assert refusals, "refused requests are logged"
    access = [r for r in caplog.records if r.name == "rag.access"]
    assert len(access) >= 6
    formatter = JsonFormatter()
    for record in caplog.records:
        line = formatter.format(record) + repr(record.__dict__)
        for key in (KEY, WRONG_KEY):
            assert key not in line, record.name


# -- CORS --------------------------------------------------------------------------------------


def _preflight(client: httpx.Client, origin: str, path: str = "/ask") -> httpx.Response:
    return client.options(path, headers={
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    })


def test_cors_allows_only_the_configured_origins(locked_api: httpx.Client, open_api: httpx.Client) -> None:
    allowed = _preflight(locked_api, GOOD_ORIGIN)  # a preflight needs no key, even with auth_reads
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == GOOD_ORIGIN
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    refused = _preflight(locked_api, BAD_ORIGIN)
    assert "access-control-allow-origin" not in refused.headers
    # A refusal still carries the CORS headers, so the page can read why.
    unauthorised = locked_api.get("/search", params={"q": "x"}, headers={"Origin": GOOD_ORIGIN})
    assert unauthorised.status_code == 401
    assert unauthorised.headers["access-control-allow-origin"] == GOOD_ORIGIN
    assert "x-request-id" in unauthorised.headers["access-control-expose-headers"].lower()
    other = locked_api.get("/health", headers={"Origin": BAD_ORIGIN})
    assert "access-control-allow-origin" not in other.headers
    # No RAG_CORS_ORIGINS: no CORS headers at all.
    assert "access-control-allow-origin" not in _preflight(open_api, GOOD_ORIGIN).headers
    assert "access-control-allow-origin" not in open_api.get("/health", headers={"Origin": GOOD_ORIGIN}).headers


# -- metrics -----------------------------------------------------------------------------------


def test_metrics_after_an_answer(open_api: httpx.Client) -> None:
    before = _metrics(open_api)
    # k=4, asked nowhere else: not a search the server remembers, so every stage runs.
    answer = open_api.post("/ask", json={"question": MISSION_QUESTION, "k": 4})
    assert answer.status_code == 200 and answer.json()["abstained"] is False
    assert open_api.get(f"/documents/{SEED_ID}").status_code == 200
    after = _metrics(open_api)

    count = "rag_http_request_duration_seconds_count"
    ask = {"route": "/ask", "method": "POST", "status": "200"}
    assert _value(after, count, **ask) == _value(before, count, **ask) + 1
    assert _value(after, "rag_http_request_duration_seconds_sum", **ask) > 0
    document = {"route": "/documents/{doc_id}", "method": "GET", "status": "200"}
    assert _value(after, count, **document) >= 1
    assert not any(SEED_ID in s.labels.get("route", "") for s in after[count]), "raw paths are not labels"

    for stage in ("embed", "search", "generate"):
        stage_count = _value(after, "rag_stage_duration_seconds_count", stage=stage)
        assert stage_count == _value(before, "rag_stage_duration_seconds_count", stage=stage) + 1, stage
        assert _value(after, "rag_stage_duration_seconds_sum", stage=stage) > 0, stage

    health = open_api.get("/health").json()
    assert _value(after, "rag_index_loaded") == 1
    assert _value(after, "rag_index_documents") == health["documents"] >= 1
    assert _value(after, "rag_index_chunks") == health["chunks"] >= 1
    assert 0 <= _value(after, "rag_index_age_seconds") < 24 * 3600  # built by this test session


def test_a_repeated_question_is_answered_from_memory_and_counted(open_api: httpx.Client) -> None:
    question = {"question": "Where did Zhao Weixing work before joining Xiaomi?", "k": 3}
    first = open_api.post("/ask", json=question)
    before = _metrics(open_api)
    again = open_api.post("/ask", json=question)
    after = _metrics(open_api)
    assert first.status_code == again.status_code == 200
    assert again.json()["answer"] == first.json()["answer"]
    assert again.json()["citations"] == first.json()["citations"]
    for cache in ("searches", "answers"):
        hits = _value(after, "rag_cache_hits_total", cache=cache)
        assert hits == _value(before, "rag_cache_hits_total", cache=cache) + 1, cache
    assert _value(after, "rag_stage_duration_seconds_count", stage="embed") == _value(
        before, "rag_stage_duration_seconds_count", stage="embed"), "nothing was embedded again"


def test_search_observes_embed_and_search_but_not_generate(open_api: httpx.Client) -> None:
    before = _metrics(open_api)
    assert open_api.get("/search", params={"q": "Xiaomi credit"}).status_code == 200
    after = _metrics(open_api)
    name = "rag_stage_duration_seconds_count"
    assert _value(after, name, stage="embed") == _value(before, name, stage="embed") + 1
    assert _value(after, name, stage="search") == _value(before, name, stage="search") + 1
    assert _value(after, name, stage="generate") == _value(before, name, stage="generate")


def test_refusals_are_counted_apart_from_answers(open_api: httpx.Client) -> None:
    labels = {"generator": "extractive"}
    before = _metrics(open_api)
    assert "rag_refusals_total" in before, "the refusal series exists before the first refusal"
    refused = open_api.post("/ask", json={"question": OFF_TOPIC})
    assert refused.status_code == 200 and refused.json()["abstained"] is True
    middle = _metrics(open_api)
    assert _value(middle, "rag_refusals_total", **labels) == _value(before, "rag_refusals_total", **labels) + 1
    assert _value(middle, "rag_answers_total", **labels) == _value(before, "rag_answers_total", **labels) + 1
    # A streamed answer counts too; an answered question moves answers only.
    with open_api.stream("POST", "/ask/stream", json={"question": MISSION_QUESTION}) as stream:
        assert stream.status_code == 200
        assert "event: answer" in stream.read().decode()
    after = _metrics(open_api)
    assert _value(after, "rag_answers_total", **labels) == _value(middle, "rag_answers_total", **labels) + 1
    assert _value(after, "rag_refusals_total", **labels) == _value(middle, "rag_refusals_total", **labels)


def test_refused_requests_are_measured_by_route_template(keyed_api: httpx.Client) -> None:
    assert keyed_api.post("/documents", json={}).status_code == 401
    samples = _metrics(keyed_api)
    name = "rag_http_request_duration_seconds_count"
    assert _value(samples, name, route="/documents", method="POST", status="401") >= 1
    assert keyed_api.get("/no/such/page").status_code == 404
    assert _value(_metrics(keyed_api), name, route="unmatched", method="GET", status="404") == 1


def test_each_app_has_its_own_registry(empty_api: httpx.Client, open_api: httpx.Client) -> None:
    assert open_api.post("/ask", json={"question": MISSION_QUESTION}).status_code == 200
    empty = _metrics(empty_api)
    assert _value(empty, "rag_http_request_duration_seconds_count", route="/ask", method="POST", status="200") == 0
    assert _value(empty, "rag_index_loaded") == 0
    assert "rag_index_age_seconds" not in empty


def test_the_library_does_not_import_prometheus() -> None:
    code = "import sys, rag, rag.pipeline, rag.cli; assert 'prometheus_client' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=120)


# -- request ids and logs ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def probe_api(index_copy: Path, embedder: Embedder) -> Iterator[httpx.Client]:
    """The default app plus a route that logs, run in the thread pool like the real ones."""
    app = create_app(pipeline=RagPipeline(Settings(index_dir=index_copy), embedder=embedder))

    def probe() -> dict[str, str]:
        logging.getLogger("rag.probe").warning("probe ran")
        return {"ok": "yes"}

    app.add_api_route("/probe", probe, methods=["GET"])
    with serve_app(app) as client:
        yield client


@pytest.fixture
def access_lines() -> Iterator[io.StringIO]:
    """What the JSON formatter writes for ``rag.access`` during a test."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("rag.access")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_request_id_is_echoed_or_made(open_api: httpx.Client) -> None:
    given = "req-42.abc_DEF"
    assert open_api.get("/health", headers={"X-Request-ID": given}).headers["x-request-id"] == given
    made = open_api.get("/health").headers["x-request-id"]
    assert HEX_ID.fullmatch(made)
    assert open_api.get("/health").headers["x-request-id"] != made
    for insane in ("a" * 129, "has space", "semi;colon", "ünïcode".encode(), "x\ty"):
        echoed = open_api.get("/health", headers={"X-Request-ID": insane})
        assert HEX_ID.fullmatch(echoed.headers["x-request-id"]), insane
    assert len(open_api.get("/health", headers={"X-Request-ID": "a" * 128}).headers["x-request-id"]) == 128
    # Also on errors and refusals.
    assert open_api.get("/documents/nope", headers={"X-Request-ID": given}).headers["x-request-id"] == given


def test_one_json_access_line_per_request(open_api: httpx.Client, access_lines: io.StringIO) -> None:
    given = "trace-0001"
    response = open_api.get(f"/documents/{SEED_ID}?secret=should-not-appear", headers={"X-Request-ID": given})
    assert response.status_code == 200
    mine = [line for line in _lines(access_lines) if line["request_id"] == given]
    assert len(mine) == 1
    line = mine[0]
    assert {"ts", "level", "request_id", "method", "route", "status", "duration_ms", "client"} <= set(line)
    assert line["method"] == "GET" and line["route"] == "/documents/{doc_id}" and line["status"] == 200
    assert line["level"] == "INFO" and line["client"] == "127.0.0.1"
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert line["ts"].endswith("+00:00")
    assert "should-not-appear" not in access_lines.getvalue()


def test_refusals_get_access_lines_too(keyed_api: httpx.Client, access_lines: io.StringIO) -> None:
    response = keyed_api.post("/documents", json={}, headers={"X-Request-ID": "refused-1"})
    assert response.status_code == 401 and response.headers["x-request-id"] == "refused-1"
    mine = [line for line in _lines(access_lines) if line["request_id"] == "refused-1"]
    assert [(line["route"], line["status"]) for line in mine] == [("/documents", 401)]


def test_log_records_during_a_request_carry_its_id(
    probe_api: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        response = probe_api.get("/probe", headers={"X-Request-ID": "probe-7"})
    assert response.status_code == 200
    probe = [r for r in caplog.records if r.name == "rag.probe"]
    assert [getattr(r, "request_id", None) for r in probe] == ["probe-7"]
    assert json.loads(JsonFormatter().format(probe[0]))["request_id"] == "probe-7"
    access = [r for r in caplog.records if r.name == "rag.access" and getattr(r, "request_id", None) == "probe-7"]
    assert len(access) == 1


def test_served_logs_are_json_lines(tmp_path: Path) -> None:
    """As under `rag serve`: with no logging configured, create_app makes the rag loggers write JSON."""
    code = (
        "import logging; from api.app import create_app; from rag.config import Settings\n"
        f"create_app(Settings(index_dir={str(tmp_path)!r}))\n"
        "logging.getLogger('rag.api').warning('hello %s', 'there')\n"
        "logging.getLogger('rag.access').info('served')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          check=True)
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert [(line["level"], line["logger"], line["message"]) for line in lines] == [
        ("WARNING", "rag.api", "hello there"), ("INFO", "rag.access", "served"),
    ]
    assert all("ts" in line and "request_id" in line for line in lines)


# -- readiness ---------------------------------------------------------------------------------


def test_ready_over_an_index(open_api: httpx.Client) -> None:
    response = open_api.get("/ready")
    assert response.status_code == 200
    health = open_api.get("/health").json()
    assert response.json() == {
        "ready": True, "generation": health["generation"], "documents": health["documents"],
        "chunks": health["chunks"],
    }
    assert health["documents"] >= 1


def test_not_ready_without_an_index(empty_api: httpx.Client) -> None:
    response = empty_api.get("/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["ready"] is False and body["detail"]
    assert empty_api.get("/health").status_code == 200  # alive all the same
