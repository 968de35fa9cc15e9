"""Reading articles from files: ``.txt``/``.md`` (title on the first line or in
YAML front matter), ``.html``/``.htm`` (main text extracted with trafilatura)
and ``.jsonl``/``.json`` records (``id``, ``title``, ``text``, ``url``,
``published_at``, ``source``, ``author``).

Every article is cleaned (see :mod:`rag.cleaning`) before it is returned; the
cleaned text is what the index stores and cites. A file or record that cannot
be read becomes a :class:`ReadProblem` naming it, and reading goes on.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rag.cleaning import clean_text, normalise_whitespace
from rag.types import Article

TEXT_SUFFIXES = {".txt", ".md", ".markdown"}
HTML_SUFFIXES = {".html", ".htm"}
RECORD_SUFFIXES = {".jsonl", ".json"}
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | RECORD_SUFFIXES
MAX_TITLE_CHARS = 300
_METADATA_FIELDS = ("url", "published_at", "source", "author")
_CONFIDENT_GUESS = 0.6


@dataclass(frozen=True)
class ReadProblem:
    """An input that was skipped, with a message for people (``where: what``)."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def too_long(article: Article, limit: int) -> ReadProblem | None:
    """The problem of an article over ``limit`` characters (``RAG_MAX_DOCUMENT_CHARS``), if it is."""
    if len(article.text) <= limit:
        return None
    return ReadProblem(article.origin or article.id,
                       f"document {article.id!r} is {len(article.text):,} characters long; the limit is "
                       f"{limit:,} (RAG_MAX_DOCUMENT_CHARS)")


def repeated_id(where: str, doc_id: str) -> ReadProblem:
    """The problem reported for an article whose id an earlier one of the same input had."""
    return ReadProblem(where, f"duplicate document id {doc_id!r}; the later one wins")


def read_articles(paths: Iterable[str | Path]) -> Iterator[Article | ReadProblem]:
    """Yield the articles found under ``paths`` (files or directories, recursively)."""
    for item in input_files(paths):
        if isinstance(item, ReadProblem):
            yield item
        else:
            yield from read_file(*item)


def input_files(paths: Iterable[str | Path]) -> Iterator[tuple[Path, Path] | ReadProblem]:
    """The files ``read_articles`` reads, in its order, each with the folder its ids are relative
    to, and a problem for each path that names no readable file."""
    for root in paths:
        root = Path(root)
        if root.is_dir():
            files = sorted(
                p for p in root.rglob("*")
                if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES
                and not any(part.startswith(".") for part in p.relative_to(root).parts)
            )
            if not files:
                yield ReadProblem(str(root), "no .txt, .md, .html, .json or .jsonl files in this directory")
            for path in files:
                yield path, root
        elif root.is_file():
            yield root, root.parent
        else:
            yield ReadProblem(str(root), "no such file or directory")


def read_file(path: Path, id_base: Path | None = None) -> Iterator[Article | ReadProblem]:
    """Yield the article(s) in one file; ids of text and HTML files come from the
    path relative to ``id_base`` without its suffix, so a changed file keeps its id."""
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        yield ReadProblem(str(path), f"unsupported file type {path.suffix.lower() or '(none)'}")
        return
    try:
        raw = path.read_bytes()
    except OSError as exc:
        yield ReadProblem(str(path), f"cannot read file ({exc.strerror or exc})")
        return
    yield from read_bytes(raw, str(path), path_id(path, id_base))


def read_bytes(raw: bytes, name: str, default_id: str) -> Iterator[Article | ReadProblem]:
    """Yield the article(s) in the content of a file called ``name`` (its suffix picks
    the format); a text or HTML article without an id of its own gets ``default_id``."""
    suffix = Path(name).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        yield ReadProblem(name, f"unsupported file type {suffix or '(none)'}")
        return
    try:
        text = decode_bytes(raw)
    except ValueError as exc:
        yield ReadProblem(name, str(exc))
        return
    if suffix in RECORD_SUFFIXES:
        yield from read_records(text, name, jsonl=suffix == ".jsonl")
        return
    try:
        if suffix in HTML_SUFFIXES:
            article = parse_html(text, default_id=default_id, origin=name)
        else:
            article = parse_text(text, default_id=default_id, origin=name)
    except ValueError as exc:
        yield ReadProblem(name, str(exc))
        return
    yield article


def decode_bytes(raw: bytes) -> str:
    """Decode a file's bytes: UTF-8 (with or without BOM), UTF-16 with a BOM, else
    the encoding charset-normalizer finds. Empty and binary content is refused."""
    if not raw.strip():
        raise ValueError("file is empty")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")
    if b"\x00" in raw[:4096]:
        raise ValueError("looks like a binary file (contains NUL bytes), not text")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(raw).best()
    try:
        western = raw.decode("cp1252")
    except UnicodeDecodeError:
        western = None
    # Short Western texts are often guessed as some other code page; Windows-1252 is by far
    # the most common legacy encoding of news text, so it wins unless the guess is confident.
    if western is not None and (best is None or best.coherence < _CONFIDENT_GUESS):
        return western
    if best is None:
        raise ValueError("cannot detect the text encoding (binary file?)")
    return str(best)


def parse_text(text: str, default_id: str, origin: str | None = None) -> Article:
    """A ``.txt``/``.md`` article: optional front matter, then the title line, then the body."""
    meta, body = _split_front_matter(text)
    body = normalise_whitespace(body)
    title = str(meta.get("title") or "").strip()
    if not title:
        first, _, rest = body.partition("\n")
        title, body = first.strip().lstrip("#").strip(), rest
    cleaned, author = clean_text(body)
    return _make_article(meta, title, cleaned, author, default_id, origin)


def parse_html(html: str, default_id: str, origin: str | None = None) -> Article:
    """An HTML page: main text and metadata extracted with trafilatura."""
    import trafilatura

    extracted = trafilatura.bare_extraction(
        html, include_comments=False, include_tables=False, with_metadata=True
    )
    if extracted is None:
        raise ValueError("no article text found in the HTML page")
    data = extracted.as_dict() if hasattr(extracted, "as_dict") else dict(extracted)
    meta = {
        "title": data.get("title"),
        "url": data.get("url"),
        "published_at": data.get("date"),
        "source": data.get("sitename") or data.get("hostname"),
        "author": data.get("author"),
    }
    cleaned, author = clean_text(str(data.get("text") or ""))
    return _make_article(meta, str(meta["title"] or ""), cleaned, author, default_id, origin)


def parse_record(record: Any, where: str) -> Article:
    """A JSON record; its ``id`` (if any) is kept as the document id."""
    if not isinstance(record, dict):
        raise ValueError("record is not a JSON object")
    text = record.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ValueError("record has no 'text'")
    raw_id = record.get("id")
    if raw_id is not None and not isinstance(raw_id, (str, int)):
        raise ValueError("record 'id' must be a string or an integer")
    cleaned, author = clean_text(text)
    title = str(record.get("title") or "").strip()
    doc_id = str(raw_id).strip() if raw_id is not None and str(raw_id).strip() else content_id(title, cleaned)
    return _make_article(record, title, cleaned, author, doc_id, where)


def content_id(title: str, text: str) -> str:
    """An id derived from content, for records that bring none."""
    return "doc-" + hashlib.sha256(f"{title}\n{text}".encode()).hexdigest()[:16]


def read_records(text: str, name: str, jsonl: bool) -> Iterator[Article | ReadProblem]:
    """The records of a JSON Lines (``jsonl``) or JSON text read from ``name``; a line
    or record that cannot be read becomes a problem naming it and the rest go on."""
    for entry in record_entries(text, name, jsonl):
        if isinstance(entry, ReadProblem):
            yield entry
            continue
        where, record = entry
        try:
            yield parse_record(record, where)
        except ValueError as exc:
            yield ReadProblem(where, str(exc))


def record_entries(text: str, name: str, jsonl: bool) -> Iterator[tuple[str, Any] | ReadProblem]:
    """The parsed JSON records of a file, each with where it was found (``name:line`` or
    ``name[i]``), before they are made articles (:func:`parse_record`); malformed JSON becomes
    a problem. A JSON Lines file's malformed lines come first, as :func:`read_records` reports them."""
    if jsonl:
        entries: list[tuple[str, Any]] = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{name}:{lineno}"
            try:
                entries.append((where, json.loads(line)))
            except json.JSONDecodeError as exc:
                yield ReadProblem(where, f"malformed JSON ({exc.msg})")
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            yield ReadProblem(f"{name}:{exc.lineno}", f"malformed JSON ({exc.msg})")
            return
        items = data if isinstance(data, list) else [data]
        entries = [(f"{name}[{i}]", item) for i, item in enumerate(items)]
    yield from entries


def _split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    match = re.match(r"\A\ufeff?---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", text, re.S)
    if not match:
        return {}, text
    try:
        meta = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        return {}, text
    if not isinstance(meta, dict):
        return {}, text
    return meta, text[match.end():]


def _make_article(
    meta: dict[str, Any], title: str, text: str, author: str | None, doc_id: str, origin: str | None
) -> Article:
    if not text.strip():
        raise ValueError("no article text left after cleaning")
    fields = {key: _str_or_none(meta.get(key)) for key in _METADATA_FIELDS}
    doc_id = _str_or_none(meta.get("id")) or doc_id
    title = normalise_whitespace(title).replace("\n", " ")[:MAX_TITLE_CHARS] or _fallback_title(text)
    return Article(
        id=doc_id,
        title=title,
        text=text,
        url=fields["url"],
        published_at=fields["published_at"],
        source=fields["source"],
        author=fields["author"] or author,
        origin=origin,
    )


def _fallback_title(text: str) -> str:
    first = text.split("\n", 1)[0]
    return first if len(first) <= 120 else first[:117].rsplit(" ", 1)[0] + "..."


def _str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    value = str(value).strip()  # dates parsed by YAML become ISO strings here
    return value or None


def path_id(path: Path, base: Path | None) -> str:
    """The id of a text or HTML file's article: its path relative to ``base``, without the suffix."""
    try:
        rel = path.relative_to(base) if base is not None else Path(path.name)
    except ValueError:
        rel = Path(path.name)
    return rel.with_suffix("").as_posix()
