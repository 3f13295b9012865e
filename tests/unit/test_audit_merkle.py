"""RFC 9162 §2.1.1 hashing, checked against the published Certificate Transparency vectors and against a
deliberately naive recursive implementation written here from the RFC's definition."""

from __future__ import annotations

import hashlib
import random

import pytest

from audit import EMPTY_ROOT, AuditError, Frontier, leaf_hash, node_hash, root_hash


def naive_mth(entries: list[bytes]) -> bytes:
    """MTH(D[n]) exactly as RFC 9162 §2.1.1 states it, over the entries themselves (not leaf hashes)."""
    n = len(entries)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + entries[0]).digest()
    k = 1
    while k * 2 < n:  # the largest power of two smaller than n
        k *= 2
    return hashlib.sha256(b"\x01" + naive_mth(entries[:k]) + naive_mth(entries[k:])).digest()


# RFC 6962 test vectors as published by transparency-dev/merkle (testonly/constants.go): the leaf inputs and
# the root for each tree size 0..8. RFC 9162 did not change the hashing, so they hold for it too.
CT_ENTRIES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]

ENTRIES = [f"entry {i}".encode() for i in range(301)]
LEAVES = [leaf_hash(e) for e in ENTRIES]


def test_leaf_and_node_hashes_use_the_rfc_9162_prefixes() -> None:
    assert leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    left, right = leaf_hash(b"l"), leaf_hash(b"r")
    assert node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()
    # Domain separation: a leaf whose content is two hashes does not hash like the node above them.
    assert leaf_hash(left + right) != node_hash(left, right)


def test_the_empty_tree_hashes_to_sha256_of_nothing() -> None:
    assert EMPTY_ROOT.hex() == CT_ROOTS[0]
    assert root_hash([]) == EMPTY_ROOT
    assert Frontier.empty().root() == EMPTY_ROOT


@pytest.mark.parametrize("size", range(len(CT_ROOTS)))
def test_roots_match_the_certificate_transparency_vectors(size: int) -> None:
    leaves = [leaf_hash(e) for e in CT_ENTRIES[:size]]
    frontier = Frontier.empty()
    for leaf in leaves:
        frontier.append(leaf)
    assert root_hash(leaves).hex() == CT_ROOTS[size]
    assert frontier.root().hex() == CT_ROOTS[size]
    assert naive_mth(CT_ENTRIES[:size]).hex() == CT_ROOTS[size]


def test_root_hash_and_frontier_agree_with_the_naive_definition_for_every_size_up_to_300() -> None:
    frontier = Frontier.empty()
    for size in range(301):
        expected = naive_mth(ENTRIES[:size])
        assert frontier.size == size
        assert frontier.root() == expected, size
        assert root_hash(LEAVES[:size]) == expected, size
        if size < 300:
            frontier.append(LEAVES[size])


@pytest.mark.parametrize("seed", range(5))
def test_frontier_agrees_with_the_naive_definition_at_random_sizes(seed: int) -> None:
    rng = random.Random(seed)
    size = rng.randrange(301, 5000)
    entries = [rng.randbytes(rng.randrange(0, 64)) for _ in range(size)]
    frontier = Frontier.empty()
    for entry in entries:
        frontier.append(leaf_hash(entry))
    assert frontier.root() == naive_mth(entries) == root_hash([leaf_hash(e) for e in entries])


def test_frontier_keeps_one_hash_per_one_bit_of_its_size() -> None:
    frontier = Frontier.empty()
    for size in range(1, 1100):
        frontier.append(LEAVES[size % len(LEAVES)])
        assert len(frontier.to_bytes()) == 32 * size.bit_count()  # ≤ ⌊log2 size⌋ + 1 subtree roots


def test_a_stored_frontier_resumes_where_it_left_off() -> None:
    frontier = Frontier.empty()
    for size in range(300):
        restored = Frontier.from_bytes(frontier.size, frontier.to_bytes())
        assert restored.size == size
        assert restored.root() == frontier.root()
        for leaf in LEAVES[size : size + 3]:
            restored.append(leaf)
        assert restored.root() == root_hash(LEAVES[: size + 3])
        frontier.append(LEAVES[size])


def test_append_changes_the_frontier_in_place() -> None:
    frontier = Frontier.empty()
    assert frontier.append(LEAVES[0]) is None  # type: ignore[func-returns-value]
    assert frontier.size == 1
    assert repr(frontier) == f"Frontier(size=1, root={LEAVES[0].hex()})"


@pytest.mark.parametrize(
    ("size", "data"),
    [
        (1, b""),
        (0, b"\x00" * 32),
        (3, b"\x00" * 32),
        (3, b"\x00" * 65),
        (-1, b""),
        (True, b"\x00" * 32),
    ],
)
def test_a_stored_frontier_of_the_wrong_shape_is_refused(size: int, data: bytes) -> None:
    with pytest.raises(AuditError):
        Frontier.from_bytes(size, data)


@pytest.mark.parametrize("bad", [b"", b"\x00" * 31, b"\x00" * 33])
def test_leaf_hashes_must_be_32_bytes(bad: bytes) -> None:
    with pytest.raises(AuditError):
        Frontier.empty().append(bad)
    with pytest.raises(AuditError):
        root_hash([LEAVES[0], bad])


@pytest.mark.slow
def test_a_million_leaves_hash_without_recursion() -> None:
    # Far deeper than Python's recursion limit would allow a recursive MTH; speed is the benchmark's business.
    leaves = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(1_000_000)]
    root = root_hash(leaves)
    frontier = Frontier.empty()
    for leaf in leaves:
        frontier.append(leaf)
    assert frontier.root() == root
