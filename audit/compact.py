"""Compact ranges: a run of leaves [begin, end) of an RFC 9162 tree as the fewest perfect subtrees that cover it.

A perfect subtree is addressed by (level, index): it covers leaves [index·2^level, (index+1)·2^level), and
its hash is the RFC 9162 §2.1.1 Merkle Tree Hash of those leaves (level 0: the leaf hashes themselves). Any
range is covered by at most two such subtrees per level — rising in size from `begin`, then falling towards
`end` — so a range of n leaves needs at most 2·log2(n) hashes, however long it is.

Two uses. The subtrees of [0, size) are the frontier (audit.merkle.Frontier), from which the root follows; the
subtrees of a range that RFC 9162's split rule makes a subtree of its own (the right-hand parts of
§2.1.3.1's PATH and §2.1.4.1's SUBPROOF, which may be imperfect) fold into that subtree's hash. And a range
export (audit.export) carries the compact ranges on either side of its entries, so that it still verifies
against the signed roots of the whole log.
"""

from __future__ import annotations

from collections.abc import Sequence
from hashlib import sha256

from audit.errors import AuditError
from audit.merkle import HASH_SIZE

Node = tuple[int, int]
"""A perfect subtree's address: (level, index at that level)."""


def range_nodes(begin: int, end: int) -> list[Node]:
    """The perfect subtrees covering leaves [begin, end), left to right (at most two per level)."""
    for name, value in (("begin", begin), ("end", end)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise AuditError(f"{name} must be a non-negative integer")
    if begin > end:
        raise AuditError("a range cannot begin after its end")
    left: list[Node] = []
    right: list[Node] = []
    level = 0
    # Climb a level at a time, with begin and end in units of 2^level: an odd begin is a subtree with no
    # partner on its left inside the range, an odd end one with none on its right.
    while begin < end:
        if begin & 1:
            left.append((level, begin))
            begin += 1
        if end & 1 and begin < end:
            end -= 1
            right.append((level, end))
        begin >>= 1
        end >>= 1
        level += 1
    right.reverse()
    return left + right


def subtree_hash(hashes: Sequence[bytes]) -> bytes:
    """The Merkle Tree Hash of a range that RFC 9162 treats as one subtree (one whose start is a multiple of
    the power of two at or above its length), from the hashes of its perfect subtrees, left to right.

    RFC 9162 §2.1.1 splits n leaves into the largest perfect subtree of fewer than n leaves and the rest, so
    such a range's hash is its perfect subtrees folded from the right.
    """
    if not hashes:
        raise AuditError("a subtree covers at least one leaf")
    if any(len(h) != HASH_SIZE for h in hashes):
        raise AuditError(f"subtree hashes must be {HASH_SIZE} bytes")
    root = hashes[-1]
    for left in reversed(hashes[:-1]):
        root = sha256(b"\x01" + left + root).digest()
    return root


def range_hashes(leaf_hashes: Sequence[bytes], begin: int) -> list[tuple[int, bytes]]:
    """The compact range of consecutive leaves starting at leaf `begin`, as (level, hash) left to right:
    the subtrees of `range_nodes(begin, begin + len(leaf_hashes))` with their hashes computed.

    Hashes level by level, a whole level in one comprehension: the offline verifier hashes every leaf of an
    export through here, and a comprehension costs far less per node than a loop with a stack. The leaf hashes
    are not checked for length; callers pass hashes they computed themselves.
    """
    left: list[tuple[int, bytes]] = []
    right: list[tuple[int, bytes]] = []
    level = 0
    current = list(leaf_hashes)
    end = begin + len(current)
    hash_ = sha256
    while current:
        if begin & 1:
            left.append((level, current[0]))
            del current[0]
            begin += 1
        if end & 1 and current:
            right.append((level, current.pop()))
            end -= 1
        # What is left starts and ends on an even position at this level: it pairs off completely.
        current = [hash_(b"\x01" + a + b).digest() for a, b in zip(current[::2], current[1::2], strict=True)]
        begin >>= 1
        end >>= 1
        level += 1
    right.reverse()
    return left + right


class CompactRange:
    """A growing compact range [begin, end): leaves and perfect subtrees are appended at `end`, and neighbours
    that together form a perfect subtree merge, so it always holds the fewest subtrees (`range_nodes`)."""

    __slots__ = ("_nodes", "begin", "end")

    def __init__(self, begin: int) -> None:
        if isinstance(begin, bool) or not isinstance(begin, int) or begin < 0:
            raise AuditError("begin must be a non-negative integer")
        self.begin = begin
        self.end = begin
        self._nodes: list[tuple[int, bytes]] = []

    @property
    def nodes(self) -> list[tuple[int, bytes]]:
        """The range's perfect subtrees, left to right, as (level, hash)."""
        return list(self._nodes)

    def append_subtree(self, level: int, subtree_hash: bytes) -> None:
        """Append the perfect subtree of 2^level leaves that starts at `end` (which must be a multiple of
        2^level)."""
        start = self.end
        if start & ((1 << level) - 1):
            raise AuditError(f"a subtree of 2^{level} leaves cannot start at leaf {start}")
        self.end = start + (1 << level)
        nodes = self._nodes
        # The last subtree is the new one's left sibling when it has the same level and the pair starts on a
        # multiple of twice its size (bit `level` of the new one's start is set); it cannot lie before `begin`,
        # since only subtrees of this range are held.
        while nodes and nodes[-1][0] == level and (start >> level) & 1:
            subtree_hash = sha256(b"\x01" + nodes.pop()[1] + subtree_hash).digest()
            start -= 1 << level
            level += 1
        nodes.append((level, subtree_hash))

    def extend(self, leaf_hashes: Sequence[bytes]) -> None:
        """Append consecutive leaves (their leaf hashes)."""
        for level, node in range_hashes(leaf_hashes, self.end):
            self.append_subtree(level, node)
