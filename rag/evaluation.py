"""Measuring retrieval and answers against a gold question set: ``rag eval``.

Input formats (those of ``../shared/eval``-style benchmark folders):

* the corpus: a JSONL file of articles (``id, title, source, published_at, url, text``),
  ingested like any other JSONL file;
* the gold questions: a JSONL file of ``{"id", "question", "answer", "type",
  "evidence": [{"doc_id", "fact"}]}``. A question of type ``null_query`` (or with a null
  answer) is one the corpus does not answer.

Metrics, each a pure function below and averaged over the questions it applies to:

* document level (questions with evidence): the retrieved passages collapse to their
  distinct articles in order of first appearance; Recall@k is the share of the gold
  articles in the first k; MRR@10 the reciprocal rank of the first gold article;
  nDCG@10 with binary gains; MAP@10 the mean of precision@i over the ranks i <= 10
  holding a gold article, divided by min(gold articles, 10);
* chunk level (questions whose evidence quotes the article), as MultiHop-RAG scores
  it: a passage is relevant when, whitespace removed, it contains a gold fact; Hits@4
  and Hits@10 whether one of the first 4 or 10 is; MRR@10; MAP@10 where each rank
  contributes (gold facts first found there) / rank, divided by min(facts, 10);
* answers (``--answers``): accuracy by MultiHop-RAG's rule (prediction and gold share a
  word, stop words aside), exact match and token F1 of normalised tokens, citation
  exactness (the quote equals the article text at its offsets), and refusal precision
  (refusals that were on unanswerable questions) and recall (unanswerable questions
  refused).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import statistics
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.errors import InvalidRequestError
from rag.types import SearchFilters

RECALL_AT = (1, 5, 10, 20)
NULL_TYPE = "null_query"

# -- gold questions -----------------------------------------------------------------------


@dataclass(frozen=True)
class Evidence:
    doc_id: str
    fact: str


@dataclass(frozen=True)
class GoldQuestion:
    id: str
    question: str
    answer: str | None  # None: the corpus does not answer it
    type: str = ""
    evidence: tuple[Evidence, ...] = ()
    question_date: str | None = None

    @property
    def answerable(self) -> bool:
        return self.answer is not None

    @property
    def gold_docs(self) -> list[str]:
        return list(dict.fromkeys(e.doc_id for e in self.evidence if e.doc_id))


def load_gold(path: Path) -> list[GoldQuestion]:
    """Read a gold JSONL file; a malformed line is an error naming the file and line."""
    questions: list[GoldQuestion] = []
    seen: set[str] = set()
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"cannot read the gold file {path}: {exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidRequestError(f"{where}: not valid JSON ({exc.msg})") from exc
        if not isinstance(record, dict) or not str(record.get("question") or "").strip():
            raise InvalidRequestError(f"{where}: a gold record needs a non-empty \"question\"")
        qid = f"line-{number}" if record.get("id") in (None, "") else str(record["id"])
        if qid in seen:
            raise InvalidRequestError(f"{where}: duplicate question id {qid!r}")
        seen.add(qid)
        evidence = [] if record.get("evidence") is None else record["evidence"]
        if not isinstance(evidence, list) or not all(isinstance(e, dict) for e in evidence):
            raise InvalidRequestError(f"{where}: \"evidence\" must be a list of {{doc_id, fact}} objects")
        kind = str(record.get("type") or "")
        answer = record.get("answer")
        questions.append(GoldQuestion(
            id=qid,
            question=str(record["question"]).strip(),
            answer=None if kind == NULL_TYPE or answer is None else str(answer),
            type=kind,
            evidence=tuple(Evidence(str(e.get("doc_id") or ""), str(e.get("fact") or "")) for e in evidence),
            question_date=str(record["question_date"]) if record.get("question_date") else None,
        ))
    if not questions:
        raise InvalidRequestError(f"the gold file {path} holds no questions")
    return questions


# -- retrieval metrics ----------------------------------------------------------------------


def distinct(items: Sequence[str]) -> list[str]:
    """Items in order of first appearance."""
    return list(dict.fromkeys(items))


def document_metrics(ranked_docs: Sequence[str], gold: Sequence[str]) -> dict[str, float]:
    """Recall@k, MRR@10, nDCG@10 and MAP@10 of a ranked list of distinct document ids."""
    gold_set = set(gold)
    if not gold_set:
        raise ValueError("document metrics need at least one gold document")
    ranked = distinct(ranked_docs)
    hits = [doc in gold_set for doc in ranked]
    out = {f"recall@{k}": sum(hits[:k]) / len(gold_set) for k in RECALL_AT}
    first = next((i for i, hit in enumerate(hits[:10], start=1) if hit), None)
    out["mrr@10"] = 1.0 / first if first else 0.0
    dcg = sum(1.0 / math.log2(i + 1) for i, hit in enumerate(hits[:10], start=1) if hit)
    ideal = sum(1.0 / math.log2(i + 1) for i in range(1, min(len(gold_set), 10) + 1))
    out["ndcg@10"] = dcg / ideal
    precision_sum, found = 0.0, 0
    for i, hit in enumerate(hits[:10], start=1):
        if hit:
            found += 1
            precision_sum += found / i
    out["map@10"] = precision_sum / min(len(gold_set), 10)
    return out


_WHITESPACE = re.compile(r"\s+")


def squash_whitespace(text: str) -> str:
    """``text`` without any whitespace: how gold facts are matched inside passages."""
    return _WHITESPACE.sub("", text)


def chunk_metrics(passages: Sequence[str], facts: Sequence[str]) -> dict[str, float]:
    """Hits@4, Hits@10, MRR@10 and MAP@10 of ranked passage texts against gold facts,
    as MultiHop-RAG defines them (whitespace ignored)."""
    gold = [squash_whitespace(f) for f in facts]
    if not gold:
        raise ValueError("chunk metrics need at least one gold fact")
    first: int | None = None
    found: set[int] = set()
    precision_sum = 0.0
    for rank, text in enumerate(passages[:10], start=1):
        squashed = squash_whitespace(text)
        inside = [i for i, fact in enumerate(gold) if fact in squashed]
        if not inside:
            continue
        first = first or rank
        new = [i for i in inside if i not in found]
        found.update(new)
        precision_sum += len(new) / rank
    return {
        "hits@4": float(first is not None and first <= 4),
        "hits@10": float(first is not None),
        "mrr@10": 1.0 / first if first else 0.0,
        "map@10": precision_sum / min(len(gold), 10),
    }


# -- answer metrics -------------------------------------------------------------------------

ARTICLES = frozenset({"a", "an", "the"})
_STOP_WORD_LIST = (
    "i me my we our you your he him his she her it its they them their this that these those "
    "what which who whom whose when where why how is are was were be been being am has have had "
    "do does did will would shall should can could may might must of in on at to for from by with "
    "about as into onto over under than then and or but if so also s"
)
STOP_WORDS = ARTICLES | frozenset(_STOP_WORD_LIST.split())
_MARKER = re.compile(r"\[\d+(?:\s*,\s*\d+)*\]")


def normalised_tokens(text: str) -> list[str]:
    """NFKC, lowercase, citation markers and non-alphanumerics (any script) to spaces,
    split, articles dropped."""
    text = _MARKER.sub(" ", unicodedata.normalize("NFKC", text)).lower()
    text = "".join(c if c.isalnum() else " " for c in text)
    return [t for t in text.split() if t not in ARTICLES]


def shares_a_word(prediction: Sequence[str], gold: Sequence[str]) -> bool:
    """MultiHop-RAG's accuracy rule on normalised tokens; stop words do not count,
    unless the gold consists of nothing else."""
    gold_words = {t for t in gold if t not in STOP_WORDS} or set(gold)
    return bool(gold_words & set(prediction))


def contains(prediction: Sequence[str], gold: Sequence[str]) -> bool:
    """The gold's tokens occur as one contiguous run in the prediction's."""
    n = len(gold)
    return n > 0 and any(list(prediction[i:i + n]) == list(gold) for i in range(len(prediction) - n + 1))


def token_f1(prediction: Sequence[str], gold: Sequence[str]) -> float:
    common = sum((Counter(prediction) & Counter(gold)).values())
    if not common:
        return 0.0
    precision, recall = common / len(prediction), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def refusal_scores(refused: Sequence[bool], answerable: Sequence[bool]) -> dict[str, float | None]:
    """Precision and recall of refusals, taking unanswerable questions as the positives."""
    true_pos = sum(r and not a for r, a in zip(refused, answerable, strict=True))
    refusals = sum(refused)
    unanswerable = sum(not a for a in answerable)
    return {
        "refusal_precision": true_pos / refusals if refusals else None,
        "refusal_recall": true_pos / unanswerable if unanswerable else None,
    }


# -- running ----------------------------------------------------------------------------------


@dataclass
class EvalResult:
    """Per-question records and their averages."""

    records: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 4) if values else None


def run_eval(
    pipeline: Any,
    questions: Sequence[GoldQuestion],
    depth: int = 50,
    answers: bool = False,
    generator: str | None = None,
    on_question: Callable[[], None] | None = None,
    question_dates: bool = True,
) -> EvalResult:
    """Retrieve ``depth`` passages for every question (and answer it with ``answers``),
    scoring each against its gold. With ``question_dates``, a question's ``question_date``
    is passed as the search's "as of" day."""
    result = EvalResult()
    texts: dict[str, str] = {}
    squashed: dict[str, str] = {}
    for q in questions:
        record: dict[str, Any] = {"id": q.id, "type": q.type, "question": q.question}
        as_of = q.question_date.replace("/", "-") if question_dates and q.question_date else None
        filters = SearchFilters(as_of=as_of)
        if as_of:
            record["as_of"] = as_of
        started = time.perf_counter()
        passages = pipeline.search(q.question, depth, filters)
        record["search_ms"] = round((time.perf_counter() - started) * 1000, 2)
        ranked = distinct([p.doc_id for p in passages])
        record["retrieved_docs"] = ranked[:20]
        if q.gold_docs:
            record["gold_docs"] = q.gold_docs
            record["document"] = {k: round(v, 4) for k, v in document_metrics(ranked, q.gold_docs).items()}
        facts = quoted_facts(pipeline, q, squashed)
        if facts:
            record["chunk"] = {k: round(v, 4) for k, v in chunk_metrics([p.text for p in passages], facts).items()}
        if answers:
            record["answer"] = _score_answer(pipeline, q, generator, filters, texts)
        result.records.append(record)
        if on_question:
            on_question()
    result.summary = summarise(result.records, questions)
    return result


def quoted_facts(pipeline: Any, q: GoldQuestion, squashed: dict[str, str]) -> list[str]:
    """The gold facts that quote their article (whitespace aside): only those can be
    looked for in passages. RealTimeQA's facts, for one, are summaries, not quotes."""
    documents = pipeline.snapshot().documents
    facts = []
    for e in q.evidence:
        if not e.fact or e.doc_id not in documents:
            continue
        if e.doc_id not in squashed:
            squashed[e.doc_id] = squash_whitespace(documents[e.doc_id].article.text)
        if squash_whitespace(e.fact) in squashed[e.doc_id]:
            facts.append(e.fact)
    return facts


def _score_answer(
    pipeline: Any, q: GoldQuestion, generator: str | None, filters: Any, texts: dict[str, str]
) -> dict[str, Any]:
    started = time.perf_counter()
    answer = pipeline.ask(q.question, generator=generator, filters=filters)
    ms = (time.perf_counter() - started) * 1000
    prediction = normalised_tokens(answer.answer or "")
    gold = normalised_tokens(q.answer or "")
    answered = q.answerable and not answer.abstained
    exact = 0
    for c in answer.citations:
        if c.doc_id not in texts:
            texts[c.doc_id] = pipeline.document(c.doc_id).text
        exact += texts[c.doc_id][c.start:c.end] == c.quote
    return {
        "gold": q.answer,
        "answer": answer.answer,
        "refused": answer.abstained,
        "reason": answer.reason,
        "correct": answered and shares_a_word(prediction, gold),
        "exact_match": answered and prediction == gold,
        "contains_gold": answered and contains(prediction, gold),
        "f1": round(token_f1(prediction, gold), 4) if answered else 0.0,
        "citations": len(answer.citations),
        "exact_citations": exact,
        "cited_docs": distinct([c.doc_id for c in answer.citations]),
        "ask_ms": round(ms, 2),
    }


def summarise(records: list[dict[str, Any]], questions: Sequence[GoldQuestion]) -> dict[str, Any]:
    by_id = {q.id: q for q in questions}
    summary: dict[str, Any] = {"questions": len(records)}
    with_docs = [r["document"] for r in records if "document" in r]
    summary["document"] = {"questions": len(with_docs)} | {
        key: _mean([m[key] for m in with_docs]) for key in (with_docs[0] if with_docs else {})
    }
    with_facts = [r["chunk"] for r in records if "chunk" in r]
    summary["chunk"] = {"questions": len(with_facts)} | {
        key: _mean([m[key] for m in with_facts]) for key in (with_facts[0] if with_facts else {})
    }
    times = [r["search_ms"] for r in records]
    summary["search_ms"] = {"p50": round(statistics.median(times), 2) if times else None}
    scored = [(r["answer"], by_id[r["id"]]) for r in records if "answer" in r]
    if scored:
        answerable = [a for a, q in scored if q.answerable]
        citations = sum(a["citations"] for a, _ in scored)
        summary["answers"] = {
            "questions": len(scored),
            "answerable": len(answerable),
            "accuracy": _mean([float(a["correct"]) for a in answerable]),
            "exact_match": _mean([float(a["exact_match"]) for a in answerable]),
            "contains_gold": _mean([float(a["contains_gold"]) for a in answerable]),
            "f1": _mean([a["f1"] for a in answerable]),
            "citations": citations,
            "citation_exactness": (
                round(sum(a["exact_citations"] for a, _ in scored) / citations, 4) if citations else None
            ),
            **{k: (round(v, 4) if v is not None else None) for k, v in refusal_scores(
                [a["refused"] for a, _ in scored], [q.answerable for _, q in scored]).items()},
            "false_refusals": _mean([float(a["refused"]) for a in answerable]),
            "ask_ms_p50": round(statistics.median(a["ask_ms"] for a, _ in scored), 2),
        }
    return summary


def summary_lines(summary: dict[str, Any]) -> Iterator[str]:
    """The summary as aligned text lines for people."""

    def fmt(value: Any) -> str:
        return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    def table(title: str, values: dict[str, Any]) -> Iterator[str]:
        keys = [k for k in values if k != "questions"]
        if not keys:
            return
        yield f"{title} ({values['questions']} questions)"
        width = max(len(k) for k in keys)
        for key in keys:
            yield f"  {key.ljust(width)}  {fmt(values[key]).rjust(7)}"

    yield from table("retrieval, document level", summary["document"])
    yield from table("retrieval, chunk level (a passage holds a gold fact)", summary["chunk"])
    if "answers" in summary:
        yield from table("answers", summary["answers"])
    yield f"search p50: {fmt(summary['search_ms']['p50'])} ms"


# -- the evaluation index -----------------------------------------------------------------------


def default_index_dir(corpus: Path) -> Path:
    """A cache folder for the index of ``corpus``, one per corpus file."""
    corpus = Path(corpus).resolve()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha256(str(corpus).encode()).hexdigest()[:12]
    name = corpus.parent.name if corpus.name == "corpus.jsonl" else corpus.stem
    return cache / "rag-news" / "eval" / f"{name}-{digest}"


def index_matches(pipeline: Any, corpus: Path) -> tuple[bool, str]:
    """Whether the pipeline's index holds exactly ``corpus``, built with its model and chunking."""
    from rag.corpus import ReadProblem, read_articles
    from rag.errors import IndexMismatchError
    from rag.store import content_hash

    if not pipeline.store.exists():
        return False, "no index yet"
    try:
        snapshot = pipeline.snapshot()
    except IndexMismatchError as exc:
        return False, f"settings differ ({exc})"
    wanted = {a.id: content_hash(a) for a in read_articles([corpus]) if not isinstance(a, ReadProblem)}
    stored = {doc_id: doc.content_hash for doc_id, doc in snapshot.documents.items()}
    if stored != wanted:
        return False, "its documents differ from the corpus"
    return True, "it matches the corpus and settings"
