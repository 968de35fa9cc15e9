#!/usr/bin/env python
"""Our pipeline side by side with txtai: same corpus, same passages, same embedding model, one run.

txtai lives in its own virtual environment, which this script makes (``--venv``, default
``$BENCH_DIR/txtai-venv`` with ``BENCH_DIR`` defaulting to /tmp/rag-bench) and reuses while its
stamp file and installed versions match the pins below; it is never a project dependency. The
venv gets the CPU wheel of torch first (``pip install torch==2.13.0``; a plain requirement
would pull a multi-GB CUDA build), then ``txtai==9.14.0`` under a constraints file that holds
torch and faiss-cpu (txtai's default ANN backend, one of its own requirements) where they are.
The pip log is kept beside the venv. The txtai side runs ``bench/peer_txtai_worker.py`` in that
venv with HF_HUB_OFFLINE=1 and TRANSFORMERS_OFFLINE=1, one process per configuration.

The two systems run one after the other, never at once, each with its own thread choices: txtai
leaves torch at its default (one thread per core) for indexing and search alike; our embedder
sets torch's threads per call where the library does so (the counts seen after ingest and after
the searches are printed). On a busy machine this matters most for queries: two threads that wait
on each other at every layer can take tens of times longer than one (measured here with txtai:
about 540 ms a query instead of 10 while another job held a core); ``--txtai-search-threads 1``
gives txtai's searches one thread, for a comparison that leaves this out. Measured:

* rag, model load: importing sentence-transformers is not counted; loading the packaged
  all-MiniLM-L6-v2 and embedding one query is.
* rag, ingest: ``RagPipeline(Settings(index_dir=<fresh temp dir>)).ingest([corpus], rebuild=True)``
  end to end: reading and cleaning the JSONL, chunking, embedding, BM25, writing the index to disk.
* txtai, model load: importing txtai is not counted; ``Embeddings(config)`` plus one ``transform``.
* txtai, ingest: ``Embeddings.index(passages)``: embedding and building its in-memory indexes,
  nothing read from or written to disk. Its input is exactly the strings our pipeline embedded
  (each chunk after its article's title, as ``RagPipeline._embedded_text`` makes them), read from
  our index, so the two embed the same passages with the same model folder.
* search: ``pipeline.search(question, k)`` and ``embeddings.search(question, k)``, one question at
  a time, each question once, after ``--warmup`` untimed searches of other (made-up) questions;
  p50/p95/p99 over the questions, in ms (with few questions, p99 is close to the slowest one).
* R@k: the share of questions, among those whose gold article (``evidence[].doc_id`` of the
  queries file) is in the indexed corpus, with a gold article among the top k passages; a check
  that neither side is fast by returning junk.

txtai configurations: ``dense`` (its defaults for a local model folder: transformers' AutoModel
with txtai's own mean pooling, not sentence-transformers; float32), ``hybrid`` (``hybrid=True``:
dense plus its BM25 keyword index, scores fused 50/50; the like-for-like peer of our hybrid
retrieval) and, when our embedder runs bfloat16, ``hybrid-bf16`` (``vectors={"dtype": "bfloat16"}``,
passed through to ``AutoModel.from_pretrained``), so that one txtai configuration matches ours in
precision too. ``--configs`` picks any of dense, hybrid, dense-bf16, hybrid-bf16. Ratios are
txtai's time over ours (above 1: we are faster); our target is 1.5x for ingest and query
p50. Differences the table cannot show are printed with it: txtai truncates at the tokenizer's
512 tokens where sentence-transformers stops at 256 (the count of passages longer than 256 is
printed), and above 5,000 passages txtai's default FAISS index is IVF (approximate: for the full
corpus's ~19,600 passages, IVF502 searched with nprobe 31), where ours stays exact flat up to 150,000
chunks (the index each built is printed; ``--txtai-flat`` gives txtai an exact ``IDMap,Flat`` too).
The machine's load average as each system starts is printed beside its row: on a shared machine it
tells which numbers others' work may have moved.

The queries file of realtimeqa-gold-dev holds 52 questions, so ``--queries 100`` times all 52.

Reproduce (from the repository root; the first run also builds the txtai venv, under a minute
with the wheels cached; on 2 cores the full corpus takes the better part of an hour, most of it
txtai embedding in float32 twice, and ``--configs hybrid,hybrid-bf16`` saves a third of that)::

    .venv/bin/python bench/peer_txtai.py --out /tmp/rag-bench/peer-txtai.json
    .venv/bin/python bench/peer_txtai.py --limit 40 --queries 20     # a quick check

``RAG_*`` environment variables and a ``.env`` file are read by ``Settings`` as usual; the
effective configuration of both sides is printed with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from _common import first_articles, latency_stats, print_table, resolve_from_repo, write_json

from rag.config import Settings
from rag.evaluation import GoldQuestion, load_gold
from rag.pipeline import RagPipeline

DEFAULT_CORPUS = "../shared/eval/realtimeqa-gold-dev/corpus.jsonl"
DEFAULT_QUERIES = "../shared/eval/realtimeqa-gold-dev/queries.jsonl"
WORKER = Path(__file__).resolve().parent / "peer_txtai_worker.py"
TXTAI_CONFIGS = ("dense", "hybrid", "dense-bf16", "hybrid-bf16")

# The txtai venv: what is installed, and what a reused venv must still hold.
TXTAI_VERSION = "9.14.0"
TORCH_VERSION = "2.13.0"
TORCH_BUILD = f"{TORCH_VERSION}+cpu"
FAISS_VERSION = "1.15.1"
STAMP_NAME = "rag-bench-stamp.json"
PROBED_PACKAGES = ("txtai", "torch", "transformers", "sentence-transformers", "faiss-cpu", "numpy")
TARGET_RATIO = 1.5
# Searched untimed before the timed questions, by both systems. Not gold questions: every timed
# question is then searched exactly once, so no memory of recent searches can answer it.
WARMUP_QUESTIONS = (
    "What did the central bank decide about interest rates?",
    "Which team won the championship final?",
    "Who was elected in the latest national vote?",
    "What caused the outage at the technology company?",
    "Where did the storm make landfall?",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default=DEFAULT_CORPUS,
                        help=f"JSONL corpus, one article a line; relative paths are taken from the repository root "
                             f"(default: {DEFAULT_CORPUS})")
    parser.add_argument("--limit", type=int, default=None, help="index only the first N articles")
    parser.add_argument("--queries-file", default=DEFAULT_QUERIES,
                        help=f"gold questions (id, question, evidence[{{doc_id}}]) (default: {DEFAULT_QUERIES})")
    parser.add_argument("--queries", type=int, default=100,
                        help="time the first N questions, at most as many as the file has (default: 100)")
    parser.add_argument("--warmup", type=int, default=3,
                        help=f"untimed searches of made-up questions first, at most {len(WARMUP_QUESTIONS)} "
                             "(default: 3)")
    parser.add_argument("--k", type=int, default=10, help="passages per search, and the k of R@k (default: 10)")
    parser.add_argument("--configs", default=None,
                        help=f"comma-separated txtai configurations out of {', '.join(TXTAI_CONFIGS)} "
                             "(default: dense,hybrid, plus hybrid-bf16 when our embedder runs bf16)")
    parser.add_argument("--txtai-flat", action="store_true",
                        help="give txtai an exact IDMap,Flat FAISS index (as ours) instead of its IVF above "
                             "5,000 passages")
    parser.add_argument("--txtai-search-threads", type=int, default=None,
                        help="torch threads for txtai's searches (default: torch's own, as txtai leaves it); "
                             "1 matches an embedder that runs queries on one thread")
    parser.add_argument("--bench-dir", type=Path, default=Path(os.environ.get("BENCH_DIR") or "/tmp/rag-bench"),
                        help="scratch folder ($BENCH_DIR, default /tmp/rag-bench)")
    parser.add_argument("--venv", type=Path, default=None, help="the txtai venv (default: BENCH_DIR/txtai-venv)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (index, passages) and print it")
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    return parser.parse_args(argv)


# -- the txtai venv ------------------------------------------------------------------------


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def probe_versions(python: Path) -> dict[str, str | None]:
    """Installed versions of the packages that decide the comparison, as the venv's pip sees them."""
    code = (
        "import json\nfrom importlib import metadata\nout = {}\n"
        f"for name in {list(PROBED_PACKAGES)!r}:\n"
        "    try:\n        out[name] = metadata.version(name)\n"
        "    except metadata.PackageNotFoundError:\n        out[name] = None\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    versions: dict[str, str | None] = json.loads(done.stdout)
    return versions


def wanted_versions() -> dict[str, str]:
    return {"txtai": TXTAI_VERSION, "torch": TORCH_BUILD, "faiss-cpu": FAISS_VERSION}


def venv_is_current(venv: Path) -> dict[str, str | None] | None:
    """The venv's versions when its stamp and its installed packages both match the pins, else None."""
    stamp = venv / STAMP_NAME
    if not stamp.is_file() or not venv_python(venv).is_file():
        return None
    try:
        recorded = json.loads(stamp.read_text(encoding="utf-8"))
        versions = probe_versions(venv_python(venv))
    except (OSError, ValueError, subprocess.CalledProcessError):
        return None
    wanted = wanted_versions()
    if recorded.get("wanted") != wanted or any(versions.get(k) != v for k, v in wanted.items()):
        return None
    return versions


def pip(python: Path, args: list[str], log: Path) -> None:
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"\n$ {python} -m pip {' '.join(args)}\n")
        fh.flush()
        done = subprocess.run([str(python), "-m", "pip", *args], stdout=fh, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = "".join(log.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-20:])
        raise SystemExit(f"error: pip {' '.join(args)} failed (exit {done.returncode}); log {log}:\n{tail}")


def ensure_txtai_venv(venv: Path) -> dict[str, str | None]:
    """Make (or reuse) the txtai venv and return its package versions; exits with a message
    when pip left a torch other than the CPU build we pinned."""
    versions = venv_is_current(venv)
    if versions is not None:
        print(f"reusing the txtai venv at {venv} (txtai {versions['txtai']}, torch {versions['torch']})")
        return versions
    if venv.exists():
        if not (venv / "pyvenv.cfg").is_file():
            raise SystemExit(f"error: {venv} exists and is not a virtual environment; pass another --venv")
        print(f"rebuilding the txtai venv at {venv}: its stamp or versions differ from the pins")
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    log = venv.parent / f"{venv.name}-install.log"
    log.write_text("", encoding="utf-8")
    print(f"making the txtai venv at {venv} (pip log: {log})", flush=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv_python(venv)
    # The CPU wheel first: a later plain "torch" requirement is then already met.
    pip(python, ["install", f"torch=={TORCH_VERSION}"], log)
    constraints = venv / "constraints.txt"
    constraints.write_text(f"torch=={TORCH_VERSION}\nfaiss-cpu=={FAISS_VERSION}\n", encoding="utf-8")
    pip(python, ["install", "-c", str(constraints), f"txtai=={TXTAI_VERSION}", "faiss-cpu"], log)
    versions = probe_versions(python)
    if versions.get("torch") != TORCH_BUILD:
        raise SystemExit(f"error: the txtai venv at {venv} holds torch {versions.get('torch')}, not {TORCH_BUILD}: "
                         f"pip replaced the CPU build despite the constraints (log: {log})")
    wrong = {k: versions.get(k) for k, v in wanted_versions().items() if versions.get(k) != v}
    if wrong:
        raise SystemExit(f"error: the txtai venv at {venv} holds {wrong}, not the pinned {wanted_versions()} "
                         f"(log: {log})")
    stamp = {"wanted": wanted_versions(), "installed": versions, "python": sys.version.split()[0]}
    (venv / STAMP_NAME).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
    print(f"txtai venv ready in {time.perf_counter() - started:.0f} s", flush=True)
    return versions


# -- measuring ----------------------------------------------------------------------------


def recall(ranked_docs: list[list[str]], questions: list[GoldQuestion], indexed: set[str]) -> dict[str, Any]:
    """Hits among the questions whose gold article was indexed (the others cannot be found)."""
    scored = hits = 0
    for docs, question in zip(ranked_docs, questions, strict=True):
        gold = set(question.gold_docs) & indexed
        if gold:
            scored += 1
            hits += bool(gold & set(docs))
    return {"recall": hits / scored if scored else None, "hits": hits, "questions": scored}


def run_ours(corpus: Path, questions: list[GoldQuestion], work: Path, args: argparse.Namespace,
             passages_file: Path) -> dict[str, Any]:
    """Ingest and search with our pipeline; writes the passages it embedded to ``passages_file``."""
    started = time.perf_counter()
    import sentence_transformers  # noqa: F401  (imports are not part of the model load, on either side)
    import torch

    import_s = time.perf_counter() - started
    load = os.getloadavg()[0]
    pipeline = RagPipeline(Settings(index_dir=work / "index"))
    started = time.perf_counter()
    pipeline.embedder.embed_query("load the model")
    model_load_s = time.perf_counter() - started

    print(f"rag: ingesting {corpus}", flush=True)
    started = time.perf_counter()
    report = pipeline.ingest([corpus], rebuild=True)
    ingest_s = time.perf_counter() - started
    for problem in report.problems:
        print(f"  skipped {problem}", file=sys.stderr)

    snapshot = pipeline.snapshot()
    rows: list[dict[str, Any]] = []
    for row, chunk in enumerate(snapshot.chunks):
        title = snapshot.documents[chunk.doc_id].article.title
        # The very string the embedder read for this chunk (title first, when embed_titles is on).
        rows.append({"row": row, "id": chunk.id, "doc_id": chunk.doc_id,
                     "text": pipeline._embedded_text(chunk, title)})
    with open(passages_file, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)

    threads_ingest = torch.get_num_threads()
    for warmup in WARMUP_QUESTIONS[: args.warmup]:
        pipeline.search(warmup, args.k)
    latencies: list[float] = []
    ranked: list[list[str]] = []
    for question in questions:
        started = time.perf_counter()
        passages = pipeline.search(question.question, args.k)
        latencies.append((time.perf_counter() - started) * 1000)
        ranked.append([p.doc_id for p in passages])

    s = pipeline.settings
    embedder = pipeline.embedder
    over_window = sum(n + 2 > embedder.max_sequence_tokens for n in embedder.count_tokens([r["text"] for r in rows]))
    return {
        "import_s": import_s,
        "load_before": load,
        "model_load_s": model_load_s,
        "ingest_s": ingest_s,
        "ingest_report_s": report.seconds,
        "documents": report.documents,
        "chunks": report.chunks,
        "passages": report.chunks_embedded,
        "latencies_ms": latencies,
        "ranked_docs": ranked,
        "doc_ids": sorted(snapshot.documents),
        "rows": [r["doc_id"] for r in rows],
        "settings": {
            "model_path": str(embedder.model_path),
            "backend": embedder.backend,
            "bf16": embedder.bf16,
            "embed_batch_size": s.embed_batch_size,
            "max_sequence_tokens": embedder.max_sequence_tokens,
            "passages_over_window": over_window,
            "chunk_tokens": s.chunk_tokens,
            "chunk_overlap": s.chunk_overlap,
            "embed_titles": s.embed_titles,
            "fusion": s.fusion,
            "candidates": s.candidates,
            "rerank_depth": s.rerank_depth,
            "index_kind": snapshot.kind,
        },
        # The embedder may set torch's threads per call (batches vs single queries): seen after each phase.
        "torch_threads": {"ingest": threads_ingest, "search": torch.get_num_threads()},
    }


def run_txtai(python: Path, model: str, config: str, passages: Path, questions: Path, work: Path,
              args: argparse.Namespace) -> dict[str, Any]:
    """One configuration in its own process in the txtai venv; returns the worker's JSON."""
    out = work / f"txtai-{config}.json"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    command = [str(python), str(WORKER), "--model", model, "--passages", str(passages), "--questions",
               str(questions), "--config", config, "--k", str(args.k),
               "--out", str(out)] + (["--faiss-components", "IDMap,Flat"] if args.txtai_flat else [])
    if args.txtai_search_threads:
        command += ["--search-threads", str(args.txtai_search_threads)]
    print(f"txtai: {config}", flush=True)
    load = os.getloadavg()[0]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"error: the txtai worker failed for {config} (exit {done.returncode}):\n"
                         f"{done.stdout[-3000:]}{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    result["load_before"] = load
    return result


def local_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in ("torch", "transformers", "sentence-transformers", "faiss-cpu", "numpy", "bm25s"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


# -- reporting ----------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.txtai_search_threads is not None and args.txtai_search_threads < 1:
        print("error: --txtai-search-threads must be positive", file=sys.stderr)
        return 2
    if (args.queries < 1 or not 0 <= args.warmup <= len(WARMUP_QUESTIONS) or not 1 <= args.k <= 100
            or (args.limit is not None and args.limit < 1)):
        print(f"error: --queries and --limit must be positive, --warmup in 0..{len(WARMUP_QUESTIONS)}, "
              "--k in 1..100", file=sys.stderr)
        return 2
    corpus = resolve_from_repo(args.corpus)
    queries_path = resolve_from_repo(args.queries_file)
    configs: list[str] | None = None
    if args.configs:
        configs = [c.strip() for c in args.configs.split(",") if c.strip()]
        unknown = [c for c in configs if c not in TXTAI_CONFIGS]
        if unknown or not configs:
            print(f"error: unknown txtai configurations {unknown}; choose from {', '.join(TXTAI_CONFIGS)}",
                  file=sys.stderr)
            return 2
    gold = load_gold(queries_path)
    questions = gold[: args.queries]
    if len(questions) < args.queries:
        print(f"note: {queries_path.name} has {len(gold)} questions; timing all {len(questions)} of them")

    bench_dir = args.bench_dir.expanduser().resolve()
    venv = (args.venv or bench_dir / "txtai-venv").expanduser().resolve()
    txtai_versions = ensure_txtai_venv(venv)  # before any timing: pip must not share the CPUs with a measurement

    bench_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="peer-txtai-", dir=bench_dir))
    try:
        used_corpus = corpus if args.limit is None else first_articles(
            corpus, args.limit, work / f"corpus-first-{args.limit}.jsonl")
        passages_file = work / "passages.jsonl"
        questions_file = work / "questions.jsonl"
        records = [{"question": w, "warmup": True} for w in WARMUP_QUESTIONS[: args.warmup]]
        records += [{"question": q.question} for q in questions]
        questions_file.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        ours = run_ours(used_corpus, questions, work, args, passages_file)
        if configs is None:
            configs = ["dense", "hybrid"] + (["hybrid-bf16"] if ours["settings"]["bf16"] else [])
        theirs = {name: run_txtai(venv_python(venv), ours["settings"]["model_path"], name, passages_file,
                                  questions_file, work, args) for name in configs}
    finally:
        if args.keep:
            print(f"kept the work folder at {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    indexed = set(ours["doc_ids"])
    rows_to_doc: list[str] = ours["rows"]
    ours_dtype = "int8" if ours["settings"]["backend"] == "onnx" else "bf16" if ours["settings"]["bf16"] else "fp32"
    systems: dict[str, dict[str, Any]] = {}
    systems[f"rag ({ours['settings']['fusion']} hybrid, {ours_dtype})"] = {
        "side": "rag", "model_load_s": ours["model_load_s"], "ingest_s": ours["ingest_s"],
        "passages": ours["passages"], **latency_stats(ours["latencies_ms"]),
        **recall(ours["ranked_docs"], questions, indexed), "load_before": ours["load_before"],
        "latencies_ms": ours["latencies_ms"],
    }
    for name, result in theirs.items():
        ranked = [[rows_to_doc[row] for row in hit_rows] for hit_rows in result["results"]]
        dtype = "bf16" if result["resolved"]["dtype"] == "torch.bfloat16" else "fp32"
        systems[f"txtai {name.removesuffix('-bf16')} ({dtype})"] = {
            "side": "txtai", "config": name, "model_load_s": result["model_load_s"], "ingest_s": result["index_s"],
            "passages": result["passages"], **latency_stats(result["latencies_ms"]),
            **recall(ranked, questions, indexed), "load_before": result["load_before"],
            "latencies_ms": result["latencies_ms"],
        }

    first = next(iter(theirs.values()))
    resolved = first["resolved"]
    config = {
        "corpus": f"{corpus}" + (f" (first {args.limit} articles)" if args.limit else ""),
        "documents": ours["documents"], "passages": ours["passages"], "questions": len(questions),
        "warmup_searches": args.warmup, "k": args.k, "cpus": os.cpu_count(),
        "txtai_flat": args.txtai_flat, "txtai_search_threads": args.txtai_search_threads,
        "model": ours["settings"]["model_path"],
        "rag": {**ours["settings"], "torch_threads": ours["torch_threads"], "versions": local_versions()},
        "txtai": {
            "venv": str(venv), "torch_threads": first["torch_threads"], "versions": first["versions"],
            "pip_versions": txtai_versions,
            "configs": {name: {"config": r["config"], **r["resolved"]} for name, r in theirs.items()},
        },
    }
    rag_cfg, txt_cfg = config["rag"], config["txtai"]
    print()
    print(f"corpus: {config['corpus']}: {ours['documents']} documents, {ours['passages']} passages; "
          f"{len(questions)} questions after {args.warmup} warm-up searches; k={args.k}; {os.cpu_count()} CPUs")
    print(f"rag:   torch {rag_cfg['versions']['torch']}, sentence-transformers "
          f"{rag_cfg['versions']['sentence-transformers']}, transformers {rag_cfg['versions']['transformers']}, "
          f"faiss-cpu {rag_cfg['versions']['faiss-cpu']}; torch threads {rag_cfg['torch_threads']['ingest']} "
          f"in ingest, {rag_cfg['torch_threads']['search']} in search; "
          f"{rag_cfg['backend']} backend, {ours_dtype}, batch {rag_cfg['embed_batch_size']}, "
          f"truncation at {rag_cfg['max_sequence_tokens']} tokens; {rag_cfg['index_kind']} FAISS index; "
          f"fusion {rag_cfg['fusion']}, {rag_cfg['candidates']} candidates, rerank depth {rag_cfg['rerank_depth']}")
    tv = txt_cfg["versions"]
    print(f"txtai: txtai {tv['txtai']}, torch {tv['torch']}, sentence-transformers {tv['sentence-transformers']} "
          f"(not used), transformers {tv['transformers']}, faiss-cpu {tv['faiss-cpu']}; "
          f"torch threads {txt_cfg['torch_threads']['ingest']} in index, {txt_cfg['torch_threads']['search']} in "
          f"search; {resolved['vectors_class']} + {resolved['pooling_class']}, "
          f"encode batch {resolved['encode_batch']}, index batch {resolved['index_batch']}, "
          f"truncation at {resolved['maxlength_tokens']} tokens")
    for name, r in theirs.items():
        res = r["resolved"]
        scoring = res["scoring"] or "none"
        probe = f", nprobe {res['ann_nprobe']}" if res["ann_nprobe"] is not None else ""
        print(f"  txtai {name}: {res['dtype']}, FAISS {res['ann_components']} ({res['ann_class']}{probe}), "
              f"keyword scoring {scoring}")
    print(f"passages longer than {resolved['st_window_tokens']} tokens (cut by sentence-transformers, "
          f"not by txtai below {resolved['maxlength_tokens']}): {resolved['passages_over_st_window']}")
    print("model load: imports not counted, first vector counted. ingest: rag = read + clean + chunk + embed + "
          "BM25 + write to disk; txtai = Embeddings.index() of the same passage strings, in memory. load avg: "
          "the machine's 1-minute load average as that system started (others' work shows here).")
    print()
    headers = ["system", "model load s", "ingest s", "passages/s", "p50 ms", "p95 ms", "p99 ms", f"R@{args.k}",
               "load avg"]
    table: list[list[str]] = []
    for name, s in systems.items():
        rate = s["passages"] / s["ingest_s"] if s["ingest_s"] else None
        s["passages_per_s"] = rate
        r_at = "-" if s["recall"] is None else f"{s['recall']:.2f} ({s['hits']}/{s['questions']})"
        table.append([name, fmt(s["model_load_s"], 2), fmt(s["ingest_s"], 2), fmt(rate), fmt(s["p50_ms"]),
                      fmt(s["p95_ms"]), fmt(s["p99_ms"]), r_at, fmt(s["load_before"], 2)])
    print_table(headers, table)

    ours_row = next(iter(systems.values()))
    ratios: dict[str, dict[str, float]] = {}
    ratio_rows: list[list[str]] = []
    for name, s in systems.items():
        if s["side"] != "txtai":
            continue
        ratios[name] = {"ingest": s["ingest_s"] / ours_row["ingest_s"], "query_p50": s["p50_ms"] / ours_row["p50_ms"]}
        like = s["config"] == ("hybrid-bf16" if ours["settings"]["bf16"] else "hybrid")
        ratio_rows.append([name + (" *" if like else ""), f"{ratios[name]['ingest']:.2f}x",
                           f"{ratios[name]['query_p50']:.2f}x"])
    print()
    print(f"txtai time / rag time (above 1: rag is faster; target >= {TARGET_RATIO}x); * like-for-like "
          "(hybrid, same precision)")
    print_table(["txtai configuration", "ingest", "query p50"], ratio_rows)

    if args.out:
        write_json(args.out, {"config": config, "systems": systems, "ratios": ratios, "target_ratio": TARGET_RATIO,
                              "rag_import_s": ours["import_s"],
                              "txtai_import_s": {n: r["import_s"] for n, r in theirs.items()}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
