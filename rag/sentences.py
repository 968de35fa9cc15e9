"""Sentence spans: ``split_sentences(text)`` returns ``(start, end)`` offsets so
that callers can cite ``text[start:end]`` exactly. Paragraph breaks always end a
sentence; a period after a common abbreviation or an initial does not."""

from __future__ import annotations

import re

_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "ft", "gen", "gov", "sen", "rep",
    "col", "lt", "sgt", "capt", "cmdr", "adm", "rev", "hon", "pres", "supt",
    "inc", "ltd", "co", "corp", "llc", "plc", "bros", "dept", "univ", "assn",
    "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
    "mon", "tue", "tues", "wed", "thu", "thurs", "fri", "sat", "sun",
    "no", "nos", "vol", "vols", "pp", "fig", "figs", "approx", "est", "vs", "etc", "al",
    "e.g", "i.e", "u.s", "u.k", "u.n", "a.m", "p.m", "d.c", "ph.d",
}

# Candidate boundary: terminal punctuation, optional closing quotes/brackets, whitespace.
_BOUNDARY = re.compile(r"""([.!?…]+)(["'”’)\]]*)(\s+)(?=["'“‘(\[]?[A-Z0-9])""")
_PARAGRAPH = re.compile(r"\n\s*\n|\n")


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Return the sentence spans of ``text`` in order, whitespace excluded."""
    spans: list[tuple[int, int]] = []
    pos = 0
    for para in _PARAGRAPH.split(text) if text else []:
        start = text.index(para, pos) if para else pos
        pos = start + len(para)
        spans.extend(_split_paragraph(text, start, pos))
    return spans


def _split_paragraph(text: str, begin: int, end: int) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    sent_start = begin
    for match in _BOUNDARY.finditer(text, begin, end):
        if match.group(1) == "." and _is_abbreviation(text, sent_start, match.start()):
            continue
        cut = match.start(3)
        spans.append((sent_start, cut))
        sent_start = match.end()
    spans.append((sent_start, end))
    return [_trim(text, s, e) for s, e in spans if text[s:e].strip()]


def _is_abbreviation(text: str, sent_start: int, dot: int) -> bool:
    word_start = dot
    while word_start > sent_start and not text[word_start - 1].isspace():
        word_start -= 1
    word = text[word_start:dot].lstrip("\"'“‘([").lower()
    if not word:
        return False
    if len(word) == 1 and word.isalpha():  # an initial, as in "J. Smith"
        return True
    return word in _ABBREVIATIONS


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end
