"""Near-duplicate articles: syndicated copies of one story collapse to one.

Each article gets a MinHash signature over its word 5-shingles (computed on first
use and kept with the snapshot). Two articles whose signatures agree in at least
``threshold`` of their positions (an estimate of the Jaccard similarity of their
shingle sets) are copies of one story. Among the copies in a ranking, the earliest
published one is kept (then the one with a title, then the smallest id) and takes the
best place any copy had; a chunk of a dropped copy becomes the chunk at the same
position of the kept one.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import numpy as np

PERMUTATIONS = 64
SHINGLE_WORDS = 5
_PRIME = (1 << 61) - 1
_rng = np.random.default_rng(20240601)
_A = _rng.integers(1, _PRIME, size=PERMUTATIONS, dtype=np.uint64)
_B = _rng.integers(0, _PRIME, size=PERMUTATIONS, dtype=np.uint64)
_WORD = re.compile(r"\w+")


def shingles(text: str, size: int = SHINGLE_WORDS) -> set[int]:
    """64-bit hashes of the lower-cased word ``size``-grams of ``text``."""
    words = _WORD.findall(text.lower())
    grams = [" ".join(words[i:i + size]) for i in range(max(len(words) - size + 1, 1))] if words else []
    return {int.from_bytes(hashlib.blake2b(g.encode(), digest_size=8).digest(), "big") for g in grams}


def signature(text: str) -> np.ndarray:
    """The MinHash signature of ``text``: for each of the hash functions, the smallest value."""
    values = np.fromiter(shingles(text), dtype=np.uint64)
    if len(values) == 0:
        return np.full(PERMUTATIONS, np.iinfo(np.uint64).max, dtype=np.uint64)
    values %= np.uint64(_PRIME)
    with np.errstate(over="ignore"):  # modular arithmetic on purpose
        hashed = (values[:, None] * _A[None, :] + _B[None, :]) % np.uint64(_PRIME)
    return hashed.min(axis=0)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Estimated Jaccard similarity of two signatures."""
    return float(np.mean(a == b))


def _signature_of(snapshot: Any, doc_id: str) -> np.ndarray:
    cache: dict[str, np.ndarray] = snapshot.derived.setdefault("minhash", {})
    if doc_id not in cache:
        cache[doc_id] = signature(snapshot.documents[doc_id].article.text)
    return cache[doc_id]


def _keep_first(snapshot: Any, doc_id: str) -> tuple[str, int, str]:
    article = snapshot.documents[doc_id].article
    return (article.published_at or "9999", 0 if article.title.strip() else 1, doc_id)


def collapse(snapshot: Any, ranked: list[tuple[int, float]], threshold: float = 0.8) -> list[tuple[int, float]]:
    """``ranked`` with the chunks of near-duplicate articles folded into one copy's."""
    docs = list(dict.fromkeys(snapshot.chunks[row].doc_id for row, _ in ranked))
    kept_for: dict[str, str] = {}
    groups: list[list[str]] = []
    for doc in docs:
        sig = _signature_of(snapshot, doc)
        for group in groups:
            if similarity(sig, _signature_of(snapshot, group[0])) >= threshold:
                group.append(doc)
                break
        else:
            groups.append([doc])
    for group in groups:
        keep = min(group, key=lambda d: _keep_first(snapshot, d))
        for doc in group:
            kept_for[doc] = keep
    out: list[tuple[int, float]] = []
    seen: set[int] = set()
    for row, score in ranked:
        chunk = snapshot.chunks[row]
        keep = kept_for[chunk.doc_id]
        if keep != chunk.doc_id:
            rows = snapshot.rows_by_doc.get(keep, [])
            if chunk.position >= len(rows):
                continue
            row = rows[chunk.position]
        if row not in seen:
            seen.add(row)
            out.append((row, score))
    return out
