"""Reading articles in every supported format, and cleaning page furniture."""

from __future__ import annotations

import json
from pathlib import Path

from rag.cleaning import clean_text
from rag.corpus import ReadProblem, read_articles
from rag.types import Article
from tests.conftest import LENDERS, SEED_ID, SEEDS


def _read(*paths: Path) -> tuple[list[Article], list[ReadProblem]]:
    items = list(read_articles(paths))
    return [i for i in items if isinstance(i, Article)], [i for i in items if isinstance(i, ReadProblem)]


def test_seed_article_is_cleaned_without_losing_sentences() -> None:
    (article,), problems = _read(SEEDS)
    assert not problems
    assert article.id == SEED_ID
    assert article.title == "Xiaomi steps on the accelerator to enter the banking market"
    for furniture in ("Advertisement", "Must Read", "Subscribe to our newsletter", "Professional Blogger",
                      "special announcements"):
        assert furniture not in article.text
    assert article.author == "Brian Adam"
    raw = (SEEDS / f"{SEED_ID}.txt").read_text(encoding="utf-8")
    # Every real paragraph survives verbatim.
    body = [p for p in raw.split("\n") if len(p.split()) > 25]
    assert len(body) == 6
    for paragraph in body:
        assert paragraph.strip() in article.text
    assert all(lender in article.text for lender in LENDERS)
    assert article.text.startswith("In the last year")
    assert article.text.endswith("An option cannot be ruled out.")


def test_furniture_patterns_and_real_sentences() -> None:
    raw = "\n".join([
        "ADVERTISEMENT",
        "Share this article",
        "The central bank raised rates by half a point on Tuesday, its third increase this year.",
        "Read more:",
        "Sign up for our daily newsletter",
        "Get the latest news delivered to your inbox every morning.",
        "Officials said they would subscribe to the new framework once it was published next month"
        " after a long consultation with lenders, insurers and consumer groups across the country.",
        "Jane Doe",
        "Jane is a senior reporter who covers markets.",
        "© 2024 Example News. All rights reserved.",
    ])
    text, author = clean_text(raw)
    assert text.split("\n\n") == [
        "The central bank raised rates by half a point on Tuesday, its third increase this year.",
        "Officials said they would subscribe to the new framework once it was published next month"
        " after a long consultation with lenders, insurers and consumer groups across the country.",
    ]
    assert author == "Jane Doe"


def test_markdown_front_matter_html_and_records(tmp_path: Path) -> None:
    (tmp_path / "story.md").write_text(
        "---\ntitle: Rates rise\nurl: https://example.com/rates\npublished_at: 2024-05-02\n"
        "source: Example News\nauthor: A. Writer\n---\nThe bank raised rates on Thursday.\n",
        encoding="utf-8",
    )
    (tmp_path / "page.html").write_text(
        "<html><head><title>Port reopens after storm</title></head><body><nav>Home | World</nav>"
        "<article><h1>Port reopens after storm</h1>"
        "<p>The port of Example reopened on Monday after a storm closed it for three days, officials said.</p>"
        "<p>Shipping companies expect delays to ease by the end of the week as crews clear the docks.</p>"
        "</article><footer>Subscribe to our newsletter</footer></body></html>",
        encoding="utf-8",
    )
    records = [
        {"id": "rec-1", "title": "First", "text": "Alpha beta gamma.", "source": "wire",
         "published_at": "2023-01-01", "url": "https://example.com/1"},
        {"title": "No id", "text": "Delta epsilon."},
    ]
    (tmp_path / "batch.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n{not json\n",
                                          encoding="utf-8")
    (tmp_path / "list.json").write_text(json.dumps([{"id": 7, "title": "Seven", "text": "Zeta."}]),
                                        encoding="utf-8")
    articles, problems = _read(tmp_path)
    by_id = {a.id: a for a in articles}
    md = by_id["story"]
    assert (md.title, md.url, md.published_at, md.source, md.author) == (
        "Rates rise", "https://example.com/rates", "2024-05-02", "Example News", "A. Writer")
    assert md.text == "The bank raised rates on Thursday."
    html = by_id["page"]
    assert html.title == "Port reopens after storm"
    assert "reopened on Monday" in html.text and "Home | World" not in html.text
    assert "newsletter" not in html.text
    assert by_id["rec-1"].source == "wire" and by_id["rec-1"].text == "Alpha beta gamma."
    assert by_id["7"].title == "Seven"
    no_id = [a for a in articles if a.title == "No id"]
    assert len(no_id) == 1 and no_id[0].id.startswith("doc-")
    assert [str(p) for p in problems] == [f"{tmp_path / 'batch.jsonl'}:3: malformed JSON (Expecting property name"
                                          " enclosed in double quotes)"]


def test_unreadable_inputs_are_reported_by_name(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blob.txt").write_bytes(b"\x00\x01\x02binary\x00" * 20)
    (tmp_path / "latin1.txt").write_bytes("Café news\n\nThe café in Zürich reopened on Monday.".encode("latin-1"))
    (tmp_path / "only-title.txt").write_text("Just a title\n", encoding="utf-8")
    (tmp_path / "bad.jsonl").write_text('{"id": "x"}\n["not", "an", "object"]\n', encoding="utf-8")
    articles, problems = _read(tmp_path, tmp_path / "missing.txt")
    assert [a.id for a in articles] == ["latin1"]
    assert articles[0].text == "The café in Zürich reopened on Monday."
    messages = {p.where.replace(str(tmp_path) + "/", ""): p.message for p in problems}
    assert messages == {
        "bad.jsonl:1": "record has no 'text'",
        "bad.jsonl:2": "record is not a JSON object",
        "blob.txt": "looks like a binary file (contains NUL bytes), not text",
        "empty.txt": "file is empty",
        "only-title.txt": "no article text left after cleaning",
        "missing.txt": "no such file or directory",
    }
