"""What every LLM-backed generator shares: the prompt, the support gate, and the
citation check of the model's answer.

Before the model is called, the passages must hold at least one sentence that
supports the question (``min_support``, as for the extractive generator);
otherwise the generator abstains without asking the model, which would answer
anyway. The model's answer is then checked sentence by sentence
(:func:`rag.checking.check_answer`): its citations are the spans that support
it, never its own say-so. Subclasses only talk to a model: ``chat`` returns the
reply, ``chat_stream`` yields it in pieces.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from rag.checking import check_answer
from rag.config import Settings
from rag.errors import ConfigError
from rag.generators.base import BaseGenerator, GeneratorContext, abstain
from rag.support import passage_sentences, question_support
from rag.types import GeneratedAnswer, Passage

Message = dict[str, str]

INSTRUCTIONS = "Answer using only the context. Cite the passages you use by number, like [1]."


def build_messages(question: str, passages: Sequence[Passage]) -> list[Message]:
    """One user message: the numbered passages, the question, a short instruction.

    Small instruction-tuned models follow this single-message layout far better
    than a system prompt with the context in a separate turn, and longer
    instructions (refusal rules, formats) make them copy whole passages."""
    context = "\n\n".join(f"[{n}] {p.text.strip()}" for n, p in enumerate(passages, start=1))
    return [{"role": "user", "content": f"Context:\n{context}\n\nQuestion: {question}\n\n{INSTRUCTIONS}"}]


class ChatGenerator(BaseGenerator):
    """Base of the generators that ask a chat model; see the module docstring."""

    name = "chat"

    def __init__(self, context: GeneratorContext):
        if context.settings is None:
            raise ConfigError(f"the {self.name} generator needs the settings in its GeneratorContext")
        self.settings: Settings = context.settings
        self.embedder = context.embedder
        self.min_support = context.min_support

    def chat(self, messages: list[Message]) -> str:
        """The model's whole reply."""
        raise NotImplementedError

    def chat_stream(self, messages: list[Message]) -> Iterator[str]:
        """The model's reply, piece by piece as it is produced."""
        raise NotImplementedError

    def generate(self, question: str, passages: Sequence[Passage]) -> GeneratedAnswer:
        refusal = self._gate(question, passages)
        if refusal is not None:
            return refusal
        return self._check(self.chat(build_messages(question, passages)), passages)

    def stream(self, question: str, passages: Sequence[Passage]) -> Iterator[str | GeneratedAnswer]:
        refusal = self._gate(question, passages)
        if refusal is not None:
            yield refusal
            return
        pieces: list[str] = []
        for piece in self.chat_stream(build_messages(question, passages)):
            pieces.append(piece)
            yield piece
        yield self._check("".join(pieces), passages)

    def _gate(self, question: str, passages: Sequence[Passage]) -> GeneratedAnswer | None:
        sentences = passage_sentences(passages)
        if not sentences:
            return abstain("no passages were retrieved, so the corpus holds no answer")
        best = float(question_support(self.embedder, question, [s.text for s in sentences]).max())
        if best < self.min_support:
            return abstain(
                "the corpus does not appear to answer this question: the best matching sentence "
                f"scores {best:.2f}, below the support threshold {self.min_support:.2f}"
            )
        return None

    def _check(self, raw: str, passages: Sequence[Passage]) -> GeneratedAnswer:
        s = self.settings
        return check_answer(raw, passages, self.embedder, s.min_claim_support, s.unsupported_sentences)
