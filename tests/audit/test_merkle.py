"""RFC 6962 / RFC 9162 Merkle tree: published known-answer vectors and properties.

The vectors are the reference data of the certificate-transparency test suites: the
eight leaf inputs, the roots of D[1..8], and the audit paths and consistency proofs, as
used by certificate-transparency-go (``merkletree`` tests), Trillian
(``merkle/logverifier/log_verifier_test.go``) and transparency-dev/merkle
(``testonly/constants.go``, ``rfc6962`` tests). Leaf indices there are 1-based in the
inclusion table; they are converted to 0-based below.
"""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from meshclaw.audit.merkle import (
    EMPTY_ROOT,
    Frontier,
    consistency_proof,
    hash_children,
    hash_leaf,
    inclusion_proof,
    root_hash,
    verify_consistency,
    verify_inclusion,
)

LEAF_INPUTS = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
LEAVES = [hash_leaf(x) for x in LEAF_INPUTS]

EMPTY_TREE_HASH = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
ROOTS = [  # MTH(D[1]) .. MTH(D[8])
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# (1-based leaf, tree size, audit path)
INCLUSION = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (3, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        2,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
# (old size, new size, proof)
CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]


def _hex(items: list[bytes]) -> list[str]:
    return [b.hex() for b in items]


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    assert EMPTY_ROOT.hex() == EMPTY_TREE_HASH
    assert root_hash([]).hex() == EMPTY_TREE_HASH
    assert Frontier().root().hex() == EMPTY_TREE_HASH


def test_roots_of_the_reference_tree() -> None:
    for n, expected in enumerate(ROOTS, start=1):
        assert root_hash(LEAVES[:n]).hex() == expected, n


def test_inclusion_proofs_match_the_reference_paths_and_verify() -> None:
    for leaf, size, path in INCLUSION:
        proof = inclusion_proof(leaf - 1, LEAVES[:size])
        assert _hex(proof) == path, (leaf, size)
        root = bytes.fromhex(ROOTS[size - 1])
        assert verify_inclusion(leaf - 1, size, LEAVES[leaf - 1], proof, root)


def test_consistency_proofs_match_the_reference_proofs_and_verify() -> None:
    for old, new, expected in CONSISTENCY:
        proof = consistency_proof(old, LEAVES[:new])
        assert _hex(proof) == expected, (old, new)
        old_root, new_root = bytes.fromhex(ROOTS[old - 1]), bytes.fromhex(ROOTS[new - 1])
        assert verify_consistency(old, new, old_root, new_root, proof)


def test_reference_proofs_fail_when_anything_is_wrong() -> None:
    # Mirrors the corrupted probes of transparency-dev/merkle's test data generator.
    leaf, size, path = INCLUSION[2]
    proof = [bytes.fromhex(p) for p in path]
    root = bytes.fromhex(ROOTS[size - 1])
    idx, lh = leaf - 1, LEAVES[leaf - 1]
    assert not verify_inclusion(idx - 1, size, lh, proof, root)
    assert not verify_inclusion(idx + 1, size, lh, proof, root)
    assert not verify_inclusion(idx ^ 2, size, lh, proof, root)
    assert not verify_inclusion(idx, size * 2, lh, proof, root)
    assert not verify_inclusion(idx, size // 2, lh, proof, root)
    assert not verify_inclusion(idx, size, hash_leaf(b"WrongLeaf"), proof, root)
    assert not verify_inclusion(idx, size, lh, proof, EMPTY_ROOT)
    assert not verify_inclusion(idx, size, lh, [*proof, root], root)
    assert not verify_inclusion(idx, size, lh, [root, *proof], root)
    assert not verify_inclusion(idx, size, lh, proof[:-1], root)
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = bytes([bad[i][0] ^ 8]) + bad[i][1:]
        assert not verify_inclusion(idx, size, lh, bad, root)

    old, new, cpath = CONSISTENCY[2]
    cproof = [bytes.fromhex(p) for p in cpath]
    r1, r2 = bytes.fromhex(ROOTS[old - 1]), bytes.fromhex(ROOTS[new - 1])
    assert not verify_consistency(old - 1, new, r1, r2, cproof)
    assert not verify_consistency(old + 1, new, r1, r2, cproof)
    assert not verify_consistency(old, new * 2, r1, r2, cproof)
    assert not verify_consistency(old, new, r2, r1, cproof)
    assert not verify_consistency(old, new, r1, r2, [])
    assert not verify_consistency(old, new, r1, r2, cproof[:-1])
    assert not verify_consistency(old, new, r1, r2, [*cproof, r1])
    assert not verify_consistency(old, new, r1, r2, [cproof[0], *cproof])


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    a, b = hash_leaf(b"a"), hash_leaf(b"b")
    assert hash_children(a, b) == hashlib.sha256(b"\x01" + a + b).digest()
    assert hash_leaf(a + b) != hash_children(a, b)


# -- properties ------------------------------------------------------------------------

leaf_lists = st.lists(st.binary(max_size=16), min_size=1, max_size=70)


def _naive_root(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1 MTH, written recursively exactly as the RFC states it."""
    n = len(leaves)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return hash_children(_naive_root(leaves[:k]), _naive_root(leaves[k:]))


@settings(max_examples=200, deadline=None)
@given(leaf_lists)
def test_frontier_root_equals_the_rfc_definition_at_every_size(data: list[bytes]) -> None:
    leaves = [hash_leaf(d) for d in data]
    frontier = Frontier()
    for i, leaf in enumerate(leaves, start=1):
        frontier.append(leaf)
        assert frontier.size == i
        assert len(frontier.hashes) == i.bit_count()
        assert frontier.root() == _naive_root(leaves[:i])
    again = Frontier.from_hex(frontier.size, frontier.to_hex())
    assert again.root() == frontier.root()


@settings(max_examples=200, deadline=None)
@given(leaf_lists, st.data())
def test_every_inclusion_proof_verifies_and_a_wrong_one_does_not(
    data: list[bytes], draw: st.DataObject
) -> None:
    leaves = [hash_leaf(d) for d in data]
    n = len(leaves)
    index = draw.draw(st.integers(0, n - 1))
    root = root_hash(leaves)
    proof = inclusion_proof(index, leaves)
    assert verify_inclusion(index, n, leaves[index], proof, root)
    assert not verify_inclusion(index, n, hash_leaf(b"other" + data[index]), proof, root)
    if n > 1:
        other = draw.draw(st.integers(0, n - 1).filter(lambda i: i != index))
        if leaves[other] != leaves[index]:
            assert not verify_inclusion(other, n, leaves[index], proof, root)
    if proof:
        k = draw.draw(st.integers(0, len(proof) - 1))
        bad = list(proof)
        bad[k] = hashlib.sha256(bad[k]).digest()
        assert not verify_inclusion(index, n, leaves[index], bad, root)


@settings(max_examples=200, deadline=None)
@given(leaf_lists, st.data())
def test_every_consistency_proof_verifies_and_a_forked_tree_does_not(
    data: list[bytes], draw: st.DataObject
) -> None:
    leaves = [hash_leaf(d) for d in data]
    n = len(leaves)
    m = draw.draw(st.integers(0, n))
    proof = consistency_proof(m, leaves)
    old_root, new_root = root_hash(leaves[:m]), root_hash(leaves)
    assert verify_consistency(m, n, old_root, new_root, proof)
    if 0 < m < n:
        # A fork: one old leaf rewritten. The new tree no longer extends the old one.
        j = draw.draw(st.integers(0, m - 1))
        forked = list(leaves)
        forked[j] = hash_leaf(b"forged" + data[j])
        forked_root = root_hash(forked)
        assert not verify_consistency(m, n, old_root, forked_root, consistency_proof(m, forked))
        assert not verify_consistency(m, n, old_root, forked_root, proof)
