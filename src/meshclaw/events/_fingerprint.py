"""Similarity fingerprints of texts: MinHash over the set of content words.

A text becomes a ``TextPrint``: its word count, distinct word count and a ``K``-value
MinHash signature of its distinct lower-cased content words (stop words left out).
Each signature value is the minimum, over the words, of one multiply-shift hash of the
word's CRC-32. The fraction of equal positions in two signatures estimates the Jaccard
similarity of the two word sets (``similarity``), which is robust to re-ordering and
light paraphrase. Everything is fixed (CRC-32, constants below), so prints are stable
across processes, machines and versions and may be stored instead of the text.
"""

from __future__ import annotations

import random
import re
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from meshclaw.events._models import TextPrint

if TYPE_CHECKING:
    import polars as pl

K = 16
"""Signature size: Jaccard estimates have a standard error of about 0.5/sqrt(K)."""
_WORD = re.compile(r"[a-z0-9]+(?:['_-][a-z0-9]+)*")
STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "in",
        "is",
        "it",
        "me",
        "my",
        "of",
        "on",
        "or",
        "our",
        "please",
        "the",
        "this",
        "to",
        "with",
        "you",
        "your",
    ]
)
_rng = random.Random(0x6D657368)  # fixed: signatures must never change
_A = np.array([_rng.getrandbits(64) | 1 for _ in range(K)], dtype=np.uint64)
_B = np.array([_rng.getrandbits(64) for _ in range(K)], dtype=np.uint64)
_EMPTY = np.full(K, 0xFFFFFFFF, dtype=np.uint32)
_SHIFT = np.uint64(32)


def words(text: str) -> list[str]:
    """The content words of ``text``, lower-cased, in order (stop words removed)."""
    return [w for w in _WORD.findall(text.lower()) if w not in STOP_WORDS]


def _signatures(word_hashes: npt.NDArray[np.uint64], starts: npt.NDArray[np.int64]) -> Any:
    """Row-wise MinHash: ``word_hashes`` grouped by ``starts`` offsets -> (rows, K)."""
    with np.errstate(over="ignore"):
        mixed = (word_hashes[:, None] * _A[None, :] + _B[None, :]) >> _SHIFT
    return np.minimum.reduceat(mixed.astype(np.uint32), starts, axis=0)


def minhash_matrix(texts: Sequence[str | None]) -> npt.NDArray[np.uint32]:
    """Signatures of many texts at once, as a (len(texts), K) array (vectorised).

    A missing text (``None``) or one without content words gets the all-ones signature,
    which matches nothing but itself.
    """
    hashes: list[int] = []
    starts: list[int] = []
    rows: list[int] = []
    crc = zlib.crc32
    for i, text in enumerate(texts):
        if text is None:
            continue
        distinct = {w for w in _WORD.findall(text.lower()) if w not in STOP_WORDS}
        if distinct:
            rows.append(i)
            starts.append(len(hashes))
            hashes.extend(crc(w.encode()) for w in distinct)
    out = np.tile(_EMPTY, (len(texts), 1))
    if rows:
        sigs = _signatures(np.array(hashes, dtype=np.uint64), np.array(starts, dtype=np.int64))
        out[np.array(rows)] = sigs
    return out


def minhash_series(texts: pl.Series) -> npt.NDArray[np.uint32]:
    """``minhash_matrix`` of a Polars string column, vectorised: identical results.

    Words are extracted and exploded by Polars; only the distinct vocabulary goes
    through CRC-32 in Python, and the signatures are one NumPy pass.
    """
    import polars as pl  # the columnar reader's only: not at import

    n = texts.len()
    out = np.tile(_EMPTY, (n, 1))
    present = texts.is_not_null()
    rows = np.arange(n, dtype=np.int64)
    if present.sum() < n:  # missing texts keep the all-ones signature: skip them early
        rows, texts = rows[present.to_numpy()], texts.filter(present)
    words = (
        pl.DataFrame({"row": rows, "w": texts.str.to_lowercase()})
        .with_columns(pl.col("w").str.extract_all(_WORD.pattern))
        .explode("w")
        .filter(pl.col("w").is_not_null() & ~pl.col("w").is_in(list(STOP_WORDS)))
    )
    if words.height == 0:
        return out
    vocab = words["w"].unique()
    crcs = pl.Series([zlib.crc32(w.encode()) for w in vocab.to_list()], dtype=pl.UInt64)
    hashes = words["w"].replace_strict(vocab, crcs, return_dtype=pl.UInt64).to_numpy()
    word_rows = words["row"].to_numpy()
    starts = np.flatnonzero(np.r_[True, word_rows[1:] != word_rows[:-1]])
    out[word_rows[starts]] = _signatures(hashes, starts.astype(np.int64))
    return out


def fingerprint(text: str) -> TextPrint:
    """The ``TextPrint`` of ``text``."""
    ws = words(text)
    sig = minhash_matrix([text])[0]
    return TextPrint(words=len(ws), unique=len(set(ws)), minhash=tuple(sig.tolist()))


def similarity(a: TextPrint | Sequence[int], b: TextPrint | Sequence[int]) -> float:
    """Estimated Jaccard similarity in [0, 1] of the word sets behind two prints."""
    sa = a.minhash if isinstance(a, TextPrint) else a
    sb = b.minhash if isinstance(b, TextPrint) else b
    if len(sa) != len(sb) or not sa:
        return 0.0
    return sum(1 for x, y in zip(sa, sb, strict=True) if x == y) / len(sa)
