"""RFC 9162 inclusion and consistency proofs (audit/proofs.py), the subtree store they are made from
(Frontier.append_collect) and compact ranges (audit/compact.py), checked against the recursive definitions of
tests/oracle/rfc9162.py and against published Certificate Transparency proofs."""

from __future__ import annotations

import base64
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit import (
    EMPTY_ROOT,
    AuditError,
    CompactRange,
    Frontier,
    ProofError,
    consistency_nodes,
    consistency_proof,
    inclusion_nodes,
    inclusion_proof,
    leaf_hash,
    range_nodes,
    subtree_hash,
    verify_consistency,
    verify_inclusion,
)
from audit.compact import range_hashes
from tests.oracle import rfc9162 as oracle

ENTRIES = [f"entry {i}".encode() for i in range(300)]
LEAVES = [leaf_hash(e) for e in ENTRIES]


def build(count: int) -> tuple[Frontier, dict[tuple[int, int], bytes]]:
    """A tree of the first `count` entries and its subtree store, filled the way the sequencer fills it."""
    frontier = Frontier.empty()
    nodes: dict[tuple[int, int], bytes] = {}
    for index, leaf in enumerate(LEAVES[:count]):
        nodes[(0, index)] = leaf
        for level, idx, node in frontier.append_collect(leaf):
            nodes[(level, idx)] = node
    return frontier, nodes


FRONTIER, NODES = build(300)


def root(size: int) -> bytes:
    return oracle.mth(ENTRIES[:size])


# -- the store -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 3, 7, 8, 9, 64, 100, 129])
def test_append_collect_stores_every_perfect_subtree_and_nothing_else(size: int) -> None:
    frontier, nodes = build(size)
    expected = {
        (level, idx): oracle.mth(ENTRIES[idx << level : (idx + 1) << level])
        for level in range(size.bit_length())
        for idx in range(size >> level)
    }
    assert nodes == expected
    assert frontier.root() == root(size)


def test_append_collect_reports_the_subtrees_completed_smallest_first() -> None:
    frontier, _ = build(7)
    completed = frontier.append_collect(LEAVES[7])
    assert [(level, idx) for level, idx, _ in completed] == [(1, 3), (2, 1), (3, 0)]
    assert completed[-1][2] == root(8) == frontier.root()
    assert frontier.append_collect(LEAVES[8]) == []


def test_append_collect_and_append_build_the_same_frontier() -> None:
    plain = Frontier.empty()
    for leaf in LEAVES:
        plain.append(leaf)
    assert plain.to_bytes() == FRONTIER.to_bytes()
    with pytest.raises(AuditError):
        Frontier.empty().append_collect(b"\x00" * 31)


def test_the_frontier_lists_its_subtrees_largest_first() -> None:
    frontier, _ = build(13)
    assert frontier.subtrees() == [(3, 0, NODES[(3, 0)]), (2, 2, NODES[(2, 2)]), (0, 12, NODES[(0, 12)])]
    assert Frontier.empty().subtrees() == []


def test_whole_subtrees_can_be_appended_where_they_may_start() -> None:
    frontier = Frontier.empty()
    frontier.append_subtree(3, NODES[(3, 0)])
    frontier.append_subtree(1, NODES[(1, 4)])
    frontier.append(LEAVES[10])
    frontier.append_subtree(0, LEAVES[11])
    frontier.append_subtree(2, NODES[(2, 3)])
    assert frontier.size == 16
    assert frontier.root() == root(16)
    with pytest.raises(AuditError, match="cannot start"):
        frontier.append_subtree(5, NODES[(3, 2)])
    with pytest.raises(AuditError):
        frontier.append_subtree(-1, LEAVES[0])
    with pytest.raises(AuditError):
        frontier.append_subtree(0, b"short")


# -- compact ranges --------------------------------------------------------------------------------------------


@given(st.integers(0, 300), st.integers(0, 300))
def test_a_compact_range_covers_exactly_its_leaves_with_aligned_subtrees(a: int, b: int) -> None:
    begin, end = min(a, b), max(a, b)
    nodes = range_nodes(begin, end)
    position = begin
    for level, idx in nodes:
        assert idx << level == position  # contiguous, left to right, each aligned to its size
        position += 1 << level
    assert position == end
    levels = [level for level, _ in nodes]
    assert all(levels.count(level) <= 2 for level in set(levels))
    assert [(level, h) for (level, _), h in zip(nodes, [NODES[n] for n in nodes], strict=True)] == range_hashes(
        LEAVES[begin:end], begin
    )


def test_range_nodes_refuses_a_backwards_or_negative_range() -> None:
    with pytest.raises(AuditError):
        range_nodes(5, 4)
    with pytest.raises(AuditError):
        range_nodes(-1, 4)


@given(st.integers(0, 299), st.lists(st.integers(1, 40), max_size=8))
def test_a_growing_compact_range_merges_into_the_fewest_subtrees(begin: int, steps: list[int]) -> None:
    compact = CompactRange(begin)
    for step in steps:
        compact.extend(LEAVES[compact.end : compact.end + step])
    nodes = range_nodes(begin, compact.end)
    assert compact.nodes == [(level, NODES[(level, idx)]) for level, idx in nodes]


def test_the_subtree_hash_of_a_right_edge_is_its_subtrees_folded_from_the_right() -> None:
    # [8, 13): leaves 8..12, the right part of the 13-leaf tree's first split.
    parts = [NODES[node] for node in range_nodes(8, 13)]
    assert subtree_hash(parts) == oracle.mth(ENTRIES[8:13])
    with pytest.raises(AuditError):
        subtree_hash([])
    with pytest.raises(AuditError):
        subtree_hash([parts[0], b"short"])
    with pytest.raises(AuditError):
        CompactRange(-1)
    compact = CompactRange(3)
    with pytest.raises(AuditError, match="cannot start"):
        compact.append_subtree(1, NODES[(1, 2)])


# -- generation ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", range(1, 65))
def test_inclusion_proofs_from_stored_subtrees_are_rfc_9162_paths(size: int) -> None:
    for index in range(size):
        proof = inclusion_proof(index, size, NODES)
        assert proof == oracle.path(index, ENTRIES[:size]), index
        verify_inclusion(LEAVES[index], index, size, proof, root(size))


@pytest.mark.parametrize("second", range(1, 65))
def test_consistency_proofs_from_stored_subtrees_are_rfc_9162_proofs(second: int) -> None:
    for first in range(1, second + 1):
        proof = consistency_proof(first, second, NODES)
        assert proof == oracle.proof(first, ENTRIES[:second]), first
        verify_consistency(first, second, root(first), root(second), proof)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_inclusion_proofs_agree_with_the_oracle_at_any_size(data: st.DataObject) -> None:
    size = data.draw(st.integers(1, 300))
    index = data.draw(st.integers(0, size - 1))
    nodes = inclusion_nodes(index, size)
    proof = inclusion_proof(index, size, {node: NODES[node] for node in nodes})  # exactly the nodes it names
    assert proof == oracle.path(index, ENTRIES[:size])
    verify_inclusion(LEAVES[index], index, size, proof, root(size))


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_consistency_proofs_agree_with_the_oracle_at_any_pair_of_sizes(data: st.DataObject) -> None:
    second = data.draw(st.integers(1, 300))
    first = data.draw(st.integers(1, second))
    nodes = consistency_nodes(first, second)
    proof = consistency_proof(first, second, {node: NODES[node] for node in nodes})
    assert proof == oracle.proof(first, ENTRIES[:second])
    verify_consistency(first, second, root(first), root(second), proof)


def test_a_proof_reads_o_log_n_stored_subtrees() -> None:
    rng = random.Random(9162)
    for _ in range(2000):
        size = rng.randrange(1, 1 << 48)
        bound = 2 * (size - 1).bit_length()  # 2·⌈log2 size⌉
        assert len(inclusion_nodes(rng.randrange(size), size)) <= bound
        assert len(consistency_nodes(rng.randrange(1, size + 1), size)) <= bound


def test_proofs_between_equal_or_from_empty_trees_are_empty() -> None:
    assert consistency_nodes(0, 10) == consistency_nodes(10, 10) == []
    assert consistency_proof(10, 10, NODES) == consistency_proof(0, 10, {}) == []
    verify_consistency(10, 10, root(10), root(10), [])
    verify_consistency(0, 10, EMPTY_ROOT, root(10), [])
    assert inclusion_proof(0, 1, NODES) == []


@pytest.mark.parametrize(
    ("call", "kind"),
    [
        (lambda: inclusion_nodes(5, 5), "index_out_of_range"),
        (lambda: inclusion_nodes(-1, 5), "index_out_of_range"),
        (lambda: inclusion_nodes(True, 5), "index_out_of_range"),
        (lambda: inclusion_nodes(0, -1), "bad_size"),
        (lambda: inclusion_proof(0, 0, NODES), "index_out_of_range"),
        (lambda: consistency_nodes(6, 5), "first_after_second"),
        (lambda: consistency_nodes(1, -5), "bad_size"),
        (lambda: consistency_proof(3, 7, {}), "missing_node"),
        (lambda: inclusion_proof(3, 7, {n: b"x" for n in inclusion_nodes(3, 7)}), "bad_hash_length"),
    ],
)
def test_proofs_that_cannot_be_made_raise_with_a_kind(call: object, kind: str) -> None:
    with pytest.raises(ProofError) as raised:
        call()  # type: ignore[operator]
    assert raised.value.kind == kind
    assert raised.value.code == "proof_invalid"


# -- published Certificate Transparency proofs --------------------------------------------------------------------

# RFC 6962 test vectors as published by transparency-dev/merkle (testdata/inclusion/*/happy-path.json and
# testdata/consistency/*/happy-path.json), over the tree of eight entries in tests/unit/test_audit_merkle.py.
CT_ENTRIES = [bytes.fromhex(h) for h in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657"]] + [
    bytes.fromhex("606162636465666768696a6b6c6d6e6f")
]


def b64(text: str) -> bytes:
    return base64.b64decode(text)


CT_INCLUSION = [
    (
        0,
        8,
        "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
        [
            "lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
            "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
            "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ=",
        ],
    ),
    (2, 3, "rra8/idLcKFPsGel5VeCZNsPqbUa9eC6FZFY8yngbnc=", ["+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU="]),
]
CT_CONSISTENCY = [
    (
        1,
        8,
        "bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
        "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
        [
            "lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
            "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
            "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ=",
        ],
    ),
    (
        2,
        5,
        "+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU=",
        "Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=",
        ["Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=", "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms="],
    ),
    (
        6,
        7,
        "duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
        "3bib5AOAnjJXUNPSY814kpwpQreUKjS3fhIslZSnTIw=",
        [
            "DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
            "sIaT7C5yFZcTBkHoIR5+7cy0wmQTlj7ubB4u0W/7Gl8=",
            "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc=",
        ],
    ),
]


def ct_store() -> dict[tuple[int, int], bytes]:
    frontier = Frontier.empty()
    nodes: dict[tuple[int, int], bytes] = {}
    for index, entry in enumerate(CT_ENTRIES):
        nodes[(0, index)] = leaf_hash(entry)
        for level, idx, node in frontier.append_collect(leaf_hash(entry)):
            nodes[(level, idx)] = node
    return nodes


@pytest.mark.parametrize(("index", "size", "root_b64", "proof_b64"), CT_INCLUSION)
def test_published_inclusion_proofs_are_made_and_verified(
    index: int, size: int, root_b64: str, proof_b64: list[str]
) -> None:
    proof = [b64(p) for p in proof_b64]
    assert inclusion_proof(index, size, ct_store()) == proof
    verify_inclusion(leaf_hash(CT_ENTRIES[index]), index, size, proof, b64(root_b64))


@pytest.mark.parametrize(("first", "second", "root1", "root2", "proof_b64"), CT_CONSISTENCY)
def test_published_consistency_proofs_are_made_and_verified(
    first: int, second: int, root1: str, root2: str, proof_b64: list[str]
) -> None:
    proof = [b64(p) for p in proof_b64]
    assert consistency_proof(first, second, ct_store()) == proof
    verify_consistency(first, second, b64(root1), b64(root2), proof)


# -- verification against tampering -------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_flipped_bit_in_an_inclusion_proof_is_refused_as_the_oracle_refuses_it(data: st.DataObject) -> None:
    size = data.draw(st.integers(2, 300))
    index = data.draw(st.integers(0, size - 1))
    proof = inclusion_proof(index, size, NODES)
    position = data.draw(st.integers(0, len(proof) - 1))
    bit = data.draw(st.integers(0, 255))
    tampered = list(proof)
    tampered[position] = flip(proof[position], bit)
    assert oracle.root_from_path(LEAVES[index], index, size, tampered) != root(size)
    with pytest.raises(ProofError) as raised:
        verify_inclusion(LEAVES[index], index, size, tampered, root(size))
    assert raised.value.kind == "root_mismatch"


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_flipped_bit_in_a_consistency_proof_is_refused_as_the_oracle_refuses_it(data: st.DataObject) -> None:
    second = data.draw(st.integers(2, 300))
    first = data.draw(st.integers(1, second - 1))
    proof = consistency_proof(first, second, NODES)
    position = data.draw(st.integers(0, len(proof) - 1))
    tampered = list(proof)
    tampered[position] = flip(proof[position], data.draw(st.integers(0, 255)))
    assert oracle.roots_from_proof(first, second, root(first), tampered) != (root(first), root(second))
    with pytest.raises(ProofError) as raised:
        verify_consistency(first, second, root(first), root(second), tampered)
    assert raised.value.kind == "root_mismatch"


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_proof_for_other_sizes_or_positions_verifies_only_when_the_oracle_says_so(data: st.DataObject) -> None:
    # Inclusion: the proof of one (index, size) checked as another's. Consistency: likewise for (first, second).
    size = data.draw(st.integers(1, 300))
    index = data.draw(st.integers(0, size - 1))
    proof = inclusion_proof(index, size, NODES)
    other_size = data.draw(st.integers(1, 300))
    other_index = data.draw(st.integers(0, other_size - 1))
    accepted = oracle.root_from_path(LEAVES[other_index], other_index, other_size, proof) == root(other_size)
    try:
        verify_inclusion(LEAVES[other_index], other_index, other_size, proof, root(other_size))
    except ProofError as error:
        assert not accepted and error.kind in ("root_mismatch", "proof_size")
    else:
        assert accepted

    second = data.draw(st.integers(2, 300))
    first = data.draw(st.integers(1, second - 1))
    proof = consistency_proof(first, second, NODES)
    other_second = data.draw(st.integers(2, 300))
    other_first = data.draw(st.integers(1, other_second - 1))
    roots = (root(other_first), root(other_second))
    accepted = oracle.roots_from_proof(other_first, other_second, roots[0], proof) == roots
    try:
        verify_consistency(other_first, other_second, *roots, proof)
    except ProofError as error:
        assert not accepted and error.kind in ("root_mismatch", "proof_size")
    else:
        assert accepted


def flip(data: bytes, bit: int) -> bytes:
    changed = bytearray(data)
    changed[bit // 8] ^= 1 << (bit % 8)
    return bytes(changed)


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        (lambda p: p[:-1], "proof_size"),
        (lambda p: [*p, p[0]], "proof_size"),
        (lambda p: [], "proof_size"),
        (lambda p: [p[0][:31], *p[1:]], "bad_hash_length"),
        (lambda p: [*p[:-1], p[-1] + b"\x00"], "bad_hash_length"),
    ],
    ids=["missing element", "extra element", "empty", "short element", "long element"],
)
def test_proofs_of_the_wrong_shape_are_refused_with_a_kind(change: object, kind: str) -> None:
    inclusion = change(inclusion_proof(5, 13, NODES))  # type: ignore[operator]
    with pytest.raises(ProofError) as raised:
        verify_inclusion(LEAVES[5], 5, 13, inclusion, root(13))
    assert raised.value.kind == kind
    consistency = change(consistency_proof(5, 13, NODES))  # type: ignore[operator]
    with pytest.raises(ProofError) as raised:
        verify_consistency(5, 13, root(5), root(13), consistency)
    assert raised.value.kind == kind


@pytest.mark.parametrize(
    ("arguments", "kind"),
    [
        ((LEAVES[5], 13, 13), "index_out_of_range"),
        ((LEAVES[5], -1, 13), "index_out_of_range"),
        ((LEAVES[5], 5, -13), "bad_size"),
        ((LEAVES[5][:16], 5, 13), "bad_hash_length"),
        ((LEAVES[6], 5, 13), "root_mismatch"),
    ],
)
def test_inclusion_checks_its_arguments(arguments: tuple[bytes, int, int], kind: str) -> None:
    with pytest.raises(ProofError) as raised:
        verify_inclusion(*arguments, inclusion_proof(5, 13, NODES), root(13))
    assert raised.value.kind == kind


def test_inclusion_refuses_a_wrong_root() -> None:
    with pytest.raises(ProofError) as raised:
        verify_inclusion(LEAVES[5], 5, 13, inclusion_proof(5, 13, NODES), root(12))
    assert raised.value.kind == "root_mismatch"
    with pytest.raises(ProofError) as raised:
        verify_inclusion(LEAVES[5], 5, 13, inclusion_proof(5, 13, NODES), b"")
    assert raised.value.kind == "bad_hash_length"


@pytest.mark.parametrize(
    ("first", "second", "roots", "proof", "kind"),
    [
        (13, 5, (root(13), root(5)), [], "first_after_second"),
        (5, 13, (root(13), root(5)), consistency_proof(5, 13, NODES), "root_mismatch"),
        (5, 13, (root(5), root(12)), consistency_proof(5, 13, NODES), "root_mismatch"),
        (4, 13, (root(5), root(13)), consistency_proof(4, 13, NODES), "root_mismatch"),
        (10, 10, (root(10), root(9)), [], "root_mismatch"),
        (10, 10, (root(10), root(10)), [LEAVES[0]], "proof_size"),
        (0, 10, (root(1), root(10)), [], "root_mismatch"),
        (0, 10, (EMPTY_ROOT, root(10)), [LEAVES[0]], "proof_size"),
        (5, 13, (root(5)[:31], root(13)), consistency_proof(5, 13, NODES), "bad_hash_length"),
        (5, 13, (root(5), root(13) + b"!"), consistency_proof(5, 13, NODES), "bad_hash_length"),
        (-1, 13, (root(5), root(13)), [], "bad_size"),
    ],
    ids=[
        "first after second",
        "swapped roots",
        "wrong second root",
        "power of two with wrong first root",
        "equal sizes, different roots",
        "equal sizes, non-empty proof",
        "empty first tree, wrong root",
        "empty first tree, non-empty proof",
        "short first root",
        "long second root",
        "negative size",
    ],
)
def test_consistency_checks_its_arguments(
    first: int, second: int, roots: tuple[bytes, bytes], proof: list[bytes], kind: str
) -> None:
    with pytest.raises(ProofError) as raised:
        verify_consistency(first, second, *roots, proof)
    assert raised.value.kind == kind
    assert kind in str(raised.value)
