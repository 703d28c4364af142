"""The RFC 9162 (RFC 6962) Merkle tree: hashing, inclusion and consistency proofs.

Pure functions over 32-byte SHA-256 hashes; nothing here knows about the store. Leaves
are hashed as ``SHA-256(0x00 || data)`` and interior nodes as ``SHA-256(0x01 || left ||
right)``, so a leaf can never be passed off as a node. The tree over ``n`` leaves splits
at the largest power of two smaller than ``n`` (RFC 9162 §2.1.1).

``Frontier`` keeps the roots of the perfect subtrees that make up a tree of any size
(O(log n) hashes), so appending a leaf and computing the root never needs the whole log.

*Tiles* are the roots of aligned perfect subtrees, kept by the log as they complete: a
tile of level ``L`` covers ``TILE ** (L + 1)`` leaves (level 0: leaves
``[TILE * i, TILE * (i + 1))``; level 1: ``TILE ** 2`` leaves, the root over ``TILE``
level-0 tiles; and so on). ``TiledTree`` builds any subtree root, and so any proof, from
the highest-level tiles that fit and leaf hashes only at the edges: a proof or frontier
reads fewer than ``2 * TILE`` hashes per level, O(TILE * log_TILE n) in all, instead of
all ``n`` leaf hashes; ``TiledTree.run`` works out every tile and leaf range a proof needs
before reading any, so a store answers a whole proof in one query.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

HASH_SIZE = 32
TILE_HEIGHT = 8
TILE = 1 << TILE_HEIGHT
"""Leaves per level-0 tile, and tiles per tile of the level above: the log's fan-out."""
EMPTY_ROOT = hashlib.sha256(b"").digest()
"""The root of the empty tree: SHA-256 of the empty string."""


class ProofError(ValueError):
    """A proof or a tree size does not fit the arguments (not merely a failed check)."""


def hash_leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def hash_children(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


@dataclass
class Frontier:
    """The perfect-subtree roots of a tree, left to right (largest first)."""

    size: int = 0
    hashes: list[bytes] = field(default_factory=list)

    def append(self, leaf_hash: bytes) -> bytes | None:
        """Add a leaf; return the root of the level-0 tile it completes, if it completes one."""
        self.hashes.append(leaf_hash)
        n = self.size
        tile: bytes | None = None
        height = 0
        # Each trailing one-bit of the old size is a complete subtree to merge with.
        while n & 1:
            right = self.hashes.pop()
            left = self.hashes.pop()
            self.hashes.append(hash_children(left, right))
            n >>= 1
            height += 1
            if height == TILE_HEIGHT:
                tile = self.hashes[-1]
        self.size += 1
        return tile

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        for h in leaf_hashes:
            self.append(h)

    def root(self) -> bytes:
        if not self.hashes:
            return EMPTY_ROOT
        acc = self.hashes[-1]
        for h in reversed(self.hashes[:-1]):
            acc = hash_children(h, acc)
        return acc

    def copy(self) -> Frontier:
        return Frontier(size=self.size, hashes=list(self.hashes))

    def to_hex(self) -> list[str]:
        return [h.hex() for h in self.hashes]

    @classmethod
    def from_hex(cls, size: int, hashes: Sequence[str]) -> Frontier:
        if size < 0 or len(hashes) != size.bit_count():
            raise ProofError(f"a frontier of size {size} has {size.bit_count()} hashes")
        return cls(size=size, hashes=[bytes.fromhex(h) for h in hashes])


def root_hash(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) from the leaf hashes."""
    frontier = Frontier()
    frontier.extend(leaf_hashes)
    return frontier.root()


SubtreeRoot = Callable[[int, int], bytes]
"""``MTH(D[lo:hi])``: the root of the leaves ``[lo, hi)`` of a tree."""


def _from_leaves(leaf_hashes: Sequence[bytes]) -> SubtreeRoot:
    return lambda lo, hi: root_hash(leaf_hashes[lo:hi])


def inclusion_proof(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PATH(index, D[n]) of RFC 9162 §2.1.3.1 over all ``n`` leaf hashes."""
    return inclusion_path(index, len(leaf_hashes), _from_leaves(leaf_hashes))


def inclusion_path(index: int, n: int, subtree: SubtreeRoot) -> list[bytes]:
    """PATH(index, D[n]) with subtree roots from ``subtree``."""
    if not 0 <= index < n:
        raise ProofError(f"leaf index {index} is outside a tree of size {n}")
    path: list[bytes] = []
    lo, hi, m = 0, n, index
    while hi - lo > 1:
        k = _split(hi - lo)
        if m < k:
            path.append(subtree(lo + k, hi))
            hi = lo + k
        else:
            path.append(subtree(lo, lo + k))
            lo, m = lo + k, m - k
    path.reverse()
    return path


def consistency_proof(old_size: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) of RFC 9162 §2.1.4.1; empty when ``m`` is 0 or ``n``."""
    return consistency_path(old_size, len(leaf_hashes), _from_leaves(leaf_hashes))


def consistency_path(old_size: int, n: int, subtree: SubtreeRoot) -> list[bytes]:
    """PROOF(m, D[n]) with subtree roots from ``subtree``."""
    if not 0 <= old_size <= n:
        raise ProofError(f"old size {old_size} is outside 0..{n}")
    if old_size in (0, n):
        return []
    path: list[bytes] = []
    lo, hi, m, whole = 0, n, old_size, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            path.append(subtree(lo + k, hi))
            hi = lo + k
        else:
            path.append(subtree(lo, lo + k))
            lo, m, whole = lo + k, m - k, False
    if not whole:
        path.append(subtree(lo, hi))
    path.reverse()
    return path


def frontier_path(size: int, subtree: SubtreeRoot) -> Frontier:
    """The frontier of a tree's first ``size`` leaves, with subtree roots from ``subtree``."""
    hashes: list[bytes] = []
    lo = 0
    for bit in reversed(range(size.bit_length())):
        if size & (1 << bit):
            hashes.append(subtree(lo, lo + (1 << bit)))
            lo += 1 << bit
    return Frontier(size=size, hashes=hashes)


LEAVES = -1
"""The level of a ``Read`` of leaf hashes rather than tile roots."""

Read = tuple[int, int, int]
"""``(level, first, last)``: the roots of the level-``level`` tiles ``first..last - 1``,
or with level ``LEAVES`` the hashes of the leaves ``[first, last)``."""

Fetched = Mapping[tuple[int, int], bytes]
"""What a batch of reads found, by ``(level, index)``: a tile root or (``LEAVES``) a leaf hash."""

T = TypeVar("T")


def merge_reads(reads: Iterable[Read]) -> list[Read]:
    """The same reads with overlapping or adjacent ranges of a level made one."""
    merged: list[Read] = []
    for level, first, last in sorted(reads):
        if merged and merged[-1][0] == level and first <= merged[-1][2]:
            merged[-1] = (level, merged[-1][1], max(last, merged[-1][2]))
        elif first < last:
            merged.append((level, first, last))
    return merged


class TiledTree:
    """Subtree roots of a log from its tiles and, for the parts no tile covers, its leaves.

    ``tiles(level, first, last)`` returns the roots of the level-``level`` tiles
    ``first..last - 1``; ``leaves(lo, hi)`` the hashes of leaves ``[lo, hi)``. ``subtree``
    reads them lazily, one range at a time. ``run`` computes a whole proof with every range
    it needs read at once, through ``fetch`` (a store answers all of them in one query;
    without ``fetch``, each range is read with ``tiles`` and ``leaves``). ``height``: a
    level-0 tile covers ``2 ** height`` leaves (the log's is ``TILE_HEIGHT``; tests use
    small ones to reach several levels).
    """

    def __init__(
        self,
        tiles: Callable[[int, int, int], Sequence[bytes]],
        leaves: Callable[[int, int], Sequence[bytes]],
        *,
        height: int = TILE_HEIGHT,
        fetch: Callable[[Sequence[Read]], Fetched] | None = None,
    ) -> None:
        if height < 1:
            raise ValueError(f"tile height must be >= 1, not {height}")
        self._tiles = tiles
        self._leaves = leaves
        self._height = height
        self._fetch = fetch or self._fetch_each
        self.last_reads: list[Read] = []
        """The ranges the last ``run`` fetched (for tests and benchmarks)."""

    def subtree(self, lo: int, hi: int) -> bytes:
        """``MTH(D[lo:hi])``, reading each tile and leaf range as it is reached."""
        return self._root(lo, hi, self._read)

    def run(self, compute: Callable[[SubtreeRoot], T]) -> T:
        """``compute(subtree)`` with every tile and leaf range it needs read in one fetch.

        ``compute`` is called twice: first with placeholder roots, only to learn which
        subtrees it asks for (RFC 9162's proofs choose their subtrees from the sizes and
        the index alone, never from hash values), then with the real roots, built from
        what one ``fetch`` of all those ranges returned.
        """
        wanted: list[Read] = []

        def plan(level: int, first: int, last: int) -> Sequence[bytes]:
            wanted.append((level, first, last))
            return ()

        compute(lambda lo, hi: self._root(lo, hi, plan))
        self.last_reads = merge_reads(wanted)
        got = self._fetch(self.last_reads)

        def read(level: int, first: int, last: int) -> Sequence[bytes]:
            return [got[level, i] for i in range(first, last)]

        return compute(lambda lo, hi: self._root(lo, hi, read))

    def frontier(self, size: int) -> Frontier:
        """The frontier of the tree's first ``size`` leaves (read in one fetch)."""
        return self.run(lambda subtree: frontier_path(size, subtree))

    def _read(self, level: int, first: int, last: int) -> Sequence[bytes]:
        return self._leaves(first, last) if level == LEAVES else self._tiles(level, first, last)

    def _fetch_each(self, reads: Sequence[Read]) -> Fetched:
        got: dict[tuple[int, int], bytes] = {}
        for level, first, last in reads:
            hashes = self._read(level, first, last)
            got.update(zip(((level, i) for i in range(first, last)), hashes, strict=True))
        return got

    def _root(self, lo: int, hi: int, read: Callable[[int, int, int], Sequence[bytes]]) -> bytes:
        """``MTH(D[lo:hi])``, splitting as RFC 9162 does until a range is perfect."""
        size = hi - lo
        if size > 0 and size & (size - 1) == 0 and lo % size == 0:
            # Perfect and aligned: the highest level whose tiles fit covers it with fewer
            # than 2 ** height of them.
            level = (size.bit_length() - 1) // self._height - 1
            if level < 0:
                return root_hash(read(LEAVES, lo, hi))
            span = 1 << (self._height * (level + 1))
            return root_hash(read(level, lo // span, hi // span))
        if size <= 1 << self._height:
            return root_hash(read(LEAVES, lo, hi))
        k = _split(size)
        return hash_children(self._root(lo, lo + k, read), self._root(lo + k, hi, read))


def verify_inclusion(
    index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2: does ``proof`` place ``leaf_hash`` at ``index`` under ``root``?"""
    if not 0 <= index < size or any(len(p) != HASH_SIZE for p in proof):
        return False
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = hash_children(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = hash_children(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2: is the tree (new_size, new_root) an extension of the old one?"""
    if old_size < 0 or old_size > new_size or any(len(p) != HASH_SIZE for p in proof):
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof  # every tree extends the empty tree
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is a node of the new tree
        path.insert(0, old_root)
    if not path:
        return False
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = hash_children(c, fr)
            sr = hash_children(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = hash_children(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root
