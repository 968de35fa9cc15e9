"""`rag ingest --engine ray` on a real Ray cluster started here (a head and a worker node on
127.0.0.1): it makes the same index as a single process (documents, chunk ids and offsets,
vectors, tokens and rankings), as shards that the CLI and the API search as one index and
that `rag shards merge` makes one; a write killed midway, or a worker node lost midway,
never leaves a half-written index."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from rag.config import Settings
from rag.embedding import Embedder
from rag.pipeline import RagPipeline
from rag.store import IndexSnapshot, IndexStore
from tests.conftest import MISSION_QUESTION, SEED_ID, SEEDS
from tests.processes import assert_clean_error, rag_environment, rag_executable, run_rag, start_rag

ray = pytest.importorskip("ray", reason="the distributed extra is not installed")

from tests.ray_cluster import RayCluster  # noqa: E402  (only with the extra)

# Small chunks, so that most articles have several, with overlaps. The default embedding backend
# (onnx) embeds each text alone, so a vector never depends on which passages share a batch.
SETTINGS = {"RAG_CHUNK_TOKENS": "48", "RAG_CHUNK_OVERLAP": "12"}
QUERIES = [
    MISSION_QUESTION,
    "How many books does the floating library hold?",
    "Which airports closed because of the volcanic ash?",
    "Who won the national chess final?",
    "What did the central bank decide about interest rates?",
    "Why were the trains cancelled?",
    "harvest drought farmers",
]

ARTICLES = [
    ("library", "Harbour town opens a floating library", "Kelmsby Gazette", "2024-03-02",
     "The town of Kelmsby opened a floating library on an old ferry on Saturday, the mayor said. "
     "The ferry holds twelve thousand books and will visit four villages along the estuary each week. "
     "Volunteers spent two winters repairing the hull and fitting shelves that lock in rough weather. "
     "Children from the villages may borrow up to six books at a time, and the ferry's lower deck "
     "has a reading room with a view of the water. The council paid for the fuel for the first year."),
    ("volcano", "Glacier volcano Brennholt erupts", "Northern Wire", "2024-03-05",
     "The Brennholt volcano under the Vatnajokull glacier erupted on Tuesday night. "
     "Ash from Brennholt closed the airports of Akureyri and Egilsstadir for a day. "
     "Scientists said meltwater could flood the valley below the glacier within a week. "
     "Farmers moved sheep to higher ground, and the coast guard flew over the crater twice."),
    ("chess", "Schoolgirl wins the national chess final", "Kelmsby Gazette", "2024-03-09",
     "A twelve-year-old from Dunmore won the national chess final in Leeds after a four-hour endgame. "
     "Maya Okafor beat the defending champion with a knight sacrifice that commentators called brave. "
     "She learned the game from her grandfather and trains in the school library after lessons."),
    ("rates", "Central bank holds interest rates", "City Ledger", "2024-03-12",
     "The central bank held its main interest rate at four per cent on Thursday. "
     "Its governor said inflation had fallen for five months but wages were still rising quickly. "
     "Markets had expected the decision; the currency barely moved. "
     "Two of the nine members of the committee voted for a cut of a quarter of a point. "
     "The bank will publish new forecasts for growth and prices in May."),
    ("trains", "Storm cancels trains across the north", "Northern Wire", "2024-03-14",
     "Hundreds of trains were cancelled on Wednesday after a storm brought down power lines. "
     "Fallen trees blocked the main line between Harrow Bridge and Lowmoor for six hours. "
     "The rail operator said buses would replace trains until the lines were repaired. "
     "Wind gusts reached 120 kilometres an hour on the coast."),
    ("harvest", "Drought cuts the wheat harvest", "Farm Weekly", "2024-03-20",
     "Farmers expect the smallest wheat harvest in twenty years after a dry winter and spring. "
     "Rainfall since October was less than half the usual amount in the eastern counties. "
     "Some growers have ploughed in failed crops and sown maize, which needs less water. "
     "The farmers' union asked the government for help with the cost of feed for cattle."),
]
DUPLICATE = ("chess", "Schoolgirl wins the national chess final", "Kelmsby Gazette", "2024-03-10",
             "Correction: a twelve-year-old from Dunmore won the national chess final in York, not Leeds, "
             "after a four-hour endgame. Maya Okafor beat the defending champion with a knight sacrifice.")


def _record(item: tuple[str, str, str, str, str]) -> str:
    doc_id, title, source, published, text = item
    return json.dumps({"id": doc_id, "title": title, "source": source, "published_at": published, "text": text})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Articles in three files: a JSON Lines file (with a malformed line, a record without text
    and a later record with an earlier one's id), a text file and the seed article."""
    folder = tmp_path_factory.mktemp("ray-corpus")
    lines = [_record(a) for a in ARTICLES[:4]] + ["{not json", json.dumps({"id": "empty", "text": " "})]
    lines += [_record(a) for a in ARTICLES[4:]] + [_record(DUPLICATE)]
    (folder / "news.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "notes.txt").write_text(
        "Ferry crossing reopens after repairs\n\nThe ferry between Kelmsby and Dunmore runs again from Monday "
        "after three months of repairs to the landing stage. Tickets cost the same as last year.\n",
        encoding="utf-8",
    )
    shutil.copy(SEEDS / f"{SEED_ID}.txt", folder / f"{SEED_ID}.txt")
    return folder


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    with RayCluster(workers=1) as started:
        yield started


@pytest.fixture(scope="module")
def default_embedder() -> Embedder:
    """The embedder a new index gets by default, as the CLI builds it."""
    return Embedder(backend="auto")


def _settings(index_dir: Path) -> Settings:
    return Settings(index_dir=index_dir, chunk_tokens=int(SETTINGS["RAG_CHUNK_TOKENS"]),
                    chunk_overlap=int(SETTINGS["RAG_CHUNK_OVERLAP"]))


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory, corpus: Path, default_embedder: Embedder) -> RagPipeline:
    """The same corpus indexed by one process."""
    pipeline = RagPipeline(_settings(tmp_path_factory.mktemp("single") / "index"), embedder=default_embedder)
    pipeline.ingest([corpus])
    return pipeline


def _ray_ingest(workdir: Path, corpus: Path, index_dir: Path, address: str, *extra: str,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_rag(workdir, "ingest", str(corpus), "--index", str(index_dir), "--engine", "ray",
                   "--actors", "2", "--actor-cpus", "0.5", "--task-cpus", "0.25", "--shard-size", "3", *extra,
                   env=SETTINGS | {"RAY_ADDRESS": address} | (env or {}))


@pytest.fixture(scope="module")
def ray_build(tmp_path_factory: pytest.TempPathFactory, corpus: Path,
              cluster: RayCluster) -> tuple[subprocess.CompletedProcess[str], Path]:
    workdir = tmp_path_factory.mktemp("ray-build")
    index_dir = workdir / "index"
    return _ray_ingest(workdir, corpus, index_dir, cluster.address, "-q"), index_dir


@pytest.fixture(scope="module")
def sharded(ray_build: tuple[subprocess.CompletedProcess[str], Path], default_embedder: Embedder) -> RagPipeline:
    result, index_dir = ray_build
    assert result.returncode == 0, result.stderr
    return RagPipeline(_settings(index_dir), embedder=default_embedder)


def _assert_same_index(expected: IndexSnapshot, found: IndexSnapshot) -> None:
    """The same documents, chunks, tokens and rows, and vectors equal within float tolerance."""
    assert list(found.documents) == list(expected.documents)
    assert found.documents == expected.documents  # articles and content hashes
    assert found.chunks == expected.chunks  # ids, documents, positions, offsets, texts, in row order
    assert found.chunk_terms() == expected.chunk_terms()
    a, b = expected.all_vectors(), found.all_vectors()
    assert a.shape == b.shape
    np.testing.assert_allclose(b, a, atol=1e-4, rtol=0)
    assert np.all(np.abs(np.sum(a * b, axis=1) - 1.0) < 1e-5)
    assert found.vectors.ntotal == found.lexical.size == len(found.chunks)


def _assert_same_rankings(expected: RagPipeline, found: RagPipeline) -> None:
    for query in QUERIES:
        want, got = expected.search(query, k=10), found.search(query, k=10)
        assert [p.chunk_id for p in got] == [p.chunk_id for p in want], query
        assert [(p.start, p.end, p.text) for p in got] == [(p.start, p.end, p.text) for p in want]
        np.testing.assert_allclose([p.score for p in got], [p.score for p in want], atol=1e-4)


# -- the same index as one process ---------------------------------------------------------------


@pytest.mark.slow
def test_the_cluster_build_is_the_single_process_index(
    ray_build: tuple[subprocess.CompletedProcess[str], Path], sharded: RagPipeline, single: RagPipeline,
    cluster: RayCluster,
) -> None:
    result, index_dir = ray_build
    assert cluster.alive_nodes() == 2
    assert "Traceback" not in result.stderr
    expected = single.snapshot()
    assert {SEED_ID, "library", "chess", "notes"} <= set(expected.documents)
    assert any(c.position > 0 for c in expected.chunks)  # several chunks per article, overlapping
    _assert_same_index(expected, sharded.snapshot())
    _assert_same_rankings(single, sharded)
    # The later "chess" record replaced the first, in the first one's place, as in one process.
    assert "York, not Leeds" in sharded.document("chess").text
    order = list(sharded.snapshot().documents)
    assert order.index("chess") == order.index("volcano") + 1 < order.index("rates")
    # Problems are reported as one process reports them: the malformed line, the empty record, the repeated id.
    for where in ("news.jsonl:5", "news.jsonl:6", "news.jsonl:9"):
        assert where in result.stderr
    assert "duplicate document id 'chess'" in result.stderr
    assert f"The index in {index_dir}/ holds {len(expected.documents)} documents in {len(expected.chunks)} chunks" \
        in result.stdout


@pytest.mark.slow
def test_the_manifest_records_the_shards(sharded: RagPipeline, single: RagPipeline) -> None:
    manifest = sharded.store.read_manifest()
    shards = manifest["shards"]
    assert manifest["format_version"] == 3
    assert [s["name"] for s in shards] == [f"shard-{i:05d}" for i in range(len(shards))]
    assert [s["documents"] for s in shards[:-1]] == [3] * (len(shards) - 1)  # --shard-size 3, input order
    assert sum(s["documents"] for s in shards) == len(single.snapshot().documents) == manifest["counts"]["documents"]
    assert sum(s["chunks"] for s in shards) == len(single.snapshot().chunks) == manifest["counts"]["chunks"]
    generation = sharded.store.root / manifest["generation"]
    for shard in shards:
        files = {p.relative_to(generation / "shards" / shard["name"]).as_posix()
                 for p in (generation / "shards" / shard["name"]).rglob("*") if p.is_file()}
        assert {"documents.jsonl", "chunks.jsonl", "vectors.npy", "bm25/terms.ids.npy"} <= files
        assert not any(name.startswith("bm25/") and not name.startswith("bm25/terms.") for name in files)


@pytest.mark.slow
def test_bm25_over_shards_uses_global_statistics(sharded: RagPipeline, single: RagPipeline) -> None:
    """Each shard alone would score terms with its own IDF; the loaded index scores them as one."""
    from rag.lexical import LexicalIndex, tokenize

    snapshot, expected = sharded.snapshot(), single.snapshot()
    terms = tokenize(["ferry library books ash volcano chess rates"])[0]
    assert snapshot.lexical.document_frequency(terms) == expected.lexical.document_frequency(terms)
    assert snapshot.lexical.idf(terms) == pytest.approx(expected.lexical.idf(terms))
    first = LexicalIndex.build(snapshot.chunk_terms().select(
        np.arange(len(snapshot.chunks)) < sharded.store.read_manifest()["shards"][0]["chunks"]))
    assert first.idf(terms) != pytest.approx(expected.lexical.idf(terms))  # a shard's own statistics differ
    for query in QUERIES:
        got, want = snapshot.lexical.search(query, 20), expected.lexical.search(query, 20)
        assert [row for row, _ in got] == [row for row, _ in want]
        assert [score for _, score in got] == pytest.approx([score for _, score in want])


# -- the edges on a sharded index ----------------------------------------------------------------


@pytest.mark.slow
def test_cli_and_api_answer_from_a_sharded_index_as_from_one(
    sharded: RagPipeline, single: RagPipeline, tmp_path: Path, default_embedder: Embedder
) -> None:
    from api.app import create_app
    from tests.servers import serve_app

    index = str(sharded.store.root)
    found = run_rag(tmp_path, "search", "--json", "-k", "8", MISSION_QUESTION, "--index", index, env=SETTINGS)
    assert found.returncode == 0, found.stderr
    want = [p.chunk_id for p in single.search(MISSION_QUESTION, k=8)]
    assert [p["chunk_id"] for p in json.loads(found.stdout)["results"]] == want

    answered = run_rag(tmp_path, "ask", "--json", MISSION_QUESTION, "--index", index, env=SETTINGS)
    assert answered.returncode == 0, answered.stderr
    answer, expected = json.loads(answered.stdout), single.ask(MISSION_QUESTION)
    assert answer["answer"] == expected.answer
    assert [(c["doc_id"], c["start"], c["end"]) for c in answer["citations"]] == [
        (c.doc_id, c.start, c.end) for c in expected.citations]
    assert {c["doc_id"] for c in answer["citations"]} == {SEED_ID}
    assert answer["citations"] and not answer["abstained"]

    shown = run_rag(tmp_path, "shards", "show", "--json", "--index", index)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["shards"] == sharded.store.read_manifest()["shards"]

    app = create_app(pipeline=RagPipeline(_settings(sharded.store.root), embedder=default_embedder))
    with serve_app(app) as client:
        listed = client.get("/documents", params={"limit": 100}).json()
        assert listed["total"] == len(single.snapshot().documents)
        assert sorted(d["id"] for d in listed["documents"]) == sorted(single.snapshot().documents)
        chess = client.get("/documents/chess").json()
        assert "York, not Leeds" in chess["text"]
        searched = client.get("/search", params={"q": "Who won the national chess final?", "k": 5}).json()
        assert [p["chunk_id"] for p in searched["results"]] == [
            p.chunk_id for p in single.search("Who won the national chess final?", k=5)]


@pytest.mark.slow
def test_merging_the_shards_keeps_the_index_and_its_rankings(
    sharded: RagPipeline, single: RagPipeline, tmp_path: Path, default_embedder: Embedder
) -> None:
    index_dir = tmp_path / "index"
    shutil.copytree(sharded.store.root, index_dir)
    merged = run_rag(tmp_path, "shards", "merge", "--index", str(index_dir), env=SETTINGS)
    assert merged.returncode == 0, merged.stderr
    assert "Merged into gen-" in merged.stdout
    pipeline = RagPipeline(_settings(index_dir), embedder=default_embedder)
    assert "shards" not in pipeline.store.read_manifest()
    _assert_same_index(single.snapshot(), pipeline.snapshot())
    _assert_same_rankings(single, pipeline)
    again = run_rag(tmp_path, "shards", "merge", "--index", str(index_dir), env=SETTINGS)
    assert again.returncode == 0 and "no shards; nothing to merge" in again.stdout
    # A write on a sharded index commits an unsharded one with the change.
    written = tmp_path / "written"
    shutil.copytree(sharded.store.root, written)
    deleted = run_rag(tmp_path, "delete", "volcano", "--index", str(written), env=SETTINGS)
    assert deleted.returncode == 0, deleted.stderr
    after = RagPipeline(_settings(written), embedder=default_embedder).snapshot()
    assert set(after.documents) == set(single.snapshot().documents) - {"volcano"}
    assert "shards" not in after.manifest


# -- clean refusals ------------------------------------------------------------------------------


def test_the_ray_engine_replaces_an_index_only_with_rebuild(
    single: RagPipeline, corpus: Path, tmp_path: Path
) -> None:
    index_dir = tmp_path / "index"
    shutil.copytree(single.store.root, index_dir)
    before = (index_dir / "CURRENT").read_text()
    result = run_rag(tmp_path, "ingest", str(corpus), "--index", str(index_dir), "--engine", "ray", "-q",
                     env=SETTINGS)
    assert_clean_error(result, "--rebuild")
    assert (index_dir / "CURRENT").read_text() == before


def test_an_unreachable_cluster_is_a_clean_error(tmp_path: Path, corpus: Path) -> None:
    from tests.servers import free_port

    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    result = run_rag(tmp_path, "ingest", str(corpus), "--index", str(tmp_path / "index"), "--engine", "ray", "-q",
                     "--ray-address", address)
    assert_clean_error(result, f"cannot reach the Ray cluster at {address}")
    assert not (tmp_path / "index" / "CURRENT").exists()


def test_without_ray_the_engine_names_the_extra(tmp_path: Path, corpus: Path) -> None:
    """The command's own code, with Ray made unimportable, in a process of its own."""
    code = ("import sys; sys.modules['ray'] = None; sys.argv = ['rag'] + sys.argv[1:]; "
            "from rag.cli import main; main()")
    python = str(Path(rag_executable()).with_name("python"))
    result = subprocess.run([python, "-c", code, "ingest", str(corpus), "--index", str(tmp_path / "index"),
                             "--engine", "ray"], cwd=tmp_path, env=rag_environment(), capture_output=True,
                            text=True, timeout=300)
    assert_clean_error(result, "rag-news[distributed]")
    assert not (tmp_path / "index" / "CURRENT").exists()


# -- failures midway -----------------------------------------------------------------------------


def _leftovers(index_dir: Path) -> list[str]:
    current = IndexStore(index_dir).current_generation()
    return sorted(p.name for p in index_dir.iterdir()
                  if ".tmp-" in p.name or (p.name.startswith("gen-") and current is not None and p.name > current))


def _wait_for_line(process: subprocess.Popen[str], wanted: str, timeout: float = 400) -> None:
    assert process.stderr is not None
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line and process.poll() is not None:
            break
        seen.append(line)
        if wanted in line:
            return
    raise AssertionError(f"never saw {wanted!r}:\n{''.join(seen)}")


@pytest.mark.slow
def test_a_killed_writer_leaves_the_previous_index_whole(
    single: RagPipeline, corpus: Path, cluster: RayCluster, tmp_path: Path, default_embedder: Embedder
) -> None:
    """Killed after its shards were renamed into place but before the switch: readers keep the
    old generation, and the next writer removes what was left."""
    index_dir = tmp_path / "index"
    shutil.copytree(single.store.root, index_dir)
    before = (index_dir / "CURRENT").read_text()
    process = start_rag(tmp_path, "ingest", str(corpus), "--index", str(index_dir), "--engine", "ray", "--rebuild",
                        "-q", "--actors", "2", "--actor-cpus", "0.5", "--task-cpus", "0.25", "--shard-size", "3",
                        env=SETTINGS | {"RAY_ADDRESS": cluster.address, "RAG_DEBUG_PAUSE_AT": "renamed"})
    try:
        _wait_for_line(process, "paused at renamed")
        assert _leftovers(index_dir)  # the new generation is on disk, not current
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert (index_dir / "CURRENT").read_text() == before
    reader = RagPipeline(_settings(index_dir), embedder=default_embedder)
    _assert_same_index(single.snapshot(), reader.snapshot())
    reader.delete(["volcano"])  # the next writer rolls back the unfinished generation first
    assert _leftovers(index_dir) == []
    assert set(reader.snapshot().documents) == set(single.snapshot().documents) - {"volcano"}


@pytest.mark.slow
def test_losing_a_worker_node_midway_finishes_or_fails_cleanly(
    single: RagPipeline, corpus: Path, tmp_path: Path, default_embedder: Embedder
) -> None:
    """A cluster of its own, whose worker node is killed (every process, SIGKILL) while its
    embedding actor works: Ray retries the work on the head, or the build fails with one clear
    line (at the latest once it has made no progress for --stall-timeout); either way the index
    is whole: the new one, equal to one process's, or the old one."""
    index_dir = tmp_path / "index"
    shutil.copytree(single.store.root, index_dir)
    before = (index_dir / "CURRENT").read_text()
    with RayCluster(workers=1) as own:
        process = start_rag(tmp_path, "ingest", str(corpus), "--index", str(index_dir), "--engine", "ray",
                            "--rebuild", "--actors", "2", "--actor-cpus", "0.5", "--task-cpus", "0.25",
                            "--shard-size", "3", "--batch-size", "1", "--stall-timeout", "60",
                            env=SETTINGS | {"RAY_ADDRESS": own.address})
        try:
            deadline = time.monotonic() + 300
            while not _embedding_on_worker(own) and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            assert process.poll() is None, "the build ended before the worker node embedded anything"
            own.kill_worker_nodes()
            _, stderr = process.communicate(timeout=600)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert "Traceback" not in stderr
    assert _leftovers(index_dir) == []
    reader = RagPipeline(_settings(index_dir), embedder=default_embedder)
    if process.returncode == 0:
        assert (index_dir / "CURRENT").read_text() != before
        _assert_same_index(single.snapshot(), reader.snapshot())
    else:
        assert stderr.strip().splitlines()[-1].startswith("error: "), stderr
        assert (index_dir / "CURRENT").read_text() == before
        _assert_same_index(single.snapshot(), reader.snapshot())


def _embedding_on_worker(cluster: RayCluster) -> bool:
    """Whether an embedding actor of the worker node has started."""
    for pid in cluster.worker_pids():
        try:
            name = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "Embed" in name:
            return True
    return False
