"""A deterministic generator for tests: it cites the first sentence of each of
the top passages, or plays back replies it was given.

Scripted replies are answer texts with ``[n]`` markers; marker ``n`` becomes a
citation of the first sentence of passage ``n``. A reply of ``None`` abstains.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from rag.generators.base import BaseGenerator, GeneratorContext, abstain, cite
from rag.sentences import split_sentences
from rag.types import Citation, GeneratedAnswer, Passage


class ScriptedGenerator(BaseGenerator):
    name = "scripted"

    def __init__(self, context: GeneratorContext | None = None, replies: Sequence[str | None] = (),
                 passages_to_cite: int = 1):
        self._replies: Iterator[str | None] = iter(replies)
        self._scripted = bool(replies)
        self._passages_to_cite = passages_to_cite

    def generate(self, question: str, passages: Sequence[Passage]) -> GeneratedAnswer:
        if not passages:
            return abstain("no passages were retrieved")
        if self._scripted:
            reply = next(self._replies, None)
            if reply is None:
                return abstain("scripted abstention")
            return self._from_reply(reply, passages)
        citations = [
            self._first_sentence(n, p) for n, p in enumerate(passages[: self._passages_to_cite], start=1)
        ]
        return GeneratedAnswer(" ".join(f"{c.quote} [{c.n}]" for c in citations), tuple(citations))

    def _from_reply(self, reply: str, passages: Sequence[Passage]) -> GeneratedAnswer:
        citations: list[Citation] = []
        for marker in sorted({int(m) for m in re.findall(r"\[(\d+)\]", reply)}):
            if 1 <= marker <= len(passages):
                citations.append(self._first_sentence(marker, passages[marker - 1]))
        return GeneratedAnswer(reply, tuple(citations))

    @staticmethod
    def _first_sentence(n: int, passage: Passage) -> Citation:
        start, end = split_sentences(passage.text)[0]
        return cite(n, passage, start, end)
