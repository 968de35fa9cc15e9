"""Writing documents over HTTP (POST, PUT, DELETE /documents) on a real server, and
every kind of bad input: each gets a clear 4xx and nothing stored is lost."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from rag.config import Settings
from rag.embedding import Embedder
from rag.pipeline import RagPipeline
from tests.conftest import LENDERS, MISSION_QUESTION, SEED_ID, SEEDS
from tests.processes import run_rag
from tests.servers import serve_app

MAX_CHARS = 20_000
MAX_BYTES = 200_000
LIBRARY = {
    "id": "library", "title": "Harbour town opens a floating library", "source": "Kelmsby Gazette",
    "published_at": "2024-05-04",
    "text": "The town of Kelmsby opened a floating library on an old ferry on Saturday. "
            "The ferry holds twelve thousand books and visits four villages along the estuary each week.",
}
VOLCANO_TXT = (b"Glacier volcano Brennholt erupts\n\nThe Brennholt volcano under the Vatnajokull glacier "
               b"erupted on Tuesday night. Ash from Brennholt closed two airports in the north for a day.\n")


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Path:
    index_dir = tmp_path_factory.mktemp("api-writes") / "index"
    RagPipeline(Settings(index_dir=index_dir), embedder=embedder).ingest([SEEDS])
    return index_dir


@pytest.fixture(scope="module")
def api(index_dir: Path, embedder: Embedder) -> Iterator[httpx.Client]:
    settings = Settings(index_dir=index_dir, max_document_chars=MAX_CHARS, max_request_bytes=MAX_BYTES)
    with serve_app(create_app(pipeline=RagPipeline(settings, embedder=embedder))) as client:
        yield client


def _ids(api: httpx.Client) -> set[str]:
    return {d["id"] for d in api.get("/documents", params={"limit": 500}).json()["documents"]}


def _unchanged(api: httpx.Client, before: set[str], response: httpx.Response, status: int, *fragments: str) -> None:
    """The request was refused with ``status`` and a message holding ``fragments``; nothing changed."""
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    for fragment in fragments:
        assert fragment in str(detail)
    assert _ids(api) == before


def test_post_json_records_then_put_a_correction_then_delete(api: httpx.Client) -> None:
    response = api.post("/documents", json={"documents": [LIBRARY, {"title": "No id", "text": "Pelicans nest."}]})
    assert response.status_code == 200, response.text
    body = response.json()
    content_id = next(i for i in body["ids"] if i != "library")
    assert body["ids"] == ["library", content_id] and body["added"] == body["ids"] and body["chunks_embedded"] == 2
    assert api.get("/documents/library").json()["text"] == LIBRARY["text"]

    corrected = LIBRARY | {"text": LIBRARY["text"].replace("twelve thousand", "nine thousand")}
    put = api.put("/documents/library", json={k: v for k, v in corrected.items() if k != "id"})
    assert put.status_code == 200 and put.json()["updated"] == ["library"] and put.json()["chunks_embedded"] == 1
    answer = api.post("/ask", json={"question": "How many books does the floating library ferry hold?"}).json()
    cited = [c for c in answer["citations"] if c["doc_id"] == "library"]
    assert cited and all(corrected["text"][c["start"]:c["end"]] == c["quote"] for c in cited)
    assert "nine thousand" in answer["answer"]

    again = api.post("/documents", json={"documents": [corrected]})
    assert again.json()["unchanged"] == ["library"] and again.json()["chunks_embedded"] == 0

    deleted = api.delete("/documents/library")
    assert deleted.status_code == 200 and deleted.json()["deleted"] == ["library"]
    assert api.get("/documents/library").status_code == 404
    results = api.get("/search", params={"q": "floating library ferry books", "k": 10}).json()["results"]
    assert all(r["doc_id"] != "library" for r in results)
    assert api.delete(f"/documents/{content_id}").status_code == 200


def test_put_creates_a_document_with_201(api: httpx.Client) -> None:
    chess = {"title": "Chess final", "text": "Dunmore girl wins chess final."}
    response = api.put("/documents/notes/chess", json=chess)
    assert response.status_code == 201 and response.json()["added"] == ["notes/chess"]
    assert api.get("/documents/notes/chess").json()["title"] == "Chess final"
    assert api.delete("/documents/notes/chess").status_code == 200


def test_the_listing_finds_articles_by_title_source_or_id(api: httpx.Client) -> None:
    heron = {"id": "birds/heron", "title": "Grey herons return to the Kelmsby marsh", "source": "Estuary Post",
             "text": "Forty pairs of grey herons nested in the marsh this spring."}
    ferry = {"id": "ferry-times", "title": "Ferry timetable changes", "source": "Kelmsby Gazette",
             "text": "The winter ferry timetable starts on Monday."}
    assert api.post("/documents", json={"documents": [heron, ferry]}).status_code == 200

    def found(**params: object) -> tuple[int, list[str]]:
        response = api.get("/documents", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        return page["total"], [d["id"] for d in page["documents"]]

    assert found(q="HERONS") == (1, ["birds/heron"])  # title, any case
    assert found(q="kelmsby") == (2, ["birds/heron", "ferry-times"])  # a title and a source
    assert found(q="gazette ferry") == (1, ["ferry-times"])  # every word, in any field
    assert found(q="birds/") == (1, ["birds/heron"])  # the id
    assert found(q="kelmsby", offset=1, limit=1) == (2, ["ferry-times"])  # paging counts the matches
    assert found(q="heron ferry") == (0, [])
    total, ids = found(q="   ")  # only spaces: no filter
    assert total == len(ids) >= 3 and SEED_ID in ids
    assert api.get("/documents", params={"q": "x" * 1001}).status_code == 422
    for doc_id in ("birds/heron", "ferry-times"):
        assert api.delete(f"/documents/{doc_id}").status_code == 200


def test_uploaded_files_are_stored_and_unreadable_ones_reported(api: httpx.Client) -> None:
    files = [
        ("files", ("../../etc/volcano.txt", VOLCANO_TXT, "text/plain")),  # a path: only the name is used
        ("files", ("C:\\reports\\latin.txt", "Café owners protest\n\nThe café owners of Lyon protested "
                   "on Monday against the new terrace tax.".encode("cp1252"), "text/plain")),
        ("files", ("blob.txt", b"\x00\x01\x02\x03binary", "application/octet-stream")),
        ("files", ("empty.md", b"", "text/markdown")),
        ("files", ("feed.jsonl", b'{"id": "wire-1", "text": "Wire story one about tides."}\n{broken\n'
                   b'{"id": "wire-2", "text": "Wire story two about tides."}\n', "application/x-ndjson")),
        ("files", ("notes.exe", b"MZ", "application/octet-stream")),
    ]
    response = api.post("/documents", files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ids"] == ["volcano", "latin", "wire-1", "wire-2"]
    problems = {p["where"]: p["message"] for p in body["problems"]}
    assert problems == {
        "blob.txt": "looks like a binary file (contains NUL bytes), not text",
        "empty.md": "file is empty",
        "feed.jsonl:2": problems["feed.jsonl:2"],
        "notes.exe": "unsupported file type .exe",
    }
    assert problems["feed.jsonl:2"].startswith("malformed JSON")
    latin = api.get("/documents/latin").json()  # Windows-1252 bytes, decoded
    assert latin["title"] == "Café owners protest" and "The café owners of Lyon" in latin["text"]
    for doc_id in body["ids"]:
        assert api.delete(f"/documents/{doc_id}").status_code == 200


def test_bad_requests_are_refused_clearly_and_lose_nothing(api: httpx.Client) -> None:
    before = _ids(api)
    assert SEED_ID in before
    post = api.post
    as_json = {"content-type": "application/json"}
    _unchanged(api, before, post("/documents", content=b'{"documents": [', headers=as_json), 422, "not valid JSON")
    _unchanged(api, before, post("/documents", json={"documents": []}), 422, "documents")
    _unchanged(api, before, post("/documents", json={"documents": [{"title": "no text"}]}), 422, "text")
    _unchanged(api, before, post("/documents", json={"documents": [{"text": "x", "colour": "red"}]}), 422, "colour")
    _unchanged(api, before, post("/documents", json={"documents": [{"text": "   "}]}), 422, "no document", "no 'text'")
    _unchanged(api, before, post("/documents", json={"documents": [
        {"id": "twin", "text": "First."}, {"id": "twin", "text": "Second."}, {"id": "fine", "text": "Fine."},
    ]}), 422, "more than one document with the id 'twin'", "nothing was stored")
    _unchanged(api, before, post("/documents", json={"documents": [{"id": "long", "text": "word " * MAX_CHARS}]}),
               413, "the limit is 20,000")
    _unchanged(api, before, post("/documents", content=b"x" * (MAX_BYTES + 1),
                                 headers=as_json), 413, "RAG_MAX_REQUEST_BYTES")
    _unchanged(api, before, post("/documents", content=b"a,b", headers={"content-type": "text/csv"}),
               422, "application/json or multipart/form-data")
    _unchanged(api, before, post("/documents", files=[("other", ("a.txt", b"A\n\nBody text.", "text/plain"))]),
               422, "field 'files'")
    _unchanged(api, before, post("/documents", files=[("files", ("..", b"Title\n\nBody.", "text/plain"))]),
               422, "not a usable file name")
    _unchanged(api, before, api.put("/documents/a", json={"id": "b", "text": "Text."}), 422, "differs")
    _unchanged(api, before, api.put("/documents/a", content=b"[1]", headers=as_json), 422)
    _unchanged(api, before, api.delete("/documents/no-such-id"), 404, "no document with id 'no-such-id'")
    _unchanged(api, before, api.get("/documents", params={"limit": 0}), 422)
    answer = api.post("/ask", json={"question": MISSION_QUESTION}).json()
    assert all(lender in answer["answer"] for lender in LENDERS)


def test_the_server_sees_changes_committed_by_another_process(api: httpx.Client, index_dir: Path,
                                                               tmp_path: Path) -> None:
    feed = tmp_path / "feed.jsonl"
    feed.write_text(json.dumps({"id": "outside", "title": "Tide mill restored",
                                "text": "The tide mill at Orwick was restored and grinds flour again."}) + "\n")
    added = run_rag(tmp_path, "add", str(feed), "--index", str(index_dir), "--wait", "60")
    assert added.returncode == 0, added.stderr
    assert api.get("/documents/outside").status_code == 200
    results = api.get("/search", params={"q": "Orwick tide mill flour", "k": 3}).json()["results"]
    assert results[0]["doc_id"] == "outside"
    removed = run_rag(tmp_path, "delete", "outside", "--index", str(index_dir), "--wait", "60")
    assert removed.returncode == 0, removed.stderr
    assert api.get("/documents/outside").status_code == 404
