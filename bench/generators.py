#!/usr/bin/env python
"""Answer quality, citations, refusals and latency of the answer generators, side by side.

Every question goes through ``RagPipeline.ask(question, generator=name)`` once per
generator (default ``extractive`` and ``local``; the generators take turns question
by question, so load from other processes falls on both alike). Three question sets:

* ``seed``: questions written for this benchmark about the seed article
  ``seeds/000_dc0a8f6f0901bab2.txt`` (Xiaomi's move into banking), with short gold
  answers, plus questions the article does not answer (expected: a refusal). They are
  the ``SEED_QUESTIONS`` below; the index is a scratch index of ``seeds/``.
* ``multihop``: MultiHop-RAG's dev split (``../shared/eval/multihop-rag-dev``), every
  ``--every``-th question (default 4: 160 of 639, null queries included). Null queries
  (gold "Insufficient information.") are the unanswerable ones.
* ``realtimeqa``: RealTimeQA's gold dev split (52 questions, all answerable; the gold
  is the text of the correct choice; the model is not shown the choices).

Scoring. The prediction is the answer text with its ``[n]`` citation markers removed.
Normalisation: Unicode NFKC, lowercase, every character that is not a letter or digit
becomes a space, split on spaces, and the articles a/an/the are dropped ("normalised
tokens"). On answerable questions only (an abstention scores 0 everywhere):

* accuracy: MultiHop-RAG's rule, correct when prediction and gold share at least one
  word. Words here are the normalised tokens minus a short list of English stop words
  (``rag.evaluation.STOP_WORDS``: pronouns, auxiliaries, prepositions, conjunctions; *not* yes/no/not),
  so that sharing "of" or "is" does not count. The rule is lenient, and more so for
  long answers: ``words`` gives the mean answer length to read it against;
* contains gold: the gold's normalised tokens occur as a contiguous run in the
  prediction's (the sensible reading of exact match for multi-sentence answers);
* strict EM: the two normalised token sequences are equal;
* token F1: SQuAD-style F1 of the two bags of normalised tokens.

On all questions: refusal rate on unanswerable ones, false refusals on answerable
ones; citation exactness (share of citations whose quote equals
``pipeline.document(doc_id).text[start:end]``, which must be 1.000); the share of
answer sentences the passages support (for an LLM, sum(check.supported) /
sum(check.sentences) over the answers that carry a check, the sentences it dropped
included; an extractive answer consists of quotes, so 1.000 when it has no check);
and the median and 95th percentile of the wall time of ``ask`` (retrieval included;
each generator's model is loaded before timing starts).

Reproduce (from the repository root; the MultiHop-RAG and RealTimeQA indexes are
built in /tmp/rag-bench on first use, or reused when they match)::

    .venv/bin/python bench/generators.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from _common import REPO_ROOT, build_index, print_table, resolve_from_repo, write_json

from rag.config import Settings
from rag.errors import RagError
from rag.evaluation import contains, normalised_tokens, shares_a_word, token_f1
from rag.pipeline import RagPipeline
from rag.types import Answer

DEFAULT_EVAL_DIR = "../shared/eval"
BENCH_DIR = Path("/tmp/rag-bench")
SETS = ("seed", "multihop", "realtimeqa")
NO_ANSWER = None  # gold of a question the corpus does not answer

# (question, gold answer or NO_ANSWER); every answer is stated in the seed article.
SEED_QUESTIONS: list[tuple[str, str | None]] = [
    ("Which lenders did Xiaomi partner with?",
     "KreditBee, Aditya Birla Finance Limited, Money View, EarlySalary, CreditVidya and ZestMoney"),
    ("Who is Zhao Weixing?", "vice president of Xiaomi's financial services unit"),
    ("Which bank did Zhao Weixing come from?", "XW Bank"),
    ("How does XW Bank rank among China's online banks?", "third largest"),
    ("Which other banks has Zhao Weixing worked on projects with?",
     "China Minsheng Bank, Shanghai Pudong Development Bank and Bank of Hangzhou"),
    ("Which media outlet had the exclusive on Xiaomi signing Zhao Weixing?", "Caixin"),
    ("What is Xiaomi's online credit system called?", "Xiaomi Mi Credit"),
    ("In which country was Xiaomi Mi Credit announced?", "India"),
    ("When was Xiaomi's online credit system announced?", "end of 2019"),
    ("In what year was Xiaomi founded?", "2010"),
    ("Which cryptocurrency has Facebook been trying to develop?", "Libra"),
    ("What online loans does Movistar offer?", "Movistar Money"),
    ("What was Xiaomi's revenue in 2019?", NO_ANSWER),
    ("What interest rate does Xiaomi Mi Credit charge?", NO_ANSWER),
    ("How much is Xiaomi paying Zhao Weixing?", NO_ANSWER),
    ("Which team won the 2019 Cricket World Cup?", NO_ANSWER),
]

@dataclass(frozen=True)
class Question:
    id: str
    question: str
    gold: str | None  # None: the corpus does not answer it
    kind: str


@dataclass(frozen=True)
class Result:
    question_id: str
    kind: str
    gold: str | None
    answer: str | None
    reason: str | None
    correct: bool
    contains_gold: bool
    strict_em: bool
    f1: float
    answer_words: int
    citations: int
    exact_citations: int
    sentences: int
    supported_sentences: int
    ms: float

    @property
    def answerable(self) -> bool:
        return self.gold is not None

    @property
    def abstained(self) -> bool:
        return self.answer is None


def load_questions(name: str, eval_dir: Path, every: int) -> list[Question]:
    if name == "seed":
        return [Question(f"seed-{i:02d}", q, g, "seed" if g else "unanswerable")
                for i, (q, g) in enumerate(SEED_QUESTIONS, start=1)]
    folder = eval_dir / ("multihop-rag-dev" if name == "multihop" else "realtimeqa-gold-dev")
    with open(folder / "queries.jsonl", encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh if line.strip()]
    if name == "multihop":
        records = records[::every]
    return [Question(str(r["id"]), str(r["question"]),
                     None if r.get("type") == "null_query" else str(r["answer"]), str(r.get("type", "")))
            for r in records]


def corpus_of(name: str, eval_dir: Path) -> Path:
    if name == "seed":
        return REPO_ROOT / "seeds"
    return eval_dir / ("multihop-rag-dev" if name == "multihop" else "realtimeqa-gold-dev") / "corpus.jsonl"


def score(pipeline: RagPipeline, question: Question, answer: Answer, ms: float, texts: dict[str, str]) -> Result:
    prediction = normalised_tokens(answer.answer or "")
    gold = normalised_tokens(question.gold or "")
    answered = question.gold is not None and not answer.abstained
    exact = 0
    for c in answer.citations:
        if c.doc_id not in texts:
            texts[c.doc_id] = pipeline.document(c.doc_id).text
        exact += texts[c.doc_id][c.start:c.end] == c.quote
    if answer.check is not None:
        sentences, supported = answer.check.sentences, answer.check.supported
    else:  # an extractive answer: each cited quote is one of its sentences
        sentences = supported = len(answer.citations)
    return Result(
        question_id=question.id, kind=question.kind, gold=question.gold, answer=answer.answer,
        reason=answer.reason,
        correct=answered and shares_a_word(prediction, gold),
        contains_gold=answered and contains(prediction, gold),
        strict_em=answered and prediction == gold,
        f1=token_f1(prediction, gold) if answered else 0.0,
        answer_words=len(prediction), citations=len(answer.citations), exact_citations=exact,
        sentences=sentences, supported_sentences=supported, ms=round(ms, 1),
    )


def run_set(pipeline: RagPipeline, questions: list[Question], generators: list[str]) -> dict[str, list[Result]]:
    results: dict[str, list[Result]] = {g: [] for g in generators}
    texts: dict[str, str] = {}
    for i, question in enumerate(questions, start=1):
        for name in generators:
            started = time.perf_counter()
            answer = pipeline.ask(question.question, generator=name)
            ms = (time.perf_counter() - started) * 1000
            results[name].append(score(pipeline, question, answer, ms, texts))
        if i % 20 == 0 or i == len(questions):
            print(f"  {i}/{len(questions)} questions", file=sys.stderr, flush=True)
    return results


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def metrics(results: list[Result]) -> dict[str, Any]:
    answerable = [r for r in results if r.answerable]
    unanswerable = [r for r in results if not r.answerable]
    answered = [r for r in results if not r.abstained]
    times = [r.ms for r in results]
    return {
        "questions": len(results),
        "answerable": len(answerable),
        "unanswerable": len(unanswerable),
        "accuracy": _mean([float(r.correct) for r in answerable]),
        "contains_gold": _mean([float(r.contains_gold) for r in answerable]),
        "strict_em": _mean([float(r.strict_em) for r in answerable]),
        "f1": _mean([r.f1 for r in answerable]),
        "answer_words": _mean([float(r.answer_words) for r in answered]),
        "false_refusals": _mean([float(r.abstained) for r in answerable]),
        "refusal_rate": _mean([float(r.abstained) for r in unanswerable]),
        "citations": sum(r.citations for r in results),
        "citation_exactness": _ratio(sum(r.exact_citations for r in results), sum(r.citations for r in results)),
        "supported_sentences": _ratio(sum(r.supported_sentences for r in results),
                                      sum(r.sentences for r in results)),
        "median_ms": statistics.median(times) if times else None,
        "p95_ms": statistics.quantiles(times, n=20)[-1] if len(times) > 1 else (times[0] if times else None),
        "abstentions_by_reason": dict(Counter(_reason_kind(r.reason) for r in results if r.abstained)),
    }


def _reason_kind(reason: str | None) -> str:
    reason = reason or ""
    if "does not appear to answer" in reason:
        return "low support before generating"
    if "model found no answer" in reason:
        return "model said it cannot answer"
    if "model returned no answer" in reason:
        return "model returned nothing"
    if "not supported by the retrieved passages" in reason:
        return "no answer sentence supported"
    return reason or "unknown"


def _f(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def print_set(name: str, table: dict[str, dict[str, Any]]) -> None:
    first = next(iter(table.values()))
    print(f"\n{name}: {first['questions']} questions ({first['answerable']} answerable, "
          f"{first['unanswerable']} unanswerable)")
    headers = ["generator", "accuracy", "contains gold", "strict EM", "F1", "words", "false refusals",
               "refusal rate", "citations exact", "supported sent.", "median ms", "p95 ms"]
    rows = [[g, _f(m["accuracy"]), _f(m["contains_gold"]), _f(m["strict_em"]), _f(m["f1"]),
             _f(m["answer_words"], 1), _f(m["false_refusals"]), _f(m["refusal_rate"]),
             f"{_f(m['citation_exactness'])} of {m['citations']}", _f(m["supported_sentences"]),
             _ms(m["median_ms"]), _ms(m["p95_ms"])] for g, m in table.items()]
    print_table(headers, rows)
    for g, m in table.items():
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(m["abstentions_by_reason"].items())) or "none"
        print(f"  {g} abstentions: {reasons}")


def print_summary(sets: dict[str, dict[str, dict[str, Any]]], pooled: dict[str, dict[str, Any]]) -> None:
    short = {"seed": "seed", "multihop": "MH", "realtimeqa": "RTQA"}
    names = list(sets)
    headers = (["generator"] + [f"acc {short[s]}" for s in names] + [f"F1 {short[s]}" for s in names]
               + ["refusal rate", "false refusals", "citations exact", "supported sent.", "median ms", "p95 ms"])
    rows = []
    for g, m in pooled.items():
        rows.append([g] + [_f(sets[s][g]["accuracy"]) for s in names] + [_f(sets[s][g]["f1"]) for s in names]
                    + [_f(m["refusal_rate"]), _f(m["false_refusals"]), _f(m["citation_exactness"]),
                       _f(m["supported_sentences"]), _ms(m["median_ms"]), _ms(m["p95_ms"])])
    print("\nsummary (refusals, citations, supported sentences and latency pooled over all sets)")
    print_table(headers, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--generators", default="extractive,local", help="comma-separated generator names")
    parser.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, from {', '.join(SETS)}")
    parser.add_argument("--eval-dir", default=DEFAULT_EVAL_DIR)
    parser.add_argument("--every", type=int, default=4, help="MultiHop-RAG: every N-th question")
    parser.add_argument("--limit", type=int, default=None, help="only the first N questions of each set")
    parser.add_argument("--seed-index", type=Path, default=BENCH_DIR / "seed-index")
    parser.add_argument("--multihop-index", type=Path, default=BENCH_DIR / "multihop-t200-40")
    parser.add_argument("--realtimeqa-index", type=Path, default=BENCH_DIR / "realtimeqa-t200-40")
    parser.add_argument("--json-out", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    generators = [g.strip() for g in args.generators.split(",") if g.strip()]
    set_names = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = [s for s in set_names if s not in SETS]
    if unknown or not set_names or not generators or args.every < 1:
        parser.error(f"unknown sets {unknown}" if unknown else "need a generator, a set and --every >= 1")
    eval_dir = resolve_from_repo(args.eval_dir)
    index_dirs = {"seed": args.seed_index, "multihop": args.multihop_index, "realtimeqa": args.realtimeqa_index}

    shared_embedder = None
    per_set: dict[str, dict[str, dict[str, Any]]] = {}
    all_results: dict[str, list[Result]] = {g: [] for g in generators}
    records: dict[str, Any] = {}
    indexes: dict[str, Any] = {}
    settings = None
    for name in set_names:
        index_dir = index_dirs[name].expanduser().resolve()
        if index_dir.is_relative_to(REPO_ROOT):
            print(f"error: the index {index_dir} must be outside the repository", file=sys.stderr)
            return 2
        pipeline = RagPipeline(Settings(index_dir=index_dir), embedder=shared_embedder)
        settings = pipeline.settings
        indexes[name] = build_index(pipeline, corpus_of(name, eval_dir), rebuild=False)
        shared_embedder = pipeline.embedder
        try:
            for g in generators:  # load every model before timing starts
                pipeline.generator(g)
        except RagError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        pipeline.warm_up()
        questions = load_questions(name, eval_dir, args.every)[: args.limit]
        print(f"{name}: {len(questions)} questions x {len(generators)} generators", file=sys.stderr, flush=True)
        results = run_set(pipeline, questions, generators)
        per_set[name] = {g: metrics(rs) for g, rs in results.items()}
        records[name] = {g: [asdict(r) for r in rs] for g, rs in results.items()}
        for g, rs in results.items():
            all_results[g].extend(rs)

    assert settings is not None
    print(f"\nconfiguration: generators={','.join(generators)}, multihop every {args.every}"
          f"{f', limit {args.limit}' if args.limit else ''}, top_k={settings.top_k}, "
          f"answer_passages={settings.answer_passages}, min_support={settings.min_support}, "
          f"min_claim_support={settings.min_claim_support}, unsupported={settings.unsupported_sentences}, "
          f"llm_max_tokens={settings.llm_max_tokens}, llm_threads={settings.llm_threads or 'all'}")
    for name, table in per_set.items():
        print_set(name, table)
    pooled = {g: metrics(rs) for g, rs in all_results.items()}
    print_summary(per_set, pooled)
    if args.json_out:
        write_json(args.json_out, {
            "configuration": {"generators": generators, "sets": set_names, "every": args.every,
                              "limit": args.limit, "settings": settings.model_dump(mode="json",
                                                                                   exclude={"openai_api_key"})},
            "indexes": indexes, "metrics": per_set, "pooled": pooled, "questions": records,
        })
    return 0


if __name__ == "__main__":
    sys.exit(main())
