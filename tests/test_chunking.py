"""Chunk offsets, sizes and ids; sentence spans."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rag.chunking import chunk_article
from rag.corpus import read_articles
from rag.embedding import Embedder
from rag.sentences import split_sentences
from rag.types import Article
from tests.conftest import SEEDS

WORDS = ["Xiaomi", "bank", "said", "on", "Monday", "the", "U.S.", "Dr.", "loans", "3.5%", "“quoted”", "—",
         "KreditBee", "growth", "é", "naïve", "2019", "a", "Inc.", "x" * 40]
_sentence = st.lists(st.sampled_from(WORDS), min_size=1, max_size=25).map(lambda ws: " ".join(ws) + ".")
_paragraph = st.lists(_sentence, min_size=1, max_size=8).map(" ".join)
_text = st.lists(_paragraph, min_size=1, max_size=6).map("\n\n".join)


def _words(texts: list[str]) -> list[int]:
    return [len(t.split()) for t in texts]


@given(text=_text, size=st.integers(5, 60), overlap_share=st.floats(0, 0.9))
@settings(max_examples=200, deadline=None)
def test_every_chunk_is_the_article_slice_at_its_offsets(text: str, size: int, overlap_share: float) -> None:
    overlap = min(size - 1, int(size * overlap_share))
    article = Article(id="doc", title="t", text=text)
    chunks = chunk_article(article, _words, size, overlap)
    assert chunks, "a non-empty article gives at least one chunk"
    for i, chunk in enumerate(chunks):
        assert chunk.text == text[chunk.start:chunk.end]
        assert chunk.id == f"doc#{i}" and chunk.position == i
        assert chunk.text == chunk.text.strip()
        assert len(chunk.text.split()) <= size
    # Coverage: every non-space character of the article is in some chunk.
    covered = [False] * len(text)
    for chunk in chunks:
        covered[chunk.start:chunk.end] = [True] * (chunk.end - chunk.start)
    assert all(covered[i] for i, ch in enumerate(text) if not ch.isspace())
    # Progress: chunks start strictly later and never go backwards.
    starts = [c.start for c in chunks]
    assert starts == sorted(set(starts))


@given(text=_text)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_chunks_fit_the_model_token_budget(embedder: Embedder, text: str) -> None:
    article = Article(id="doc", title="t", text=text)
    for chunk in chunk_article(article, embedder.count_tokens, 48, 8):
        assert chunk.text == text[chunk.start:chunk.end]
        # Counted per sentence; joining sentences adds no word pieces.
        assert embedder.count_tokens([chunk.text])[0] <= 48


def test_chunk_ids_are_stable_across_rebuilds(embedder: Embedder) -> None:
    article = next(a for a in read_articles([SEEDS]) if isinstance(a, Article))
    first = chunk_article(article, embedder.count_tokens, 64, 16)
    second = chunk_article(article, embedder.count_tokens, 64, 16)
    assert first == second and len(first) > 1


def test_overlap_shares_whole_sentences() -> None:
    text = "One two three. Four five six. Seven eight nine. Ten eleven twelve."
    chunks = chunk_article(Article(id="d", title="t", text=text), _words, 6, 3)
    assert [c.text for c in chunks] == [
        "One two three. Four five six.",
        "Four five six. Seven eight nine.",
        "Seven eight nine. Ten eleven twelve.",
    ]


def test_sentence_longer_than_the_budget_is_cut_at_words() -> None:
    text = " ".join(f"w{i}" for i in range(25)) + "."
    chunks = chunk_article(Article(id="d", title="t", text=text), _words, 10, 0)
    assert [len(c.text.split()) for c in chunks] == [10, 10, 5]
    assert all(c.text == text[c.start:c.end] for c in chunks)


def test_sentences_respect_abbreviations_and_paragraphs() -> None:
    text = 'Dr. Smith met U.S. officials on Jan. 5. They agreed.\n\nA new paragraph "starts." Here.'
    spans = [text[s:e] for s, e in split_sentences(text)]
    assert spans == ["Dr. Smith met U.S. officials on Jan. 5.", "They agreed.", 'A new paragraph "starts."', "Here."]
