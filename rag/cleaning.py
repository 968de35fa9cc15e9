"""Removing the page furniture that scraped news articles carry.

Cleaning works on paragraphs (blocks separated by blank lines, or single lines
when the text has no blank lines) and drops only whole blocks that match a
furniture pattern: advertisement markers, "Must Read" style teasers, share
prompts, newsletter boxes and author bios. Sentences of the article itself are
never edited; whitespace inside a kept block is normalised.
"""

from __future__ import annotations

import re
import unicodedata

# A whole block that is nothing but one of these is furniture.
_FURNITURE_LINE = re.compile(
    r"""^[\W_]*(?:
        advertisement|advertisements|ad|ads|sponsored(?:\s+content)?|promoted|
        must\s+read|also\s+read|read\s+more|read\s+next|recommended(?:\s+for\s+you)?|
        related(?:\s+(?:articles?|posts?|stories|news))?|more\s+from\s+\w+|trending(?:\s+now)?|
        popular(?:\s+posts?)?|latest(?:\s+news)?|you\s+may\s+also\s+like|don'?t\s+miss|
        share(?:\s+this(?:\s+(?:article|story|post))?)?|tweet|email|print|whatsapp|
        share\s+on\s+\w+|follow\s+us(?:\s+on\s+[\w ,&]+)?|click\s+to\s+share.*|
        comments?|leave\s+a\s+(?:comment|reply)|skip\s+to\s+(?:main\s+)?content|
        continue\s+reading|story\s+continues\s+below|scroll\s+to\s+continue.*|
        subscribe(?:\s+now)?|sign\s+up|log\s*in|
        (?:all\s+rights\s+reserved|copyright\s+©?.*|©.*)
    )[\W_]*$""",
    re.IGNORECASE | re.VERBOSE,
)

# Newsletter / subscription boxes: a short block that invites the reader to sign up.
_NEWSLETTER = re.compile(
    r"\b(?:newsletter|subscribe|sign\s+up|inbox|latest\s+news,?\s+offers|special\s+announcements"
    r"|special\s+offers|unsubscribe\s+at\s+any\s+time)\b",
    re.IGNORECASE,
)

# Author bios: a name-like block followed by a short description of the writer.
_NAME = re.compile(r"^(?:by\s+)?[A-Z][\w.'’-]+(?:\s+[A-Z][\w.'’-]+){1,3}$")
_BIO = re.compile(
    r"\b(?:blogger|v\s*logger|vlogger|writer|journalist|editor|reporter|author|contributor|"
    r"correspondent|columnist|freelance|enthusiast|explorer|traveler|traveller|covers|"
    r"has\s+been\s+writing|writes\s+about)\b",
    re.IGNORECASE,
)
_BYLINE = re.compile(r"^by\s+([A-Z][\w.'’-]+(?:\s+(?:[A-Z][\w.'’-]+|and|&))*)\s*$")

_SHORT_PROMO_WORDS = 25
_BIO_WORDS = 30


def normalise_whitespace(text: str) -> str:
    """NFC-normalise, unify newlines, collapse runs of spaces and blank lines."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace("\u00a0", " ").replace("\u200b", "")
    lines = [re.sub(r"[ \t\f\v]+", " ", line).strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _blocks(text: str) -> list[str]:
    # Scraped pages often put one paragraph per line; treat every line as a block.
    return [line for line in text.split("\n") if line.strip()]


def _words(block: str) -> int:
    return len(block.split())


def clean_text(raw: str) -> tuple[str, str | None]:
    """Return ``(cleaned text, author)``; the author comes from a removed byline or bio."""
    blocks = _blocks(normalise_whitespace(raw))
    kept: list[str] = []
    author: str | None = None
    skip_next_promo = False
    i = 0
    while i < len(blocks):
        block = blocks[i]
        nxt = blocks[i + 1] if i + 1 < len(blocks) else ""
        words = _words(block)
        if _FURNITURE_LINE.match(block):
            i += 1
            continue
        if words <= _SHORT_PROMO_WORDS and _NEWSLETTER.search(block):
            skip_next_promo = True
            i += 1
            continue
        if skip_next_promo and words <= _SHORT_PROMO_WORDS and re.search(
            r"\b(?:updated|latest|offers|announcements|delivered|inbox|weekly|daily)\b", block, re.I
        ):
            skip_next_promo = False
            i += 1
            continue
        skip_next_promo = False
        byline = _BYLINE.match(block)
        if byline and words <= 8:
            author = author or byline.group(1)
            i += 1
            continue
        if (
            _NAME.match(block)
            and nxt
            and _words(nxt) <= _BIO_WORDS
            and _BIO.search(nxt)
            and not _looks_like_body(nxt)
        ):
            author = author or re.sub(r"^by\s+", "", block, flags=re.I)
            i += 2
            continue
        kept.append(block)
        i += 1
    return "\n\n".join(kept), author


def _looks_like_body(block: str) -> bool:
    """A bio line is a noun phrase; article sentences have a subject and a finite verb."""
    return bool(re.search(r"\b(?:said|says|told|announced|reported|will|was|were)\b", block, re.I))
