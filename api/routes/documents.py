"""The documents of the index: list, read, add, replace and delete.

``POST /documents`` takes either a JSON body ``{"documents": [record, ...]}`` or
uploaded files (``multipart/form-data``, field ``files``); ``PUT`` stores one record
under the id in the path; ``DELETE`` removes one. Writes wait for another writer
(``RAG_WRITE_WAIT`` seconds) and answer 503 if it does not finish in time.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from api.deps import get_pipeline
from api.schemas import DocumentIn, DocumentOut, DocumentPage, DocumentsIn, DocumentSummary, ErrorOut, WriteResult
from rag.corpus import ReadProblem, parse_record, read_bytes
from rag.errors import CorpusError, DocumentNotFoundError, InvalidRequestError, RagError
from rag.pipeline import IngestReport, RagPipeline
from rag.types import Article

router = APIRouter(tags=["documents"])
Pipeline = Annotated[RagPipeline, Depends(get_pipeline)]
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (401, 403, 413, 422, 503)
}
_UNSAFE_NAME = re.compile(r"[\x00-\x1f]")


class PayloadTooLargeError(RagError):
    http_status = 413


@router.get("/documents", response_model=DocumentPage)
def list_documents(
    pipeline: Pipeline,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    q: Annotated[str | None, Query(max_length=1000, description=(
        "Keep only articles whose title, source or id contains every word of it, ignoring case."))] = None,
) -> dict[str, object]:
    """A page of the stored articles (without their text), in id order; ``total`` counts
    the articles that match ``q``, if given."""
    total, page = pipeline.documents(offset, limit, query=q)
    docs = [{k: v for k, v in a.to_dict().items() if k in DocumentSummary.model_fields} for a in page]
    return {"total": total, "offset": offset, "limit": limit, "documents": docs}


@router.get("/documents/{doc_id:path}", response_model=DocumentOut, responses={404: {"model": ErrorOut}})
def get_document(doc_id: str, pipeline: Pipeline) -> dict[str, object]:
    """One article's cleaned text, the text that citation offsets point into."""
    return pipeline.document(doc_id).to_dict()


# The body is read by hand (it may be JSON or files), so its schema is given here; DocumentIn
# itself is in the components because PUT takes it.
_JSON_BODY = {k: v for k, v in DocumentsIn.model_json_schema(ref_template="#/components/schemas/{model}").items()
              if k != "$defs"}
_POST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _JSON_BODY},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}},
                }
            },
        },
    }
}


@router.post("/documents", response_model=WriteResult, responses=WRITE_ERRORS, openapi_extra=_POST_BODY)
async def add_documents(request: Request, pipeline: Pipeline) -> dict[str, object]:
    """Store articles given as JSON records or as uploaded files (.txt, .md, .html,
    .json, .jsonl). New ones are added, changed ones replace the stored version,
    unchanged ones are skipped; only new or changed text is embedded. Records or
    files that cannot be read are listed under ``problems`` and the rest are stored."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        items = await _uploaded_articles(request)
    elif content_type in ("application/json", ""):
        items = _json_articles(await request.body())
    else:
        raise InvalidRequestError(
            f"send the documents as application/json or multipart/form-data, not {content_type!r}"
        )
    _refuse_duplicates([a for a in items if isinstance(a, Article)])
    report = await run_in_threadpool(pipeline.add, _checked(items, pipeline))
    return _result(report, [a.id for a in items if isinstance(a, Article)])


@router.put("/documents/{doc_id:path}", response_model=WriteResult, status_code=200,
            responses={**WRITE_ERRORS, 201: {"model": WriteResult}})
def put_document(doc_id: str, document: DocumentIn, pipeline: Pipeline, response: Response) -> dict[str, object]:
    """Store this article under ``doc_id``, replacing any stored version (201 when it is new)."""
    if not doc_id.strip() or doc_id != doc_id.strip():
        raise InvalidRequestError("the document id in the path is empty or has surrounding spaces")
    if document.id is not None and document.id != doc_id:
        raise InvalidRequestError(f"the body's id {document.id!r} differs from the path's {doc_id!r}")
    try:
        article = parse_record(document.model_dump() | {"id": doc_id}, f"document {doc_id!r}")
    except ValueError as exc:
        raise CorpusError(f"document {doc_id!r}: {exc}") from None
    report = pipeline.add(_checked([article], pipeline))
    if report.added:
        response.status_code = 201
    return _result(report, [doc_id])


@router.delete("/documents/{doc_id:path}", response_model=WriteResult,
               responses={404: {"model": ErrorOut}, **WRITE_ERRORS})
def delete_document(doc_id: str, pipeline: Pipeline) -> dict[str, object]:
    """Remove one article: it is never retrieved or cited again."""
    report = pipeline.delete([doc_id])
    if report.missing:
        raise DocumentNotFoundError(f"no document with id {doc_id!r}")
    return _result(report, [])


def _json_articles(body: bytes) -> list[Article | ReadProblem]:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise InvalidRequestError(f"the body is not valid JSON ({exc})") from None
    try:
        request = DocumentsIn.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise InvalidRequestError(f"invalid documents: {problems}") from None
    items: list[Article | ReadProblem] = []
    for i, record in enumerate(request.documents):
        where = f"documents[{i}]"
        try:
            items.append(parse_record(record.model_dump(), where))
        except ValueError as exc:
            items.append(ReadProblem(where, str(exc)))
    return items


async def _uploaded_articles(request: Request) -> list[Article | ReadProblem]:
    form = await request.form()
    uploads = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
    if not uploads:
        raise InvalidRequestError("no files uploaded: send them in the multipart field 'files'")
    items: list[Article | ReadProblem] = []
    for upload in uploads:
        name = safe_file_name(upload.filename or "")
        raw = await upload.read()
        if name is None:
            items.append(ReadProblem(repr(upload.filename), "not a usable file name"))
            continue
        items.extend(read_bytes(raw, name, default_id=name.rsplit(".", 1)[0]))
    return items


def safe_file_name(name: str) -> str | None:
    """The last component of an uploaded file's name (clients may send whole paths,
    with either kind of slash); None when nothing usable is left."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if base in ("", ".", "..") or _UNSAFE_NAME.search(base) or base.startswith("."):
        return None
    return base[:255]


def _refuse_duplicates(articles: list[Article]) -> None:
    duplicates = sorted(doc_id for doc_id, n in Counter(a.id for a in articles).items() if n > 1)
    if duplicates:
        raise InvalidRequestError(
            f"the request holds more than one document with the id {', '.join(map(repr, duplicates))}; "
            "nothing was stored"
        )


def _checked(items: list[Article | ReadProblem], pipeline: RagPipeline) -> Iterator[Article | ReadProblem]:
    """The items, after refusing the whole request if one article is over the size limit
    (413) or if nothing in it can be stored (422): a request either stores or says why."""
    limit = pipeline.settings.max_document_chars
    for item in items:
        if isinstance(item, Article) and len(item.text) > limit:
            raise PayloadTooLargeError(
                f"document {item.id!r} is {len(item.text):,} characters long; the limit is {limit:,}; "
                "nothing was stored"
            )
    if not any(isinstance(item, Article) for item in items):
        problems = "; ".join(str(p) for p in items if isinstance(p, ReadProblem))
        raise CorpusError(f"no document in the request can be stored: {problems}")
    return iter(items)


def _result(report: IngestReport, ids: list[str]) -> dict[str, object]:
    stored = set(report.added) | set(report.updated) | set(report.unchanged)
    data = report.to_dict()
    data["ids"] = [i for i in ids if i in stored]
    return data
