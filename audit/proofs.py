"""RFC 9162 §2.1.3 inclusion proofs and §2.1.4 consistency proofs: generation from stored subtree hashes, and
verification exactly as §2.1.3.2 and §2.1.4.2 state it.

Generation works from a store of perfect subtrees addressed by (level, index), level 0 being the leaf hashes
(what `Frontier.append_collect` hands the sequencer). Every element of a proof is the hash of a range of leaves
that RFC 9162's split rule makes a subtree; all of them are perfect except possibly one on the right edge of
the tree, which is folded from its own perfect subtrees (audit.compact). So a caller asks `inclusion_nodes` or
`consistency_nodes` which subtrees it needs, fetches them in one batch, and `inclusion_proof` or
`consistency_proof` assembles the proof. Either needs at most 2·⌈log2 n⌉ stored hashes for a tree of n
leaves (tested up to n = 1,100): a proof has at most ⌈log2 n⌉ + 1 elements, and only the one imperfect
element is read in parts. O(log n) reads, never the n of computing elements from their leaves.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from hashlib import sha256
from typing import ClassVar, Literal

from audit.compact import Node, range_nodes, subtree_hash
from audit.errors import AuditError
from audit.merkle import EMPTY_ROOT, HASH_SIZE

ProofFailure = Literal[
    "bad_size",
    "index_out_of_range",
    "first_after_second",
    "bad_hash_length",
    "proof_size",
    "root_mismatch",
    "missing_node",
]


class ProofError(AuditError):
    """A proof cannot be made or does not verify. `kind` says which check failed."""

    code: ClassVar[str] = "proof_invalid"

    def __init__(self, kind: ProofFailure, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind: ProofFailure = kind
        self.message = message


def _check_size(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProofError("bad_size", f"{name} must be a non-negative integer")


def _check_index(index: int, size: int) -> None:
    _check_size("size", size)
    if isinstance(index, bool) or not isinstance(index, int):
        raise ProofError("index_out_of_range", "the leaf index must be an integer")
    if not 0 <= index < size:
        raise ProofError("index_out_of_range", f"leaf {index} is not in a tree of {size} leaves")


def _check_first_second(first: int, second: int) -> None:
    _check_size("first", first)
    _check_size("second", second)
    if first > second:
        raise ProofError("first_after_second", f"the first tree ({first}) is larger than the second ({second})")


def _check_hash(what: str, value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise ProofError("bad_hash_length", f"{what} must be {HASH_SIZE} bytes")


def _largest_power_of_two_below(n: int) -> int:
    """k of RFC 9162 §2.1.1: the largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def _inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes form PATH(index, D[size]) (RFC 9162 §2.1.3.1), in proof order.

    PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n]) for m < k, and PATH(m - k, D[k:n]) : MTH(D[0:k]) otherwise;
    walking down from the root collects the siblings top first, and the proof lists them bottom first.
    """
    ranges: list[tuple[int, int]] = []
    begin, end = 0, size
    while end - begin > 1:
        k = _largest_power_of_two_below(end - begin)
        if index < begin + k:
            ranges.append((begin + k, end))
            end = begin + k
        else:
            ranges.append((begin, begin + k))
            begin += k
    ranges.reverse()
    return ranges


def _consistency_ranges(first: int, second: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes form PROOF(first, D[second]) = SUBPROOF(first, D[second], true)
    (RFC 9162 §2.1.4.1), in proof order. Empty when first is 0 or equals second.

    SUBPROOF(m, D[m], true) = {}; SUBPROOF(m, D[m], false) = {MTH(D[m])}; for m < n, with k the largest power
    of two below n: SUBPROOF(m, D[0:k], b) : MTH(D[k:n]) if m <= k, else SUBPROOF(m - k, D[k:n], false) :
    MTH(D[0:k]).
    """
    if first == 0:
        return []
    ranges: list[tuple[int, int]] = []
    begin, end, m, whole = 0, second, first, True
    while True:
        if m == end - begin:
            if not whole:
                ranges.append((begin, end))
            break
        k = _largest_power_of_two_below(end - begin)
        if m <= k:
            ranges.append((begin + k, end))
            end = begin + k
        else:
            ranges.append((begin, begin + k))
            begin += k
            m -= k
            whole = False
    ranges.reverse()
    return ranges


def _nodes_of(ranges: list[tuple[int, int]]) -> list[Node]:
    return [node for begin, end in ranges for node in range_nodes(begin, end)]


def _assemble(ranges: list[tuple[int, int]], nodes: Mapping[Node, bytes]) -> list[bytes]:
    proof: list[bytes] = []
    for begin, end in ranges:
        hashes: list[bytes] = []
        for node in range_nodes(begin, end):
            found = nodes.get(node)
            if found is None:
                raise ProofError("missing_node", f"the subtree at level {node[0]}, index {node[1]} was not given")
            _check_hash(f"the subtree at level {node[0]}, index {node[1]}", found)
            hashes.append(found)
        proof.append(subtree_hash(hashes))
    return proof


def inclusion_nodes(index: int, size: int) -> list[Node]:
    """The stored perfect subtrees, as (level, index), that `inclusion_proof(index, size, …)` reads."""
    _check_index(index, size)
    return _nodes_of(_inclusion_ranges(index, size))


def consistency_nodes(first: int, second: int) -> list[Node]:
    """The stored perfect subtrees, as (level, index), that `consistency_proof(first, second, …)` reads."""
    _check_first_second(first, second)
    return _nodes_of(_consistency_ranges(first, second))


def inclusion_proof(index: int, size: int, nodes: Mapping[Node, bytes]) -> list[bytes]:
    """The RFC 9162 §2.1.3.1 inclusion proof of leaf `index` in the tree of `size` leaves, from a mapping that
    holds at least the subtrees `inclusion_nodes(index, size)` names."""
    _check_index(index, size)
    return _assemble(_inclusion_ranges(index, size), nodes)


def consistency_proof(first: int, second: int, nodes: Mapping[Node, bytes]) -> list[bytes]:
    """The RFC 9162 §2.1.4.1 consistency proof from the tree of `first` leaves to the tree of `second`, from a
    mapping that holds at least the subtrees `consistency_nodes(first, second)` names. Empty when first is 0
    or equals second."""
    _check_first_second(first, second)
    return _assemble(_consistency_ranges(first, second), nodes)


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Return if `proof` shows the leaf with hash `leaf_hash` at position `index` of the tree of `size` leaves
    whose root is `root`; raise ProofError otherwise. The algorithm of RFC 9162 §2.1.3.2, step by step."""
    # 1. leaf_index >= tree_size fails.
    _check_index(index, size)
    _check_hash("the leaf hash", leaf_hash)
    _check_hash("the root", root)
    for position, element in enumerate(proof):
        _check_hash(f"proof element {position}", element)
    # 2.-3.
    fn, sn = index, size - 1
    r = leaf_hash
    # 4.
    for p in proof:
        # a. A path longer than the tree is deep fails.
        if sn == 0:
            raise ProofError("proof_size", "the proof has more elements than the tree has levels for this leaf")
        # b.
        if fn & 1 or fn == sn:
            r = sha256(b"\x01" + p + r).digest()
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = sha256(b"\x01" + r + p).digest()
        # c.
        fn >>= 1
        sn >>= 1
    # 5.
    if sn != 0:
        raise ProofError("proof_size", "the proof has fewer elements than this leaf's path to the root")
    if not hmac.compare_digest(r, root):
        raise ProofError("root_mismatch", "the leaf and the proof do not hash to the given root")


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]) -> None:
    """Return if `proof` shows the tree of `first` leaves with root `first_root` to be a prefix of the tree of
    `second` leaves with root `second_root`; raise ProofError otherwise. The algorithm of RFC 9162 §2.1.4.2,
    step by step, for 0 < first < second.

    The two sizes the algorithm leaves out are settled by §2.1.4.1's definitions: for first == second the
    proof is SUBPROOF(m, D[m], true) = {}, and the roots must be equal; an empty first tree (root HASH() of
    §2.1.1) is a prefix of every tree, with an empty proof.
    """
    _check_first_second(first, second)
    _check_hash("the first root", first_root)
    _check_hash("the second root", second_root)
    for position, element in enumerate(proof):
        _check_hash(f"proof element {position}", element)
    if first == 0 or first == second:
        if proof:
            raise ProofError("proof_size", "a proof from an empty or an equal tree must be empty")
        expected = EMPTY_ROOT if first == 0 else second_root
        if not hmac.compare_digest(first_root, expected):
            raise ProofError("root_mismatch", "the first root is not the root of the first tree")
        return
    # 1. An empty path fails.
    if not proof:
        raise ProofError("proof_size", "the consistency proof is empty")
    path = list(proof)
    # 2. If first is an exact power of 2, the first root is the proof's implicit first element.
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    # 3.
    fn, sn = first - 1, second - 1
    # 4.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5.
    fr = sr = path[0]
    # 6.
    for c in path[1:]:
        # a.
        if sn == 0:
            raise ProofError("proof_size", "the proof has more elements than the trees need")
        # b.
        if fn & 1 or fn == sn:
            fr = sha256(b"\x01" + c + fr).digest()
            sr = sha256(b"\x01" + c + sr).digest()
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = sha256(b"\x01" + sr + c).digest()
        # c.
        fn >>= 1
        sn >>= 1
    # 7.
    if sn != 0:
        raise ProofError("proof_size", "the proof has fewer elements than the trees need")
    if not hmac.compare_digest(fr, first_root):
        raise ProofError("root_mismatch", "the proof does not hash to the first root")
    if not hmac.compare_digest(sr, second_root):
        raise ProofError("root_mismatch", "the proof does not hash to the second root")
