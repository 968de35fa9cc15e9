"""Questions that name their sources.

A question such as "Did 'The Age' report ... before TechCrunch reported ... on
October 31, 2023?" needs evidence from each report it names. ``sub_queries`` splits it
at each mention of a source of the index: the words between the previous mention and
the next one make a sub-query restricted to that source, and to the day it names, if
it names one (give or take a day, for time zones). Retrieval runs every sub-query and
merges the results (see :mod:`rag.retrieval`).

A source is named when its full name, or the part before a section suffix ("FOX
News" for "FOX News - Health", "Cnbc" for "Cnbc | World Business News Leader"),
occurs in the question as a whole word with the same capitalisation: "The Age" is a
source, "the age of" is not; "Wired" is, "wired" is not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np

_SECTION = re.compile(r"\s+[|\-–—:]\s+")
_MIN_ALIAS = 3


def source_aliases(sources: set[str]) -> dict[str, set[str]]:
    """``alias -> sources`` it names; an alias may name several sections of one publication."""
    aliases: dict[str, set[str]] = {}
    for source in sources:
        name = " ".join(source.split())
        if len(name) < _MIN_ALIAS:
            continue
        aliases.setdefault(name, set()).add(source)
        short = _SECTION.split(name, maxsplit=1)[0].strip()
        if short != name and len(short) >= _MIN_ALIAS:
            aliases.setdefault(short, set()).add(source)
    return aliases


def _alias_pattern(aliases: dict[str, set[str]]) -> re.Pattern[str] | None:
    if not aliases:
        return None
    # Longest first, so that "The Independent - Sports" wins over "The Independent".
    names = sorted(aliases, key=len, reverse=True)
    return re.compile(r"(?<![\w])(" + "|".join(re.escape(n) for n in names) + r")(?![\w])")


def _source_index(snapshot: Any) -> tuple[re.Pattern[str] | None, dict[str, set[str]]]:
    cached = snapshot.derived.get("source_aliases")
    if cached is None:
        sources = {d.article.source for d in snapshot.documents.values() if d.article.source}
        aliases = source_aliases(sources)
        cached = (_alias_pattern(aliases), aliases)
        snapshot.derived["source_aliases"] = cached
    return cached


@dataclass(frozen=True)
class SubQuery:
    text: str
    sources: tuple[str, ...]
    day: date | None = None
    mention: str = ""  # the words that named the source


_MONTH_NAMES = ("january", "february", "march", "april", "may", "june", "july", "august", "september",
                "october", "november", "december")
_MONTHS = {m: i for i, m in enumerate(_MONTH_NAMES, start=1)}
_MONTH = "(" + "|".join(_MONTH_NAMES) + ")"
_DATES = (
    (re.compile(_MONTH + r"\s+(\d{1,2})(?:st|nd|rd|th)?,?\s+(\d{4})", re.IGNORECASE), ("m", "d", "y")),
    (re.compile(r"(\d{1,2})(?:st|nd|rd|th)?\s+" + _MONTH + r",?\s+(\d{4})", re.IGNORECASE), ("d", "m", "y")),
    (re.compile(r"(\d{4})-(\d{2})-(\d{2})"), ("y", "m", "d")),
)


def named_day(text: str) -> date | None:
    """The first calendar day written out in ``text`` ("October 31, 2023", "31 October 2023", "2023-10-31")."""
    found: list[tuple[int, date]] = []
    for pattern, order in _DATES:
        for match in pattern.finditer(text):
            parts = dict(zip(order, match.groups(), strict=True))
            month = _MONTHS.get(parts["m"].lower()) if not parts["m"].isdigit() else int(parts["m"])
            try:
                found.append((match.start(), date(int(parts["y"]), month or 0, int(parts["d"]))))
            except ValueError:
                continue
    return min(found)[1] if found else None


def sub_queries(snapshot: Any, question: str) -> list[SubQuery]:
    """One sub-query per mention of a source, in order of mention; none when the
    question names no source."""
    pattern, aliases = _source_index(snapshot)
    if pattern is None:
        return []
    question = " ".join(question.split())
    mentions = list(pattern.finditer(question))
    subs: list[SubQuery] = []
    for i, match in enumerate(mentions):
        begin = mentions[i - 1].end() if i else 0
        end = mentions[i + 1].start() if i + 1 < len(mentions) else len(question)
        text = question[begin:end].strip(" ,.;:'\"‘’“”?")
        sub = SubQuery(text or question, tuple(sorted(aliases[match.group(1)])), named_day(question[begin:end]),
                       match.group(1))
        if sub not in subs:
            subs.append(sub)
    return subs


def day_mask(snapshot: Any, day: date, slack_days: int = 1) -> np.ndarray:
    """Boolean mask over chunk rows whose article was published within ``slack_days`` of ``day``."""
    key = ("day_mask", day, slack_days)
    mask = snapshot.derived.get(key)
    if mask is None:
        low, high = (day - timedelta(days=slack_days)).isoformat(), (day + timedelta(days=slack_days)).isoformat()
        doc_ok = {
            doc_id: low <= (d.article.published_at or "")[:10] <= high for doc_id, d in snapshot.documents.items()
        }
        mask = np.fromiter((doc_ok[c.doc_id] for c in snapshot.chunks), dtype=bool, count=len(snapshot.chunks))
        snapshot.derived[key] = mask
    return mask


def source_mask(snapshot: Any, sources: list[str]) -> np.ndarray:
    """Boolean mask over chunk rows whose article comes from one of ``sources``."""
    key = ("source_mask", tuple(sources))
    mask = snapshot.derived.get(key)
    if mask is None:
        wanted = set(sources)
        doc_ok = {doc_id: d.article.source in wanted for doc_id, d in snapshot.documents.items()}
        mask = np.fromiter((doc_ok[c.doc_id] for c in snapshot.chunks), dtype=bool, count=len(snapshot.chunks))
        snapshot.derived[key] = mask
    return mask
