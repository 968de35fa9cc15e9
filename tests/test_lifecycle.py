"""A corpus that changes: additions, corrections and deletions without a rebuild,
one writer at a time, readers that see whole generations, and writers killed
with SIGKILL at every step of a commit."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from rag.config import Settings
from rag.embedding import Embedder
from rag.errors import DocumentNotFoundError, IndexBusyError
from rag.lexical import ChunkTerms, LexicalIndex
from rag.pipeline import RagPipeline
from rag.store import PAUSE_STEPS, IndexStore
from rag.types import Article
from tests.conftest import SEED_ID, SEEDS
from tests.processes import assert_clean_error, run_rag, start_rag

LIBRARY = Article(
    id="library", title="Harbour town opens a floating library", source="Kelmsby Gazette",
    text="The town of Kelmsby opened a floating library on an old ferry on Saturday. "
         "The ferry holds twelve thousand books and visits four villages along the estuary each week.",
)
LIBRARY_CORRECTED = dataclasses.replace(
    LIBRARY,
    text="The town of Kelmsby opened a floating library on an old ferry on Saturday. "
         "Correction: the ferry holds nine thousand books and visits six villages along the estuary.",
)
VOLCANO = Article(
    id="volcano", title="Glacier volcano Brennholt erupts", source="Northern Wire",
    text="The Brennholt volcano under the Vatnajokull glacier erupted on Tuesday night. "
         "Ash from Brennholt closed two airports in the north for a day.",
)
CHESS = Article(
    id="chess", title="Schoolgirl wins the national chess final", source="Kelmsby Gazette",
    text="A twelve-year-old from Dunmore won the national chess final in Leeds after a four-hour endgame.",
)


def _write_records(path: Path, articles: list[Article]) -> Path:
    path.write_text("".join(json.dumps(a.to_dict()) + "\n" for a in articles), encoding="utf-8")
    return path


def _doc_ids(index_dir: Path) -> set[str]:
    return set(IndexStore(index_dir).load().documents)


def _assert_whole(index_dir: Path) -> set[str]:
    """The committed generation is complete and consistent; returns its document ids."""
    snapshot = IndexStore(index_dir).load()
    assert snapshot.vectors.ntotal == len(snapshot.chunks) == snapshot.lexical.size
    assert {c.doc_id for c in snapshot.chunks} == set(snapshot.documents)
    for chunk in snapshot.chunks:
        assert snapshot.documents[chunk.doc_id].article.text[chunk.start:chunk.end] == chunk.text
    return set(snapshot.documents)


def _leftovers(index_dir: Path) -> list[str]:
    """Files or directories a finished writer should not leave behind."""
    current = IndexStore(index_dir).current_generation()
    return sorted(p.name for p in index_dir.iterdir()
                  if p.name.startswith(".gen-") or ".tmp-" in p.name
                  or (p.name.startswith("gen-") and current is not None and p.name > current))


# -- adding, correcting and deleting in one process ------------------------------------------


@pytest.fixture
def corpus_pipeline(make_pipeline: Callable[..., RagPipeline]) -> RagPipeline:
    pipeline = make_pipeline()
    pipeline.ingest([SEEDS])
    pipeline.add([LIBRARY, VOLCANO, CHESS])
    return pipeline


def test_a_deleted_article_is_never_retrieved_or_cited_again(corpus_pipeline: RagPipeline) -> None:
    pipeline = corpus_pipeline
    question = "Which airports did the Brennholt volcano ash close?"
    assert any(p.doc_id == "volcano" for p in pipeline.search(question, k=5))
    before = pipeline.snapshot()
    seed_vectors = before.all_vectors()[before.rows_by_doc[SEED_ID]]

    report = pipeline.delete(["volcano"])

    assert (report.deleted, report.missing, report.chunks_embedded) == (["volcano"], [], 0)
    after = pipeline.snapshot()
    assert after.generation != before.generation
    assert "volcano" not in after.documents and all(c.doc_id != "volcano" for c in after.chunks)
    assert _assert_whole(pipeline.settings.index_dir) == {SEED_ID, "library", "chess"}
    assert after.lexical.search("Brennholt Vatnajokull", k=10) == []  # its terms left BM25 too
    fresh = ChunkTerms.of([c.text for c in after.chunks])
    saved = LexicalIndex.load_terms(after.directory / "bm25")  # type: ignore[operator]
    assert saved == fresh, "saved tokens and sentence sizes == fresh ones"
    rebuilt = LexicalIndex.build(fresh)
    for query in ("Xiaomi lenders credit", "floating library ferry", "chess final Leeds"):
        assert after.lexical.search(query, k=5) == rebuilt.search(query, k=5)
    assert all(p.doc_id != "volcano" for p in pipeline.search(question, k=20))
    assert all(c.doc_id != "volcano" for c in pipeline.ask(question).citations)
    with pytest.raises(DocumentNotFoundError):
        pipeline.document("volcano")
    # the articles that stay keep their vectors (copied, not embedded again)
    np.testing.assert_array_equal(after.all_vectors()[after.rows_by_doc[SEED_ID]], seed_vectors)


def test_a_corrected_article_is_cited_with_its_new_text_and_offsets(corpus_pipeline: RagPipeline) -> None:
    pipeline = corpus_pipeline
    chunks_of_library = len(pipeline.snapshot().rows_by_doc["library"])

    report = pipeline.add([LIBRARY_CORRECTED])

    assert report.updated == ["library"] and not report.added
    assert report.chunks_embedded == chunks_of_library  # only the corrected article was embedded
    answer = pipeline.ask("How many books does the floating library ferry hold?")
    cited = [c for c in answer.citations if c.doc_id == "library"]
    assert cited, answer
    for citation in cited:
        assert LIBRARY_CORRECTED.text[citation.start:citation.end] == citation.quote
    assert "nine thousand" in answer.answer and "twelve thousand" not in answer.answer
    _assert_whole(pipeline.settings.index_dir)


def test_unchanged_content_is_skipped_by_hash_and_commits_nothing(corpus_pipeline: RagPipeline) -> None:
    pipeline = corpus_pipeline
    generation = pipeline.snapshot().generation
    report = pipeline.add([VOLCANO, CHESS])
    assert report.unchanged == ["volcano", "chess"] and report.chunks_embedded == 0
    assert report.generation == generation == pipeline.store.current_generation()


def test_add_without_replace_keeps_the_stored_version(corpus_pipeline: RagPipeline) -> None:
    report = corpus_pipeline.add([LIBRARY_CORRECTED], replace=False)
    assert not report.updated and "already stored with other content" in report.problems[0].message
    assert corpus_pipeline.document("library").text == LIBRARY.text


def test_articles_over_the_size_limit_are_skipped_with_a_message(
    make_pipeline: Callable[..., RagPipeline]
) -> None:
    pipeline = make_pipeline(max_document_chars=120)
    report = pipeline.add([CHESS, LIBRARY])
    assert report.added == ["chess"]
    [problem] = report.problems
    assert problem.message == (f"document 'library' is {len(LIBRARY.text)} characters long; the limit is 120 "
                               "(RAG_MAX_DOCUMENT_CHARS)")
    assert set(pipeline.snapshot().documents) == {"chess"}


def test_deleting_unknown_ids_changes_nothing(corpus_pipeline: RagPipeline) -> None:
    generation = corpus_pipeline.snapshot().generation
    report = corpus_pipeline.delete(["no-such-id"])
    assert (report.deleted, report.missing) == ([], ["no-such-id"])
    assert corpus_pipeline.store.current_generation() == generation


def test_the_space_of_deletions_is_reclaimed(corpus_pipeline: RagPipeline) -> None:
    index_dir = corpus_pipeline.settings.index_dir
    before = index_dir / corpus_pipeline.snapshot().generation
    size_before = sum(p.stat().st_size for p in before.rglob("*") if p.is_file())
    corpus_pipeline.delete([SEED_ID])
    corpus_pipeline.delete(["chess"])
    current = index_dir / corpus_pipeline.snapshot().generation
    size_after = sum(p.stat().st_size for p in current.rglob("*") if p.is_file())
    assert size_after < size_before / 2  # the seed article was most of the index
    assert sorted(p.name for p in index_dir.glob("gen-*")) == [f"gen-{n:06d}" for n in (3, 4)]
    assert not before.exists()


# -- one writer at a time ---------------------------------------------------------------------


def test_a_second_writer_is_refused_clearly_or_waits(corpus_pipeline: RagPipeline) -> None:
    other_process = IndexStore(corpus_pipeline.settings.index_dir)  # its own lock file descriptor
    with other_process.writer():
        with pytest.raises(IndexBusyError, match=r"is being written by process \d+; only one writer"):
            corpus_pipeline.delete(["chess"], wait=0)
        assert "chess" in corpus_pipeline.snapshot().documents

    released = threading.Event()

    def hold_then_release() -> None:
        with other_process.writer():
            released.wait(5)
            time.sleep(0.3)

    holder = threading.Thread(target=hold_then_release)
    holder.start()
    time.sleep(0.1)
    released.set()
    report = corpus_pipeline.delete(["chess"], wait=10)  # waits for the holder, then goes ahead
    holder.join()
    assert report.deleted == ["chess"]


def test_a_writer_rolls_back_what_a_killed_one_left(corpus_pipeline: RagPipeline) -> None:
    index_dir = corpus_pipeline.settings.index_dir
    current = corpus_pipeline.store.current_generation()
    assert current is not None
    (index_dir / ".gen-000042.tmp-99999").mkdir()
    (index_dir / ".CURRENT.tmp-99999").write_text("gen-000042\n")
    orphan = index_dir / "gen-000042"  # renamed into place, never made current
    orphan.mkdir()
    (orphan / "manifest.json").write_text("{}")

    report = corpus_pipeline.delete(["chess"])

    assert report.generation == f"gen-{int(current.split('-')[1]) + 1:06d}"
    assert _leftovers(index_dir) == []
    assert _assert_whole(index_dir) == {SEED_ID, "library", "volcano"}


# -- readers during writes ----------------------------------------------------------------------


def test_readers_see_whole_generations_while_another_process_writes(
    tmp_path: Path, embedder: Embedder
) -> None:
    index_dir = tmp_path / "index"
    reader = RagPipeline(Settings(index_dir=index_dir), embedder=embedder)
    reader.ingest([SEEDS])
    reader.add([LIBRARY])
    base = {SEED_ID, "library"}
    allowed = [base, base | {"volcano"}, base | {"chess"}, base | {"volcano", "chess"}]
    volcano = _write_records(tmp_path / "volcano.jsonl", [VOLCANO])
    chess = _write_records(tmp_path / "chess.jsonl", [CHESS])

    seen: dict[int, list[tuple[str, set[str]]]] = {0: [], 1: []}
    problems: list[str] = []
    stop = threading.Event()

    def read(reader_number: int) -> None:
        while not stop.is_set():
            try:
                snapshot = reader.snapshot()
                ids = set(snapshot.documents)
                chunks_ok = snapshot.vectors.ntotal == len(snapshot.chunks) == snapshot.lexical.size
                if ids not in allowed or not chunks_ok or {c.doc_id for c in snapshot.chunks} != ids:
                    problems.append(f"{snapshot.generation}: a mixed generation {sorted(ids)}")
                for passage in reader.search("Which lenders did Xiaomi partner with?", k=3):
                    if passage.doc_id not in ids | {"volcano", "chess"}:
                        problems.append(f"unknown document {passage.doc_id}")
                seen[reader_number].append((snapshot.generation, ids))
            except Exception as exc:  # any failure of a reader is what this test looks for
                problems.append(repr(exc))

    readers = [threading.Thread(target=read, args=(n,)) for n in seen]
    for thread in readers:
        thread.start()
    try:
        for args in (("add", str(volcano)), ("add", str(chess)), ("delete", "volcano"), ("delete", "chess")):
            result = run_rag(tmp_path, *args, "--index", str(index_dir), "--wait", "60")
            assert result.returncode == 0, result.stderr
    finally:
        time.sleep(0.5)
        stop.set()
        for thread in readers:
            thread.join()

    assert problems == []
    for observed in seen.values():
        generations = [generation for generation, _ in observed]
        assert len(set(generations)) >= 3, "a reader did not see the other process's commits"
        assert generations == sorted(generations)  # never back to an older generation
        assert observed[-1][1] == base


# -- SIGKILL during a write ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def base_index(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Path:
    index_dir = tmp_path_factory.mktemp("crash") / "index"
    RagPipeline(Settings(index_dir=index_dir), embedder=embedder).ingest([SEEDS])
    return index_dir


@pytest.fixture
def crash_site(tmp_path: Path, base_index: Path) -> Iterator[tuple[Path, Path]]:
    import shutil

    index_dir = tmp_path / "index"
    shutil.copytree(base_index, index_dir)
    yield index_dir, _write_records(tmp_path / "news.jsonl", [LIBRARY, VOLCANO, CHESS])


def _wait_for_line(process: subprocess.Popen[str], wanted: str, timeout: float = 300) -> None:
    assert process.stderr is not None
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line and process.poll() is not None:
            break
        lines.append(line)
        if wanted in line:
            return
    raise AssertionError(f"the writer never printed {wanted!r}; it printed {''.join(lines)!r}")


@pytest.mark.parametrize("step", PAUSE_STEPS)
def test_a_writer_killed_at_any_step_leaves_the_last_commit_whole(
    crash_site: tuple[Path, Path], step: str
) -> None:
    index_dir, news = crash_site
    writer = start_rag(index_dir.parent, "add", str(news), "--index", str(index_dir), "-q",
                       env={"RAG_DEBUG_PAUSE_AT": step})
    try:
        _wait_for_line(writer, f"paused at {step}")
        if step == "embedded":  # while it holds the lock, a second writer is told so
            second = run_rag(index_dir.parent, "delete", SEED_ID, "--index", str(index_dir))
            assert_clean_error(second, f"being written by process {writer.pid}")
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL

    expected = {SEED_ID, "library", "volcano", "chess"} if step == "switched" else {SEED_ID}
    assert _assert_whole(index_dir) == expected

    again = run_rag(index_dir.parent, "add", str(news), "--index", str(index_dir), "-q")
    assert again.returncode == 0, again.stderr
    assert _assert_whole(index_dir) == {SEED_ID, "library", "volcano", "chess"}
    assert _leftovers(index_dir) == []


@pytest.mark.slow
def test_writers_killed_at_arbitrary_moments_never_break_the_index(
    tmp_path: Path, base_index: Path
) -> None:
    import shutil

    index_dir = tmp_path / "index"
    shutil.copytree(base_index, index_dir)
    articles = [
        Article(id=f"wire-{n}", title=f"Harbour report {n}",
                text=" ".join(f"Harbour report {n} says ship {n}-{m} docked with {m * 7} containers of grain."
                              for m in range(60)))
        for n in range(12)
    ]
    news = _write_records(tmp_path / "wire.jsonl", articles)
    before, after = {SEED_ID}, {SEED_ID} | {a.id for a in articles}
    outcomes = []
    for delay in (1.0, 3.0, 5.0, 7.0, 9.0):
        writer = start_rag(tmp_path, "add", str(news), "--index", str(index_dir), "-q")
        time.sleep(delay)
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
        ids = _assert_whole(index_dir)
        assert ids in (before, after)
        outcomes.append(ids == after)
        if ids == after:  # it finished first: start again from the old state
            assert run_rag(tmp_path, "delete", *sorted(after - before), "--index", str(index_dir)).returncode == 0
    assert not all(outcomes), "every writer finished before it was killed; the kills tested nothing"
    final = run_rag(tmp_path, "add", str(news), "--index", str(index_dir), "-q")
    assert final.returncode == 0, final.stderr
    assert _assert_whole(index_dir) == after and _leftovers(index_dir) == []
