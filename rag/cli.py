"""The ``rag`` command: a thin edge over :class:`rag.pipeline.RagPipeline`.

Errors of the library (:class:`rag.errors.RagError`) and invalid settings are
reported here, in one place, as one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import json
import logging
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from rag.config import Settings
from rag.errors import InvalidRequestError, RagError
from rag.types import Answer, Passage, SearchFilters

F = TypeVar("F", bound=Callable[..., Any])
EXIT_ERROR = 1
EXIT_USAGE = 2


class _Group(click.Group):
    """Turns library and settings errors into one clean line instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RagError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_ERROR)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
            )
            click.echo(f"error: invalid settings: {problems}", err=True)
            sys.exit(EXIT_USAGE)


def _index_option(f: F) -> F:
    return click.option(
        "--index", "index_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
        help="Index directory (default: RAG_INDEX_DIR or ./index).",
    )(f)


def _json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON (the API's format).")(f)


def _k_option(f: F) -> F:
    return click.option("-k", "k", type=click.IntRange(1, 100), default=None,
                        help="Number of passages to retrieve (default: RAG_TOP_K).")(f)


def _filter_options(f: F) -> F:
    f = click.option("--source", "sources", multiple=True, help="Only articles from this source (repeatable).")(f)
    f = click.option("--after", "published_after", default=None, help="Only articles published on/after DATE.")(f)
    f = click.option("--before", "published_before", default=None,
                     help="Only articles published on/before DATE.")(f)
    f = click.option("--as-of", "as_of", default=None,
                     help="The day (YYYY-MM-DD) the question is asked: later articles are left out, "
                          "recent ones preferred.")(f)
    return f


def _settings(index_dir: Path | None, **overrides: Any) -> Settings:
    values = {key: value for key, value in overrides.items() if value is not None}
    if index_dir is not None:
        values["index_dir"] = index_dir
    return Settings(**values)


def _pipeline(settings: Settings) -> Any:
    from rag.pipeline import RagPipeline  # heavy imports only when a command needs them

    return RagPipeline(settings)


def _filters(sources: tuple[str, ...], published_after: str | None, published_before: str | None,
             as_of: str | None = None) -> SearchFilters:
    return SearchFilters(tuple(sources), published_after, published_before, as_of)


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rag-news", prog_name="rag")
def cli() -> None:
    """Ask questions over a corpus of news articles; answers cite exact spans."""


def _wait_option(f: F) -> F:
    return click.option(
        "--wait", type=click.FloatRange(0, 3600), default=0.0, show_default=True, metavar="SECONDS",
        help="How long to wait when another process is writing to the index.",
    )(f)


def _report_problem(problem: Any) -> None:
    click.echo(f"skipped {problem}", err=True)


def _print_report(report: Any, settings: Settings, as_json: bool) -> None:
    if as_json:
        _print_json(report.to_dict())
        return
    done = [f"{len(report.added)} added", f"{len(report.updated)} updated", f"{len(report.unchanged)} unchanged"]
    if report.deleted or report.missing:
        done = [f"{len(report.deleted)} deleted", f"{len(report.missing)} not found"]
    else:
        done.append(f"{len(report.problems)} skipped")
    click.echo(
        f"{', '.join(done)}; {report.chunks_embedded} chunks embedded in {report.seconds:.1f}s. The index in "
        f"{settings.index_dir}/ holds {report.documents} document{'s' if report.documents != 1 else ''} "
        f"in {report.chunks} chunks."
    )


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@_index_option
@_json_option
@click.option("--rebuild", is_flag=True, help="Start the index afresh from PATHS alone.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@_wait_option
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: this process, updating the index in place; ray: build the whole index on a Ray "
                   "cluster as shards (the 'distributed' extra; needs --rebuild if an index exists).")
@click.option("--ray-address", default=None, envvar="RAY_ADDRESS", show_envvar=True, metavar="HOST:PORT",
              help="With --engine ray: the cluster to use (default: start a local one).")
@click.option("--actors", type=click.IntRange(1, 10_000), default=2, show_default=True,
              help="With --engine ray: embedding actors, each loading the model once.")
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=32, show_default=True,
              help="With --engine ray: articles per batch sent to an actor.")
@click.option("--num-gpus", type=click.FloatRange(0, 64), default=0.0, show_default=True,
              help="With --engine ray: GPUs per embedding actor (the model then runs on its GPU).")
@click.option("--actor-cpus", type=click.FloatRange(0.01, 512), default=1.0, show_default=True,
              help="With --engine ray: CPUs per embedding actor.")
@click.option("--task-cpus", type=click.FloatRange(0.01, 512), default=0.5, show_default=True,
              help="With --engine ray: CPUs per reading, cleaning and chunking task.")
@click.option("--shard-size", type=click.IntRange(1), default=50_000, show_default=True,
              help="With --engine ray: articles per shard of the index.")
@click.option("--stall-timeout", type=click.FloatRange(1, 86_400), default=600.0, show_default=True,
              metavar="SECONDS", help="With --engine ray: fail when the build makes no progress for this long.")
def ingest(paths: tuple[Path, ...], index_dir: Path | None, as_json: bool, rebuild: bool, quiet: bool,
           wait: float, engine: str, ray_address: str | None, actors: int, batch_size: int, num_gpus: float,
           actor_cpus: float, task_cpus: float, shard_size: int, stall_timeout: float) -> None:
    """Bring the index up to date with the articles in PATHS (files or directories;
    default: seeds/).

    Reads .txt, .md, .html, .json and .jsonl. Unchanged articles are skipped, changed
    ones replaced; files that cannot be read are reported and the rest go on. Running it
    again on the same files changes nothing.

    With --engine ray, reading, cleaning, chunking and embedding run on a Ray cluster and
    the index is written as shards, searched as one (`rag shards merge` makes them one).
    """
    settings = _settings(index_dir)
    pipeline = _pipeline(settings)
    sources = list(paths) or [Path("seeds")]
    if engine == "ray":
        report = _ingest_on_ray(pipeline, sources, rebuild, not quiet and not as_json, wait, ray_address or None,
                                actors, batch_size, num_gpus, actor_cpus, task_cpus, shard_size,
                                stall_timeout)
    else:
        report = pipeline.ingest(sources, rebuild=rebuild, progress=not quiet and not as_json,
                                 on_problem=_report_problem, wait=wait)
    _print_report(report, settings, as_json)
    if not report.added and not report.updated and not report.unchanged:
        click.echo("error: no articles could be read from the given paths", err=True)
        sys.exit(EXIT_ERROR)


def _ingest_on_ray(pipeline: Any, sources: list[Path], rebuild: bool, progress: bool, wait: float,
                   address: str | None, actors: int, batch_size: int, num_gpus: float, actor_cpus: float,
                   task_cpus: float, shard_size: int, stall_timeout: float) -> Any:
    from tqdm import tqdm

    from rag.distributed import RayOptions, import_ray

    import_ray()  # a missing extra fails here, before the model loads
    # Ray Data reports each pipeline it runs on stderr; the bar below says what matters to a user.
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    options = RayOptions(address=address, actors=actors, batch_size=batch_size, num_gpus=num_gpus,
                         actor_cpus=actor_cpus, task_cpus=task_cpus, shard_articles=shard_size,
                         stall_timeout=stall_timeout)
    with tqdm(desc="Articles indexed", unit="article", disable=not progress, dynamic_ncols=True) as bar:
        chunks = 0

        def advance(articles: int, new_chunks: int) -> None:
            nonlocal chunks
            chunks += new_chunks
            bar.update(articles)
            bar.set_postfix(chunks=chunks, refresh=False)

        report = pipeline.ingest_distributed(sources, options, rebuild=rebuild, on_progress=advance, wait=wait)
    for problem in report.problems:
        _report_problem(problem)
    return report


@cli.group()
def shards() -> None:
    """Look at and merge the shards of an index built with --engine ray."""


@shards.command(name="show")
@_index_option
@_json_option
def shards_show(index_dir: Path | None, as_json: bool) -> None:
    """List the shards of the index's current generation (none for an unsharded index)."""
    from rag.store import IndexStore

    settings = _settings(index_dir)
    manifest = IndexStore(settings.index_dir).read_manifest()
    entries = manifest.get("shards", [])
    if as_json:
        _print_json({"generation": manifest.get("generation"), "shards": entries, "counts": manifest.get("counts")})
        return
    counts = manifest.get("counts", {})
    click.echo(f"{manifest.get('generation')}: {counts.get('documents')} documents in {counts.get('chunks')} chunks, "
               f"{len(entries) or 'no'} shard{'s' if len(entries) != 1 else ''}")
    for entry in entries:
        click.echo(f"  {entry['name']}  {entry['documents']} documents  {entry['chunks']} chunks")


@shards.command(name="merge")
@_index_option
@_json_option
@_wait_option
def shards_merge(index_dir: Path | None, as_json: bool, wait: float) -> None:
    """Commit a sharded index as one unsharded generation with the same contents."""
    settings = _settings(index_dir)
    report = _pipeline(settings).merge_shards(wait=wait)
    if as_json:
        _print_json(report.to_dict())
    elif report.unchanged:
        click.echo(f"Merged into {report.generation}: {report.documents} documents in {report.chunks} chunks "
                   f"({report.seconds:.1f}s).")
    else:
        click.echo(f"The index in {settings.index_dir}/ ({report.generation}) has no shards; nothing to merge.")


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path, allow_dash=True))
@_index_option
@_json_option
@click.option("--replace", is_flag=True, help="Replace stored articles that have the same id.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@_wait_option
def add(paths: tuple[Path, ...], index_dir: Path | None, as_json: bool, replace: bool, quiet: bool,
        wait: float) -> None:
    """Add the articles in PATHS (files, directories, or - for JSON Lines records on
    standard input) to the index.

    Only the new articles are embedded. An article whose id is already stored with other
    content is reported and left alone unless --replace is given.
    """
    from rag.corpus import ReadProblem, decode_bytes, read_articles, read_records

    settings = _settings(index_dir)
    pipeline = _pipeline(settings)

    def items() -> Any:
        for path in paths:
            if str(path) == "-":
                try:
                    yield from read_records(decode_bytes(sys.stdin.buffer.read()), "<stdin>", jsonl=True)
                except ValueError as exc:
                    yield ReadProblem("<stdin>", str(exc))
            else:
                yield from read_articles([path])

    report = pipeline.add(items(), replace=replace, progress=not quiet and not as_json,
                          on_problem=_report_problem, wait=wait)
    _print_report(report, settings, as_json)
    if not report.added and not report.updated and not report.unchanged:
        click.echo("error: no articles were added", err=True)
        sys.exit(EXIT_ERROR)


@cli.command()
@click.argument("doc_ids", nargs=-1, required=True, metavar="ID...")
@_index_option
@_json_option
@_wait_option
def delete(doc_ids: tuple[str, ...], index_dir: Path | None, as_json: bool, wait: float) -> None:
    """Remove the articles with these ids from the index; they are never retrieved or
    cited again. Ids that are not stored are reported (exit status 1)."""
    settings = _settings(index_dir)
    report = _pipeline(settings).delete(doc_ids, wait=wait)
    _print_report(report, settings, as_json)
    for doc_id in report.missing:
        click.echo(f"error: no document with id {doc_id!r}", err=True)
    if report.missing:
        sys.exit(EXIT_ERROR)


@cli.command()
@click.argument("question")
@_index_option
@_k_option
@click.option("--generator", "-g", default=None, help="Answer generator (see `rag generators`).")
@click.option("--local-model", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="GGUF file for the local generator (default: RAG_LOCAL_MODEL or the packaged model).")
@click.option("--stream/--no-stream", default=True, show_default=True,
              help="Print the answer as it is written (ignored with --json).")
@_filter_options
@_json_option
def ask(question: str, index_dir: Path | None, k: int | None, generator: str | None, local_model: Path | None,
        stream: bool, sources: tuple[str, ...], published_after: str | None, published_before: str | None,
        as_of: str | None, as_json: bool) -> None:
    """Answer QUESTION from the index, citing the exact spans the answer rests on.

    An LLM's words are printed as they come; its answer is then checked against
    the passages, and the checked answer and its citations are printed below."""
    pipeline = _pipeline(_settings(index_dir, local_model=local_model))
    filters = _filters(sources, published_after, published_before, as_of)
    if as_json or not stream:
        answer = pipeline.ask(question, k=k, generator=generator, filters=filters)
        if as_json:
            _print_json(answer.to_dict())
        else:
            click.echo(format_answer(answer))
        return
    pieces = pipeline.ask_stream(question, k=k, generator=generator, filters=filters)
    click.echo(f"Q: {question.strip()}\n")
    streamed: list[str] = []
    for piece in pieces:
        if isinstance(piece, str):
            streamed.append(piece)
            click.echo(piece, nl=False)
            sys.stdout.flush()
        else:
            if streamed:
                click.echo("\n")
            click.echo(format_answer(piece, streamed="".join(streamed)))


@cli.command()
@click.argument("query")
@_index_option
@_k_option
@_filter_options
@_json_option
def search(query: str, index_dir: Path | None, k: int | None, sources: tuple[str, ...],
           published_after: str | None, published_before: str | None, as_of: str | None, as_json: bool) -> None:
    """Show the passages that best match QUERY, best first."""
    pipeline = _pipeline(_settings(index_dir))
    passages = pipeline.search(query, k=k, filters=_filters(sources, published_after, published_before, as_of))
    if as_json:
        _print_json({"results": [p.to_dict() for p in passages]})
    else:
        click.echo(format_passages(passages))


@cli.command()
@_index_option
@click.option("--host", default=None, help="Address to bind (default: RAG_HOST or 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port (default: RAG_PORT or 8000).")
def serve(index_dir: Path | None, host: str | None, port: int | None) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs)."""
    import uvicorn

    from api.app import create_app

    settings = _settings(index_dir, host=host, port=port)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info", access_log=False)


@cli.command(name="eval")
@click.argument("gold", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--corpus", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSONL corpus the gold questions are about (indexed once, then reused).")
@click.option("--index", "index_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Index of the corpus (default: a cache folder per corpus file).")
@click.option("--answers", is_flag=True, help="Also answer every question and score the answers.")
@click.option("-g", "--generator", default=None, help="Generator for --answers (default: RAG_GENERATOR).")
@click.option("--depth", type=click.IntRange(10, 100), default=50, show_default=True,
              help="Passages retrieved per question.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N questions.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Per-question results, JSONL (default: beside the index).")
@click.option("--rebuild", is_flag=True, help="Rebuild the corpus index even if it matches.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@_json_option
def evaluate(gold: Path, corpus: Path, index_dir: Path | None, answers: bool, generator: str | None, depth: int,
             limit: int | None, output: Path | None, rebuild: bool, quiet: bool, as_json: bool) -> None:
    """Score retrieval (and, with --answers, answers) on a gold question set.

    GOLD is a JSONL file of {id, question, answer, type, evidence: [{doc_id, fact}]}.
    Prints document- and chunk-level retrieval metrics and answer metrics, and writes
    one JSON line per question.
    """
    from tqdm import tqdm

    from rag.evaluation import default_index_dir, index_matches, load_gold, run_eval, summary_lines

    questions = load_gold(gold)[:limit]
    settings = _settings(index_dir or default_index_dir(corpus))
    pipeline = _pipeline(settings)
    say = (lambda text: click.echo(text, err=True)) if as_json else click.echo
    ok, why = (False, "--rebuild was given") if rebuild else index_matches(pipeline, corpus)
    if not ok and index_dir is not None and pipeline.store.exists() and not rebuild:
        raise InvalidRequestError(
            f"the index in {index_dir} does not hold exactly this corpus ({why}); give --rebuild to "
            "replace it with an index of the corpus, or leave --index out to use a cache folder"
        )
    if ok:
        say(f"Using the index in {settings.index_dir} ({why}).")
    else:
        say(f"Indexing {corpus} into {settings.index_dir}: {why}.")
        report = pipeline.ingest([corpus], rebuild=True, progress=not quiet,
                                 on_problem=lambda p: click.echo(f"skipped {p}", err=True))
        say(f"{report.documents} documents in {report.chunks} chunks, indexed in {report.seconds:.1f}s.")
    missing = {d for q in questions for d in q.gold_docs} - pipeline.snapshot().documents.keys()
    if missing:
        click.echo(f"warning: {len(missing)} gold document ids are not in the corpus, e.g. {sorted(missing)[0]!r}",
                   err=True)
    pipeline.warm_up()
    with tqdm(total=len(questions), desc="Questions", unit="q", disable=quiet, dynamic_ncols=True) as bar:
        result = run_eval(pipeline, questions, depth=depth, answers=answers, generator=generator,
                          on_question=lambda: bar.update(1))
    output = output or settings.index_dir.with_name(settings.index_dir.name + "-results.jsonl")
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "w", encoding="utf-8") as fh:
        for record in result.records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    if as_json:
        _print_json(result.summary | {"results_file": str(output)})
    else:
        for line in summary_lines(result.summary):
            click.echo(line)
        click.echo(f"Per-question results: {output}")


@cli.command()
@_json_option
def generators(as_json: bool) -> None:
    """List the answer generators that are installed."""
    from rag.generators.registry import available_generators

    found = available_generators()
    if as_json:
        _print_json({"generators": [{"name": n, "target": ep.value} for n, ep in found.items()]})
    else:
        for name, ep in found.items():
            click.echo(f"{name:12} {ep.value}")


def format_answer(answer: Answer, streamed: str | None = None) -> str:
    """The human-readable form of an answer: the text, then each citation.

    ``streamed`` is text already printed while the answer was written: the
    question and the answer are not repeated, and a checked answer that differs
    from what was streamed is printed under its own heading."""
    wrap = textwrap.TextWrapper(width=100)
    lines = [] if streamed is not None else [f"Q: {answer.question}", ""]
    check = answer.check
    if answer.abstained:
        lines.append("No answer: " + (answer.reason or "the corpus does not hold one."))
        return "\n".join(lines)
    if streamed is None or streamed.strip() != (answer.answer or "").strip():
        if streamed is not None:
            heading = "Checked answer"
            if check is not None:
                heading += f" ({check.supported} of {check.sentences} sentences supported by the sources"
                heading += f", {check.dropped} dropped)" if check.dropped else ")"
            lines += [heading + ":"]
        lines += wrap.wrap(answer.answer or "")
        lines.append("")
    lines.append("Citations:")
    quote_wrap = textwrap.TextWrapper(width=100, initial_indent="      “", subsequent_indent="       ")
    for c in answer.citations:
        lines.append(f"  [{c.n}] {c.title}")
        where = f"      {c.doc_id}, characters {c.start}-{c.end}"
        if c.published_at:
            where += f", published {c.published_at}"
        if not c.supported:
            where += f"; NOT SUPPORTED (support {c.support:.2f})"
        lines.append(where)
        lines += quote_wrap.wrap(c.quote + "”")
    return "\n".join(lines)


def format_passages(passages: list[Passage]) -> str:
    if not passages:
        return "No passages found."
    out = []
    body = textwrap.TextWrapper(width=100, initial_indent="    ", subsequent_indent="    ")
    for rank, p in enumerate(passages, start=1):
        out.append(f"{rank}. {p.title}  [{p.doc_id} {p.start}-{p.end}, score {p.score:.4f}]")
        out += body.wrap(" ".join(p.text.split()))
        out.append("")
    return "\n".join(out).rstrip()


def main() -> None:
    cli(prog_name="rag")
