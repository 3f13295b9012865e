"""RFC 9162 §2.1.1 Merkle Tree Hash (the Certificate Transparency v2 tree) with SHA-256.

Leaves and interior nodes hash under different one-byte prefixes (0x00, 0x01) so that no leaf can be passed
off as an interior node (second-preimage resistance, RFC 9162 §2.1.1).
"""

from __future__ import annotations

from collections.abc import Sequence
from hashlib import sha256

from audit.errors import AuditError

HASH_SIZE = 32
EMPTY_ROOT = sha256(b"").digest()  # RFC 9162 §2.1.1: MTH({}) = HASH().


def leaf_hash(data: bytes) -> bytes:
    """MTH({d(0)}) = HASH(0x00 || d(0))."""
    return sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """HASH(0x01 || MTH(left) || MTH(right))."""
    return sha256(b"\x01" + left + right).digest()


def root_hash(leaf_hashes: Sequence[bytes]) -> bytes:
    """The Merkle Tree Hash of a list of leaf hashes.

    RFC 9162 states MTH recursively, splitting n leaves at the largest power of two k < n. Pairing neighbours
    level by level and carrying an odd last node up unchanged builds that same left-balanced tree: the first
    k leaves form a perfect subtree that pairs off completely, and the carried node is always the root of the
    smaller subtree at the right edge. Iterating avoids deep recursion and needs n - 1 node hashes.
    """
    level = list(leaf_hashes)
    if any(len(h) != HASH_SIZE for h in level):
        raise AuditError(f"leaf hashes must be {HASH_SIZE} bytes")
    if not level:
        return EMPTY_ROOT
    while len(level) > 1:
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


class Frontier:
    """The right edge of a growing tree: enough to append leaves and compute the root in O(log n) space.

    A tree of `size` leaves is the concatenation of perfect subtrees, one for each 1-bit of `size`, largest
    first. The frontier keeps just their roots (popcount(size) ≤ ⌊log2 size⌋ + 1 hashes), which is what a
    single sequencer has to remember between batches and can store in one database row.

    `append` changes the frontier in place and returns None: an appender owns exactly one frontier, and not
    copying it per leaf keeps verification fast. Use `Frontier.from_bytes(f.size, f.to_bytes())` to copy.
    """

    __slots__ = ("_nodes", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._nodes: list[bytes] = []

    @classmethod
    def empty(cls) -> Frontier:
        return cls()

    @property
    def size(self) -> int:
        return self._size

    def append(self, leaf_hash: bytes) -> None:
        """Add the next leaf (its RFC 9162 leaf hash, not the entry bytes)."""
        if len(leaf_hash) != HASH_SIZE:
            raise AuditError(f"leaf hashes must be {HASH_SIZE} bytes")
        # Each trailing 1-bit of the old size is a perfect subtree as large as the one being carried up, so
        # the new leaf merges with them in turn, smallest first (binary increment).
        nodes, carry, size = self._nodes, leaf_hash, self._size
        while size & 1:
            carry = sha256(b"\x01" + nodes.pop() + carry).digest()
            size >>= 1
        nodes.append(carry)
        self._size += 1

    def append_collect(self, leaf_hash: bytes) -> list[tuple[int, int, bytes]]:
        """`append`, also returning the perfect subtrees this leaf completes at levels ≥ 1, smallest first, as
        (level, index at that level, hash). A subtree at `level` with index `i` covers leaves
        [i·2^level, (i+1)·2^level). The sequencer stores them (leaf hashes are level 0) so that any inclusion or
        consistency proof is a handful of reads (audit.proofs); this is the same loop as `append`, kept separate
        so that `append`, the verifier's hot path, pays nothing for the list."""
        if len(leaf_hash) != HASH_SIZE:
            raise AuditError(f"leaf hashes must be {HASH_SIZE} bytes")
        nodes, carry, size = self._nodes, leaf_hash, self._size
        completed: list[tuple[int, int, bytes]] = []
        level = 0
        while size & 1:
            carry = sha256(b"\x01" + nodes.pop() + carry).digest()
            size >>= 1
            level += 1
            # The subtree just completed ends at the new size, so it starts at new size - 2^level, and its index
            # at its level is that start shifted down: the old size shifted down, since its low bits were ones.
            completed.append((level, size, carry))
        nodes.append(carry)
        self._size += 1
        return completed

    def append_subtree(self, level: int, subtree_hash: bytes) -> None:
        """Append a whole perfect subtree of 2^level leaves at once, given its hash: the next piece of a compact
        range (audit.compact). The size must be a multiple of 2^level, where such a subtree can start."""
        if len(subtree_hash) != HASH_SIZE:
            raise AuditError(f"subtree hashes must be {HASH_SIZE} bytes")
        if isinstance(level, bool) or not isinstance(level, int) or level < 0:
            raise AuditError("a subtree level must be a non-negative integer")
        if self._size & ((1 << level) - 1):
            raise AuditError(f"a subtree of 2^{level} leaves cannot start at leaf {self._size}")
        # Binary addition of 2^level to the size: the frontier's subtrees at the levels of the carried bits merge
        # with the one being carried, smallest first, as in `append`.
        nodes, carry, size = self._nodes, subtree_hash, self._size >> level
        while size & 1:
            carry = sha256(b"\x01" + nodes.pop() + carry).digest()
            size >>= 1
        nodes.append(carry)
        self._size += 1 << level

    def subtrees(self) -> list[tuple[int, int, bytes]]:
        """The frontier's perfect subtrees, largest (leftmost) first, as (level, index at that level, hash): the
        compact range of leaves [0, size)."""
        result: list[tuple[int, int, bytes]] = []
        start = 0
        levels = [level for level in range(self._size.bit_length() - 1, -1, -1) if (self._size >> level) & 1]
        for level, node in zip(levels, self._nodes, strict=True):
            result.append((level, start >> level, node))
            start += 1 << level
        return result

    def root(self) -> bytes:
        """MTH of all leaves appended so far: the subtree roots folded from the right (RFC 9162 §2.1.1, where
        the left part of each split is the largest perfect subtree)."""
        if not self._nodes:
            return EMPTY_ROOT
        root = self._nodes[-1]
        for left in reversed(self._nodes[:-1]):
            root = node_hash(left, root)
        return root

    def to_bytes(self) -> bytes:
        """The subtree roots, largest first, concatenated. The size is stored beside them, not inside."""
        return b"".join(self._nodes)

    @classmethod
    def from_bytes(cls, size: int, data: bytes) -> Frontier:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise AuditError("frontier size must be a non-negative integer")
        count = size.bit_count()
        if len(data) != count * HASH_SIZE:
            raise AuditError(f"a frontier of size {size} holds {count} hashes ({count * HASH_SIZE} bytes)")
        frontier = cls()
        frontier._size = size
        frontier._nodes = [bytes(data[i : i + HASH_SIZE]) for i in range(0, len(data), HASH_SIZE)]
        return frontier

    def __repr__(self) -> str:
        return f"Frontier(size={self._size}, root={self.root().hex()})"
