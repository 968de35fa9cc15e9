"""The web page (GET /) in a real browser: headless Chromium from Debian's ``chromium`` package
(``make browser`` installs it; Playwright's own browser downloads are never used), driven by
Playwright against a real uvicorn server on 127.0.0.1 over an index of seeds/.

Without /usr/bin/chromium the browser tests are skipped, except under CI (``CI`` set), where
they fail: CI must prove them. Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from api.routes.web import FILES
from rag.config import Settings
from rag.embedding import Embedder
from rag.pipeline import RagPipeline
from tests.conftest import LENDERS, MISSION_QUESTION, REPO, SEED_ID, SEEDS
from tests.servers import FailingGenerator, PipelineWithTestGenerators, free_port, serve_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ARTIFACTS = REPO / "tests" / "artifacts"
SEED_TITLE = "Xiaomi steps on the accelerator to enter the banking market"
OFF_TOPIC = "What is the boiling point of tungsten?"
API_KEY = "web-page-test-key"
WIDE = {"width": 1100, "height": 900}
PHONE = {"width": 390, "height": 844}


# Beside the seed article: one with all its metadata, one whose stored URL is a script, and
# short notices, enough for two pages of the documents view.
LIBRARY = {
    "id": "kelmsby/library", "title": "Harbour town opens a floating library", "source": "Kelmsby Gazette",
    "published_at": "2024-05-04T09:30:00Z", "url": "https://news.example/kelmsby-library",
    "text": "The town of Kelmsby opened a floating library on an old ferry on Saturday. "
            "The ferry holds twelve thousand books and visits four villages along the estuary each week.",
}
SCRIPT_URL = {"id": "kelmsby/tides", "title": "Spring tides expected", "url": "javascript:alert(1)",
              "text": "Spring tides will flood the lower quay of Kelmsby on Thursday evening."}
NOTICES = [{"id": f"notice-{i:02d}", "title": f"Parish notice {i}", "source": "Parish Board",
            "text": f"Parish notice number {i} lists the opening hours of the village hall."} for i in range(21)]
ARTICLES = 1 + 2 + len(NOTICES)
PAGE_SIZE = 20  # the documents view's page size (api/web/app.js)


# -- servers -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def web_index(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Path:
    folder = tmp_path_factory.mktemp("web")
    feed = folder / "feed.jsonl"
    feed.write_text("".join(json.dumps(record) + "\n" for record in [LIBRARY, SCRIPT_URL, *NOTICES]))
    index_dir = folder / "index"
    RagPipeline(Settings(index_dir=index_dir), embedder=embedder).ingest([SEEDS, feed])
    return index_dir


@pytest.fixture(scope="module")
def web_pipeline(web_index: Path, embedder: Embedder) -> PipelineWithTestGenerators:
    """The ``openai`` generator points at a port where nothing listens, so that choosing it
    makes the answer fail after the stream has begun; the test generators ``failing`` and
    ``endless`` (tests/servers.py) are known too, though not listed by GET /generators."""
    settings = Settings(index_dir=web_index, openai_base_url=f"http://127.0.0.1:{free_port()}/v1",
                        openai_timeout=5)
    return PipelineWithTestGenerators(settings, embedder)


@pytest.fixture(scope="module")
def web_api(web_pipeline: PipelineWithTestGenerators) -> Iterator[httpx.Client]:
    with serve_app(create_app(pipeline=web_pipeline)) as client:
        yield client


@pytest.fixture(scope="module")
def locked_api(seed_index: Path, embedder: Embedder) -> Iterator[httpx.Client]:
    """The seed index behind an API key that reads need too."""
    settings = Settings(index_dir=seed_index, api_keys=API_KEY, auth_reads=True)
    with serve_app(create_app(pipeline=RagPipeline(settings, embedder=embedder))) as client:
        yield client


@pytest.fixture(scope="module")
def mission_answer(web_api: httpx.Client) -> dict[str, Any]:
    response = web_api.post("/ask", json={"question": MISSION_QUESTION, "generator": "extractive"})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    assert not answer["abstained"] and answer["citations"]
    return answer


@pytest.fixture(scope="module")
def seed_text(web_api: httpx.Client) -> str:
    text: str = web_api.get(f"/documents/{SEED_ID}").json()["text"]
    return text


# -- the page's files, over plain HTTP -----------------------------------------------------------


def test_the_page_and_its_files_are_served_with_a_strict_policy(web_api: httpx.Client) -> None:
    page = web_api.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy and "unsafe" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    # Only external scripts (the policy forbids inline ones), and no inline handlers or styles.
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", page.text, re.DOTALL)
    assert scripts and all('src="/web/' in attrs and not body.strip() for attrs, body in scripts)
    assert not re.search(r"\son[a-z]+\s*=|\sstyle\s*=|<style\b", page.text)
    assert '<meta name="viewport"' in page.text
    for path, (_, media_type) in FILES.items():
        response = web_api.get(path)
        assert response.status_code == 200 and response.headers["content-type"] == media_type, path
        again = web_api.get(path, headers={"If-None-Match": response.headers["etag"]})
        assert again.status_code == 304 and not again.content
    assert web_api.head("/").status_code == 200
    assert web_api.get("/web/secrets.txt").status_code == 404
    assert web_api.get("/web/..%2Fapp.py").status_code == 404


def test_the_page_is_not_part_of_the_api_description(web_api: httpx.Client) -> None:
    paths = set(web_api.get("/openapi.json").json()["paths"])
    assert "/ask/stream" in paths and "/documents" in paths
    assert not {path for path in paths if path == "/" or path.startswith("/web")}


def test_the_page_is_open_when_reads_need_a_key(locked_api: httpx.Client) -> None:
    for path in FILES:
        assert locked_api.get(path).status_code == 200, path
    assert locked_api.get("/generators").status_code == 401
    assert locked_api.get("/generators", headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200


def test_the_page_files_are_package_data() -> None:
    """A non-editable install ships every file the router serves."""
    tomllib = pytest.importorskip("tomllib")
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["api"]
    for name, _ in FILES.values():
        assert (REPO / "api" / "web" / name).is_file(), name
        assert any(fnmatch.fnmatch(f"web/{name}", pattern) for pattern in patterns), name


# -- the browser -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    why = None
    if not CHROMIUM.exists():
        why = f"{CHROMIUM} is missing: run `make browser` (apt-get install chromium)"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        why = "playwright is not installed: pip install -e '.[dev]'"
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser tests, but {why}")
        pytest.skip(why)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Page:
    """A fresh browser page whose uncaught script errors and policy violations fail the test."""

    def __init__(self, browser: Any, viewport: dict[str, int]) -> None:
        self.context = browser.new_context(viewport=viewport)
        self.page = self.context.new_page()
        self.page.set_default_timeout(30_000)
        self.problems: list[str] = []
        self.page.on("pageerror", lambda exc: self.problems.append(f"uncaught: {exc}"))
        self.page.on("console", self._console)

    def _console(self, message: Any) -> None:
        if "Content Security Policy" in message.text:
            self.problems.append(f"policy: {message.text}")

    def close(self) -> None:
        self.context.close()
        assert self.problems == []


@pytest.fixture
def open_page(browser: Any) -> Iterator[Any]:
    """Call with a viewport to get a Playwright page; all of them are checked and closed after the test."""
    pages: list[Page] = []

    def make(viewport: dict[str, int] = WIDE) -> Any:
        pages.append(Page(browser, viewport))
        return pages[-1].page

    yield make
    for page in pages:
        page.close()


def screenshot(page: Any, name: str, full_page: bool = False) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)


def expect(target: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def load(page: Any, client: httpx.Client, fragment: str = "") -> None:
    """Open the page and wait until it has the server's generators (its first request)."""
    page.goto(str(client.base_url).rstrip("/") + "/" + fragment)
    expect(page.locator("#generator option[value='extractive']")).to_have_count(1)


def offer_generator(page: Any, name: str) -> None:
    """Adds a generator the server knows but does not list to the page's choice."""
    page.evaluate("name => document.getElementById('generator').add(new Option(name, name))", name)


def ask(page: Any, question: str, generator: str | None = None) -> None:
    """Type the question, choose the generator, and submit with Enter, as a keyboard user would."""
    if generator is not None:
        page.select_option("#generator", generator)
    page.fill("#question", question)
    page.press("#question", "Enter")


def watch_answer(page: Any) -> None:
    """Records the answer's text each time it changes while no source is shown yet."""
    page.evaluate("""() => {
        window.earlyText = [];
        new MutationObserver(() => {
            if (!document.querySelector('#citations li'))
                window.earlyText.push(document.getElementById('answer').textContent);
        }).observe(document.getElementById('answer'), {childList: true, characterData: true, subtree: true});
    }""")


def no_overflow(page: Any) -> None:
    widths = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert widths[0] <= widths[1], f"the page is {widths[0]}px wide in a {widths[1]}px viewport"


# -- asking ----------------------------------------------------------------------------------------


def test_the_mission_question_streams_an_answer_whose_markers_open_the_quotes(
    open_page: Any, web_api: httpx.Client, mission_answer: dict[str, Any], seed_text: str
) -> None:
    page = open_page()
    load(page, web_api)
    expect(page.locator("#generator")).to_have_value("extractive")  # the server's default is chosen
    watch_answer(page)
    ask(page, MISSION_QUESTION)
    citations = page.locator("#citations > li")
    expect(citations).to_have_count(len(mission_answer["citations"]))
    expect(page.locator("#answer")).to_have_attribute("aria-busy", "false")
    expect(page.locator("#answer")).to_have_attribute("aria-live", "polite")
    expect(page.locator("#status")).to_have_text("Answered.")

    answer = page.locator("#answer").inner_text()
    for lender in LENDERS:
        assert lender in answer, f"{lender} is missing from the page's answer"
    # The text arrived piece by piece before the sources: the stream, not one final reply.
    early = [text for text in page.evaluate("window.earlyText") if text]
    assert early and all(mission_answer["answer"].startswith(text) for text in early), early
    assert early[0] != mission_answer["answer"]
    assert page.locator("#answer a.marker").count() == len(mission_answer["citations"])
    screenshot(page, "web-answer")

    # The lenders' sentence: its marker leads to its quote, marked inside the article's own text.
    lenders = next(c for c in mission_answer["citations"] if "KreditBee" in c["quote"])
    page.click(f"#answer a.marker[data-n='{lenders['n']}']")
    item = page.locator(f"#cite-{lenders['n']}")
    expect(item).to_be_focused()
    expect(item).to_be_in_viewport()
    expect(item.locator("mark")).to_have_text(lenders["quote"])
    expect(item.locator("mark")).to_be_in_viewport()
    expect(item).to_contain_text(SEED_TITLE)
    expect(item).to_contain_text(f"characters {lenders['start']}–{lenders['end']}")
    flat_text = " ".join(seed_text.split())
    for citation in mission_answer["citations"]:  # each quote inside the article's text around it
        context = page.locator(f"#cite-{citation['n']} blockquote").inner_text().strip("…")
        before, _, after = context.partition(citation["quote"])
        assert len(before.strip()) > 50 and len(after.strip()) > 50, f"[{citation['n']}] lacks its context"
        assert " ".join(context.split()) in flat_text, "the context is not the article's text"
    screenshot(page, "web-citation")

    # ... and from there to the whole article, the quote marked and focused at its offsets.
    item.get_by_role("link", name="Read it in the article").click()
    expect(page.locator("#doc-title")).to_have_text(SEED_TITLE)
    expect(page.locator("#doc-mark")).to_have_text(lenders["quote"])
    expect(page.locator("#doc-mark")).to_be_focused()
    expect(page.locator("#doc-mark")).to_be_in_viewport()
    assert page.locator("#doc-text").text_content() == seed_text


def test_a_source_shows_its_article_s_source_date_and_link(open_page: Any, web_api: httpx.Client) -> None:
    page = open_page()
    load(page, web_api)
    ask(page, "How many books does the floating library ferry hold?")
    item = page.locator("#citations > li").filter(has_text=LIBRARY["title"]).first
    expect(item).to_be_visible()
    expect(item).to_contain_text("Kelmsby Gazette")
    expect(item.locator("time")).to_have_text("2024-05-04")
    expect(item.locator("time")).to_have_attribute("datetime", LIBRARY["published_at"])
    expect(item.get_by_role("link", name=LIBRARY["title"])).to_have_attribute("href", LIBRARY["url"])
    expect(page.locator("#citations mark").filter(has_text="twelve thousand books")).to_have_count(1)


def test_keyboard_alone_asks_and_follows_a_marker(open_page: Any, web_api: httpx.Client) -> None:
    page = open_page()
    load(page, web_api)
    page.keyboard.press("Tab")  # the first stop is the skip link
    expect(page.locator("a.skip")).to_be_focused()
    page.keyboard.press("Enter")
    for _ in range(6):  # on through the key panel to the question box
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "question":
            break
    expect(page.locator("#question")).to_be_focused()
    page.keyboard.type(MISSION_QUESTION)
    page.keyboard.press("Enter")
    expect(page.locator("#citations > li").first).to_be_visible()

    for _ in range(10):  # from the question, Tab reaches the first marker
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.classList.contains('marker')"):
            break
    marker = page.locator("#answer a.marker").first
    expect(marker).to_be_focused()
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none", "the focused marker shows no focus ring"
    page.keyboard.press("Enter")
    expect(page.locator("#cite-1")).to_be_focused()
    expect(page.locator("#cite-1 mark")).to_be_in_viewport()


def test_an_off_topic_question_gets_a_clear_refusal(open_page: Any, web_api: httpx.Client) -> None:
    direct = web_api.post("/ask", json={"question": OFF_TOPIC, "generator": "extractive"}).json()
    assert direct["abstained"] is True and direct["answer"] is None and direct["reason"]

    page = open_page()
    load(page, web_api)
    ask(page, OFF_TOPIC, generator="extractive")
    refusal = page.locator("#refusal")
    expect(refusal).to_be_visible()
    expect(refusal).to_contain_text("No answer.")
    expect(refusal).to_contain_text("below the support threshold")
    expect(page.locator("#answer")).to_be_hidden()
    expect(page.locator("#citations-block")).to_be_hidden()
    expect(page.locator("#error")).to_be_hidden()
    expect(page.locator("#status")).to_have_text("No answer found in the articles.")
    screenshot(page, "web-refusal")


# -- errors ----------------------------------------------------------------------------------------


def test_an_error_inside_the_stream_is_shown(open_page: Any, web_api: httpx.Client) -> None:
    page = open_page()
    load(page, web_api)
    ask(page, MISSION_QUESTION, generator="openai")
    error = page.locator("#error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("The answer broke off (503).")
    expect(error).to_contain_text("The OpenAI-compatible server at http://127.0.0.1:")
    expect(error).to_contain_text("cannot be reached.")
    expect(page.locator("#refusal")).to_be_hidden()
    expect(page.locator("#ask-button")).to_be_enabled()
    assert "Traceback" not in page.content()
    screenshot(page, "web-stream-error")


def test_an_answer_that_breaks_off_is_kept_and_marked_incomplete(open_page: Any, web_api: httpx.Client) -> None:
    page = open_page()
    load(page, web_api)
    offer_generator(page, FailingGenerator.name)
    ask(page, MISSION_QUESTION, generator=FailingGenerator.name)
    error = page.locator("#error")
    expect(error).to_contain_text("The answer broke off (502).")
    expect(error).to_contain_text("The model server closed the connection mid-answer.")
    expect(page.locator("#answer")).to_have_text(FailingGenerator.PIECE)  # what arrived stays
    expect(page.locator("#answer")).to_have_class(re.compile(r"\bincomplete\b"))
    expect(page.locator("#citations-block")).to_be_hidden()


def test_stop_ends_an_answer_and_the_server_stops_writing_it(
    open_page: Any, web_api: httpx.Client, web_pipeline: PipelineWithTestGenerators
) -> None:
    page = open_page()
    load(page, web_api)
    offer_generator(page, "endless")
    ask(page, MISSION_QUESTION, generator="endless")
    expect(page.locator("#answer")).to_contain_text("and and and")
    expect(page.locator("#ask-button")).to_be_disabled()
    page.click("#stop-button")
    expect(page.locator("#status")).to_have_text("Stopped.")
    expect(page.locator("#stop-button")).to_be_hidden()
    expect(page.locator("#ask-button")).to_be_enabled()
    expect(page.locator("#question")).to_be_focused()
    expect(page.locator("#error")).to_be_hidden()
    assert web_pipeline.endless.closed.wait(30), "the server went on writing the stopped answer"


def test_a_rejected_request_is_shown(open_page: Any, web_api: httpx.Client) -> None:
    page = open_page()
    load(page, web_api)
    ask(page, "   ")  # not empty for the browser, but no question for the server
    error = page.locator("#error")
    expect(error).to_contain_text("The server refused the request (422).")
    expect(error).to_contain_text("The question is empty.")
    expect(page.locator("#result")).to_be_hidden()

    # The next question clears the message.
    ask(page, MISSION_QUESTION)
    expect(page.locator("#citations > li").first).to_be_visible()
    expect(error).to_be_hidden()


def test_a_server_that_needs_a_key_asks_for_it(open_page: Any, locked_api: httpx.Client) -> None:
    page = open_page()
    page.goto(str(locked_api.base_url))
    error = page.locator("#error")
    expect(error).to_contain_text("This server needs an API key (401).")
    expect(page.locator("#key-input")).to_be_focused()  # the key panel opens where the cursor is
    screenshot(page, "web-needs-key")

    page.fill("#key-input", "not-the-key")
    page.press("#key-input", "Enter")
    expect(error).to_contain_text("The API key was not accepted (403).")
    assert page.evaluate("sessionStorage.getItem('rag.apiKey')") == "not-the-key"

    page.fill("#key-input", API_KEY)
    page.press("#key-input", "Enter")
    expect(page.locator("#generator option[value='extractive']")).to_have_count(1)
    expect(page.locator("#key-state")).to_have_text("(set for this tab)")
    ask(page, MISSION_QUESTION)
    expect(page.locator("#answer")).to_contain_text("KreditBee")
    expect(error).to_be_hidden()

    # Forgotten, the key is no longer sent: the server refuses again.
    page.click("#key-panel summary")
    page.click("#key-forget")
    assert page.evaluate("sessionStorage.getItem('rag.apiKey')") is None
    ask(page, MISSION_QUESTION)
    expect(error).to_contain_text("This server needs an API key (401).")


# -- documents -------------------------------------------------------------------------------------


def test_the_documents_view_finds_and_opens_the_article(
    open_page: Any, web_api: httpx.Client, seed_text: str
) -> None:
    page = open_page()
    load(page, web_api)
    page.get_by_role("link", name="Documents").click()
    expect(page.locator("#nav-documents")).to_have_attribute("aria-current", "page")
    expect(page.locator("#doc-count")).to_have_text(f"Articles 1–{PAGE_SIZE} of {ARTICLES}.")
    expect(page.locator("#doc-list li")).to_have_count(PAGE_SIZE)
    expect(page.locator("#doc-list li").first).to_contain_text(SEED_ID)  # in id order
    expect(page.locator("#doc-prev")).to_be_disabled()
    page.click("#doc-next")
    expect(page.locator("#doc-count")).to_have_text(f"Articles {PAGE_SIZE + 1}–{ARTICLES} of {ARTICLES}.")
    expect(page.locator("#doc-list li")).to_have_count(ARTICLES - PAGE_SIZE)
    expect(page.locator("#doc-next")).to_be_disabled()
    page.click("#doc-prev")
    expect(page.locator("#doc-count")).to_have_text(f"Articles 1–{PAGE_SIZE} of {ARTICLES}.")

    page.fill("#doc-query", "tungsten")
    page.press("#doc-query", "Enter")
    expect(page.locator("#doc-count")).to_have_text("No articles match “tungsten”.")
    expect(page.locator("#doc-list li")).to_have_count(0)

    page.fill("#doc-query", "XIAOMI banking")
    page.press("#doc-query", "Enter")
    expect(page.locator("#doc-count")).to_have_text("1 article matching “XIAOMI banking”.")
    screenshot(page, "web-documents")
    page.get_by_role("link", name=SEED_TITLE).click()
    expect(page.locator("#doc-title")).to_have_text(SEED_TITLE)
    expect(page.locator("#doc-title")).to_be_focused()
    assert page.locator("#doc-text").text_content() == seed_text
    expect(page.locator("#doc-text mark")).to_have_count(0)

    page.get_by_role("link", name="Back to the documents").click()
    expect(page.locator("#doc-query")).to_have_value("XIAOMI banking")
    expect(page.locator("#doc-list li")).to_have_count(1)

    # By source, with the article's metadata; a stored URL that is not a web address is no link.
    page.fill("#doc-query", "kelmsby")
    page.press("#doc-query", "Enter")
    expect(page.locator("#doc-count")).to_have_text("2 articles matching “kelmsby”.")
    expect(page.locator("#doc-list li")).to_have_count(2)
    page.get_by_role("link", name=LIBRARY["title"]).click()
    expect(page.locator("#doc-meta")).to_contain_text("Kelmsby Gazette · 2024-05-04 · kelmsby/library")
    expect(page.get_by_role("link", name="original article")).to_have_attribute("href", LIBRARY["url"])
    page.go_back()
    page.get_by_role("link", name=SCRIPT_URL["title"]).click()
    expect(page.locator("#doc-text")).to_have_text(SCRIPT_URL["text"])
    expect(page.locator("#doc-meta a")).to_have_count(0)
    assert "javascript:" not in (page.locator("main").inner_html())


def test_an_unknown_article_is_reported(open_page: Any, web_api: httpx.Client) -> None:
    page = open_page()
    load(page, web_api, "#document=no-such-article")
    expect(page.locator("#error")).to_contain_text("The server refused the request (404).")
    expect(page.locator("#error")).to_contain_text("No document with id 'no-such-article'.")


# -- contrast --------------------------------------------------------------------------------------


def _luminance(css_colour: str) -> float:
    """WCAG relative luminance of an ``rgb(...)``/``rgba(...)`` computed colour."""
    channels = [float(v) / 255 for v in re.findall(r"[\d.]+", css_colour)[:3]]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def _contrast(foreground: str, background: str) -> float:
    light, dark = sorted((_luminance(foreground), _luminance(background)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


# Text on the page and what it is read against: the nearest ancestor with a background.
COLOURS = """selector => {
    const node = document.querySelector(selector);
    let back = node, bg = 'rgba(0, 0, 0, 0)';
    while (back && (bg = getComputedStyle(back).backgroundColor) === 'rgba(0, 0, 0, 0)') back = back.parentElement;
    if (!back) bg = 'rgb(255, 255, 255)';
    return [getComputedStyle(node).color, bg];
}"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_text_has_enough_contrast(open_page: Any, web_api: httpx.Client, scheme: str) -> None:
    page = open_page()
    page.emulate_media(color_scheme=scheme)
    load(page, web_api)
    ask(page, MISSION_QUESTION)
    expect(page.locator("#citations > li")).to_have_count(2)
    for selector in ("#answer", "#answer a.marker", "#status", "#answer-meta", "#ask-button", "label",
                     "#nav-ask", "#nav-documents", "#cite-1 mark", "#cite-1 .cite-n", "#cite-1 .muted",
                     "#cite-1 a", "#key-panel summary", ".brand span"):
        foreground, background = page.evaluate(COLOURS, selector)
        ratio = _contrast(foreground, background)
        assert ratio >= 4.5, f"{scheme}: {selector} is {foreground} on {background}, contrast {ratio:.2f}"


# -- a phone ---------------------------------------------------------------------------------------


def test_a_phone_screen_shows_everything_without_sideways_scrolling(
    open_page: Any, web_api: httpx.Client
) -> None:
    page = open_page(PHONE)
    load(page, web_api)
    no_overflow(page)
    ask(page, MISSION_QUESTION)
    expect(page.locator("#citations > li")).to_have_count(2)
    no_overflow(page)
    box = page.locator("#citations > li").first.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    screenshot(page, "web-phone-answer", full_page=True)

    page.get_by_role("link", name="Documents").click()
    page.get_by_role("link", name=SEED_TITLE).click()
    expect(page.locator("#doc-title")).to_have_text(SEED_TITLE)
    no_overflow(page)
    screenshot(page, "web-phone-article")
