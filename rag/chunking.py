"""Sentence-aware chunking sized in the embedding model's tokens.

``chunk_article`` is a pure function: given an article and a token counter it
returns chunks whose text is exactly ``article.text[start:end]``. Chunks hold
whole sentences; only a sentence longer than the chunk size is cut, at word
boundaries. Neighbouring chunks share whole sentences up to ``overlap`` tokens.
Chunk ids are ``"<doc_id>#<position>"``, so the same text always gives the same ids.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from rag.sentences import split_sentences
from rag.types import Article, Chunk

TokenCounter = Callable[[Sequence[str]], list[int]]


def chunk_id(doc_id: str, position: int) -> str:
    return f"{doc_id}#{position}"


def chunk_article(
    article: Article, count_tokens: TokenCounter, max_tokens: int, overlap: int
) -> list[Chunk]:
    """Split ``article`` into chunks of at most ``max_tokens`` tokens (as counted
    per sentence) sharing up to ``overlap`` tokens with the previous chunk."""
    if max_tokens < 1 or not 0 <= overlap < max_tokens:
        raise ValueError("need max_tokens >= 1 and 0 <= overlap < max_tokens")
    text = article.text
    units = _units(text, count_tokens, max_tokens)
    chunks: list[Chunk] = []
    i = 0
    while i < len(units):
        j, total = i, 0
        while j < len(units) and (j == i or total + units[j][2] <= max_tokens):
            total += units[j][2]
            j += 1
        start, end = units[i][0], units[j - 1][1]
        chunks.append(Chunk(chunk_id(article.id, len(chunks)), article.id, len(chunks), start, end, text[start:end]))
        if j >= len(units):
            break
        # Start the next chunk at the earliest sentence that fits in the overlap budget.
        k, shared = j, 0
        while k - 1 > i and shared + units[k - 1][2] <= overlap:
            k -= 1
            shared += units[k][2]
        i = k
    return chunks


def _units(text: str, count_tokens: TokenCounter, max_tokens: int) -> list[tuple[int, int, int]]:
    """Sentences as ``(start, end, tokens)``; sentences over ``max_tokens`` are cut into pieces."""
    spans = split_sentences(text)
    counts = count_tokens([text[s:e] for s, e in spans]) if spans else []
    units: list[tuple[int, int, int]] = []
    for (start, end), n in zip(spans, counts, strict=True):
        if n <= max_tokens:
            units.append((start, end, n))
        else:
            units.extend(_cut_long_sentence(text, start, end, count_tokens, max_tokens))
    return units


def _cut_long_sentence(
    text: str, start: int, end: int, count_tokens: TokenCounter, max_tokens: int
) -> list[tuple[int, int, int]]:
    words = [(m.start(), m.end()) for m in re.finditer(r"\S+", text[start:end])]
    counts = count_tokens([text[start + s:start + e] for s, e in words])
    pieces: list[tuple[int, int, int]] = []
    piece_start, total, last_end = words[0][0], 0, words[0][0]
    for (s, e), n in zip(words, counts, strict=True):
        if total and total + n > max_tokens:
            pieces.append((start + piece_start, start + last_end, total))
            piece_start, total = s, 0
        total += n
        last_end = e
    pieces.append((start + piece_start, start + last_end, total))
    return pieces
