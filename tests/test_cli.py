"""The installed ``rag`` command, run as a subprocess in a scratch directory.

Every run that touches an index loads the embedding model (10-15 s on a small CPU),
so each run is made once, in a module-scoped fixture, and several tests read it."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from api.schemas import AskResponse, CitationOut, PassageOut
from rag.config import Settings
from rag.pipeline import RagPipeline
from tests.conftest import ANSWER_KEYS, CITATION_KEYS, LENDERS, MISSION_QUESTION, PASSAGE_KEYS, SEED_ID, SEEDS
from tests.processes import assert_clean_error, run_rag

SEED_TITLE = "Xiaomi steps on the accelerator to enter the banking market"
GOOD_ARTICLE = """Harbour town opens a floating library

The town of Kelmsby opened a floating library on an old ferry on Saturday, the mayor said.
The ferry holds twelve thousand books and will visit four villages along the estuary each week.
"""

Run = subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli-work")


# -- runs, one each -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def index_dir(workdir: Path) -> Path:
    return workdir / "index"


@pytest.fixture(scope="module")
def first_ingest(workdir: Path, index_dir: Path) -> Run:
    return run_rag(workdir, "ingest", str(SEEDS), "--index", str(index_dir))


@pytest.fixture(scope="module")
def second_ingest(workdir: Path, index_dir: Path, first_ingest: Run) -> tuple[Run, str, set[str], str]:
    assert first_ingest.returncode == 0, first_ingest.stderr
    current_before = (index_dir / "CURRENT").read_text()
    generations_before = {p.name for p in index_dir.iterdir()}
    result = run_rag(workdir, "ingest", str(SEEDS), "--index", str(index_dir), "-q")
    return result, current_before, generations_before, (index_dir / "CURRENT").read_text()


@pytest.fixture(scope="module")
def seed_text(index_dir: Path, first_ingest: Run) -> str:
    """The cleaned text the CLI's index stores, read through the library (with the default
    settings, as the CLI built it)."""
    assert first_ingest.returncode == 0, first_ingest.stderr
    return RagPipeline(Settings(index_dir=index_dir)).document(SEED_ID).text


@pytest.fixture(scope="module")
def ask_human(workdir: Path, index_dir: Path, first_ingest: Run) -> Run:
    return run_rag(workdir, "ask", MISSION_QUESTION, "--index", str(index_dir))


@pytest.fixture(scope="module")
def ask_json(workdir: Path, index_dir: Path, first_ingest: Run) -> Run:
    return run_rag(workdir, "ask", MISSION_QUESTION, "--index", str(index_dir), "--json")


# -- ingest --------------------------------------------------------------------------------


def test_ingest_builds_an_index(first_ingest: Run, index_dir: Path) -> None:
    assert first_ingest.returncode == 0, first_ingest.stderr
    assert "Traceback" not in first_ingest.stderr
    assert first_ingest.stdout.startswith("1 added, 0 updated, 0 unchanged, 0 skipped;"), first_ingest.stdout
    assert "holds 1 document in 3 chunks" in first_ingest.stdout
    assert (index_dir / "CURRENT").read_text().strip() == "gen-000001"
    assert (index_dir / "gen-000001" / "manifest.json").is_file()


def test_ingesting_the_same_files_again_changes_nothing(second_ingest: tuple[Run, str, set[str], str],
                                                        index_dir: Path) -> None:
    result, current_before, generations_before, current_after = second_ingest
    assert result.returncode == 0, result.stderr
    summary = "0 added, 0 updated, 1 unchanged, 0 skipped; 0 chunks embedded"
    assert result.stdout.startswith(summary), result.stdout
    assert current_after == current_before
    assert {p.name for p in index_dir.iterdir()} == generations_before


def test_ingest_skips_unreadable_files_and_keeps_the_rest(workdir: Path) -> None:
    corpus = workdir / "mixed"
    corpus.mkdir()
    (corpus / "empty.txt").write_bytes(b"")
    (corpus / "blob.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00" * 8)
    (corpus / "good.txt").write_text(GOOD_ARTICLE, encoding="utf-8")
    index = workdir / "mixed-index"

    result = run_rag(workdir, "ingest", str(corpus), "--index", str(index), "-q")

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout.startswith("1 added, 0 updated, 0 unchanged, 2 skipped;"), result.stdout
    skipped = [line for line in result.stderr.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 2, result.stderr
    assert any(str(corpus / "empty.txt") in line and "empty" in line for line in skipped), skipped
    assert any(str(corpus / "blob.txt") in line and "binary" in line for line in skipped), skipped
    assert not any(line.startswith("error:") for line in result.stderr.splitlines())

    total, docs = RagPipeline(Settings(index_dir=index)).documents()
    assert total == 1
    assert [d.id for d in docs] == ["good"]
    assert docs[0].title == "Harbour town opens a floating library"
    assert "floating library on an old ferry" in docs[0].text


@pytest.fixture(scope="module")
def unreadable_only_ingest(workdir: Path) -> tuple[Run, Path]:
    corpus = workdir / "unreadable"
    corpus.mkdir()
    (corpus / "empty.txt").write_bytes(b"   \n")
    (corpus / "blob.md").write_bytes(b"\x00\x01\x02\x03" * 64)
    index = workdir / "unreadable-index"
    return run_rag(workdir, "ingest", str(corpus), "--index", str(index), "-q"), index


def test_ingest_of_nothing_readable_fails_cleanly(unreadable_only_ingest: tuple[Run, Path]) -> None:
    result, _ = unreadable_only_ingest
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert [line for line in lines if line.startswith("error: ")] == [lines[-1]]
    assert "no articles could be read" in lines[-1]
    assert sum(line.startswith("skipped ") for line in lines) == 2, result.stderr


def test_a_failed_first_ingest_leaves_no_index(unreadable_only_ingest: tuple[Run, Path]) -> None:
    result, index = unreadable_only_ingest
    assert result.returncode != 0
    assert not (index / "CURRENT").exists()


# -- ask and search --------------------------------------------------------------------------


def test_ask_prints_the_answer_and_its_citations(ask_human: Run) -> None:
    assert ask_human.returncode == 0, ask_human.stderr
    out = ask_human.stdout
    assert out.startswith(f"Q: {MISSION_QUESTION}\n")
    answer_part, _, citations_part = out.partition("\nCitations:\n")
    assert citations_part, out
    # the answer is word-wrapped: compare with whitespace collapsed
    answer_words = " ".join(answer_part.split())
    for lender in LENDERS:
        assert lender in answer_words, f"{lender} missing from the answer"
    assert f"[1] {SEED_TITLE}" in citations_part
    assert f"{SEED_ID}, characters " in citations_part
    assert "KreditBee" in citations_part
    assert "No answer" not in out


def test_ask_json_has_the_api_shape_and_exact_quotes(ask_json: Run, seed_text: str) -> None:
    assert ask_json.returncode == 0, ask_json.stderr
    data = json.loads(ask_json.stdout)
    assert set(data) == ANSWER_KEYS == set(AskResponse.model_fields)
    assert data["question"] == MISSION_QUESTION
    assert data["abstained"] is False and data["reason"] is None
    assert data["generator"] == "extractive"
    assert data["citations"] and data["passages"]
    for citation in data["citations"]:
        assert set(citation) == CITATION_KEYS == set(CitationOut.model_fields)
        assert citation["doc_id"] == SEED_ID
        assert citation["quote"] == seed_text[citation["start"]:citation["end"]]
    for passage in data["passages"]:
        assert PASSAGE_KEYS <= set(passage) <= set(PassageOut.model_fields)
        assert passage["text"] == seed_text[passage["start"]:passage["end"]]
    quotes = " ".join(c["quote"] for c in data["citations"])
    for lender in LENDERS:
        assert lender in data["answer"]
        assert lender in quotes
    AskResponse.model_validate(data)


def test_search_json_returns_k_ranked_passages(workdir: Path, index_dir: Path, first_ingest: Run,
                                               seed_text: str) -> None:
    args = ["search", "Xiaomi lending partners", "--index", str(index_dir), "--json", "-k", "2"]
    result = run_rag(workdir, *args)
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout)["results"]
    assert len(results) == 2  # the seed article has more than two chunks
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    for passage in results:
        assert set(passage) >= PASSAGE_KEYS
        assert passage["doc_id"] == SEED_ID
        assert passage["text"] == seed_text[passage["start"]:passage["end"]]


def test_generators_lists_the_builtin_ones(workdir: Path) -> None:
    result = run_rag(workdir, "generators")
    assert result.returncode == 0, result.stderr
    names = {line.split()[0] for line in result.stdout.splitlines() if line.strip()}
    assert {"extractive", "scripted"} <= names
    assert "rag.generators.extractive:ExtractiveGenerator" in result.stdout


# -- errors ----------------------------------------------------------------------------------


def test_ask_without_an_index_is_a_clean_error(workdir: Path) -> None:
    missing = workdir / "no-index-here"
    result = run_rag(workdir, "ask", MISSION_QUESTION, "--index", str(missing))
    assert_clean_error(result, "no index", str(missing), "rag ingest")
    assert result.stdout == ""
    assert not missing.exists()


def test_unknown_generator_is_a_clean_error(workdir: Path, index_dir: Path, first_ingest: Run) -> None:
    result = run_rag(workdir, "ask", MISSION_QUESTION, "--index", str(index_dir), "--generator", "no-such-gen")
    assert_clean_error(result, "no-such-gen", "extractive", "scripted")
    assert result.stdout == ""


def test_invalid_settings_from_the_environment_are_a_clean_error(workdir: Path, index_dir: Path) -> None:
    result = run_rag(workdir, "ask", MISSION_QUESTION, "--index", str(index_dir), env={"RAG_TOP_K": "abc"})
    assert_clean_error(result, "invalid settings", "top_k")
    assert result.returncode == 2


# -- LLM generators ----------------------------------------------------------------------------


def test_ask_with_the_local_model_streams_then_prints_checked_citations(
    workdir: Path, index_dir: Path, first_ingest: Run, seed_text: str
) -> None:
    result = run_rag(workdir, "ask", MISSION_QUESTION, "--index", str(index_dir), "-g", "local",
                  env={"RAG_LLM_MAX_TOKENS": "96"})
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    out = result.stdout
    assert out.startswith(f"Q: {MISSION_QUESTION}\n\n")
    if "No answer: " in out:
        return  # an honest refusal is a valid outcome for a model this small
    citations = out.partition("\nCitations:\n")[2]
    blocks = re.findall(r"characters (\d+)-(\d+)\n((?: {6}.*\n?)+)", citations)
    assert blocks, out
    for start, end, quote in blocks:  # the printed quote, unwrapped, is the document's text
        printed = " ".join(quote.split()).removeprefix("“").removesuffix("”")
        assert printed == " ".join(seed_text[int(start):int(end)].split())


def test_ask_json_with_the_local_model_has_checked_exact_citations(
    workdir: Path, index_dir: Path, first_ingest: Run, seed_text: str
) -> None:
    result = run_rag(workdir, "ask", MISSION_QUESTION, "--index", str(index_dir), "-g", "local", "--json",
                  env={"RAG_LLM_MAX_TOKENS": "96"})
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["generator"] == "local"
    assert data["abstained"] or (data["check"]["supported"] >= 1 and data["citations"])
    for citation in data["citations"]:
        assert citation["quote"] == seed_text[citation["start"]:citation["end"]]
        assert citation["supported"] is True


def test_ask_with_an_unreachable_llm_server_is_a_clean_error(workdir: Path, index_dir: Path,
                                                             first_ingest: Run) -> None:
    from tests.servers import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    result = run_rag(workdir, "ask", MISSION_QUESTION, "--index", str(index_dir), "-g", "openai",
                  env={"RAG_OPENAI_BASE_URL": url, "RAG_OPENAI_TIMEOUT": "5"})
    assert_clean_error(result, "cannot be reached", url)


def test_ask_with_a_missing_local_model_is_a_clean_error(workdir: Path, index_dir: Path, first_ingest: Run) -> None:
    missing = workdir / "no-such-model.gguf"
    result = run_rag(workdir, "ask", MISSION_QUESTION, "--index", str(index_dir), "-g", "local",
                  "--local-model", str(missing))
    assert_clean_error(result, str(missing), "does not exist")


def test_search_as_of_takes_a_day_and_rejects_anything_else(workdir: Path, index_dir: Path, first_ingest: Run) -> None:
    ok = run_rag(workdir, "search", "Xiaomi lending partners", "--index", str(index_dir), "--json",
              "--as-of", "2020-01-01")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["results"], "an undated article stays searchable with an as-of day"
    bad = run_rag(workdir, "search", "Xiaomi", "--index", str(index_dir), "--as-of", "last week")
    assert_clean_error(bad, "as_of", "YYYY-MM-DD")
