"""RFC 9162 §2.1 written down as the RFC states it: an independent oracle for audit/merkle.py and audit/proofs.py.

Recursive, over the entries themselves (not stored hashes), slow and obvious: MTH (§2.1.1), PATH (§2.1.3.1),
PROOF and SUBPROOF (§2.1.4.1). Nothing here is shared with the audit package, so that a disagreement points at
one of the two. Also two verifiers that invert those definitions recursively (rebuild the root or roots a proof
leads to, following the same splits), independent of the iterative algorithms of §2.1.3.2 and §2.1.4.2 that
audit/proofs.py implements.
"""

from __future__ import annotations

import hashlib


def _hash(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _k(n: int) -> int:
    """§2.1.1: the largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(entries: list[bytes]) -> bytes:
    """MTH(D[n]): HASH() for no entries, HASH(0x00 || d(0)) for one, else HASH(0x01 || MTH(D[0:k]) ||
    MTH(D[k:n]))."""
    n = len(entries)
    if n == 0:
        return _hash(b"")
    if n == 1:
        return _hash(b"\x00" + entries[0])
    k = _k(n)
    return _hash(b"\x01" + mth(entries[:k]) + mth(entries[k:]))


def path(m: int, entries: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) of §2.1.3.1."""
    n = len(entries)
    assert 0 <= m < n
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return [*path(m, entries[:k]), mth(entries[k:])]
    return [*path(m - k, entries[k:]), mth(entries[:k])]


def proof(m: int, entries: list[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) = SUBPROOF(m, D[n], true) of §2.1.4.1, for 0 < m <= n."""
    assert 0 < m <= len(entries)
    return subproof(m, entries, True)


def subproof(m: int, entries: list[bytes], b: bool) -> list[bytes]:
    n = len(entries)
    if m == n:
        return [] if b else [mth(entries)]
    k = _k(n)
    if m <= k:
        return [*subproof(m, entries[:k], b), mth(entries[k:])]
    return [*subproof(m - k, entries[k:], False), mth(entries[:k])]


def root_from_path(leaf: bytes, m: int, n: int, elements: list[bytes]) -> bytes | None:
    """The root that PATH(m, D[n]) = `elements` and leaf hash `leaf` lead to, or None when the number of
    elements cannot be PATH(m, D[n])'s. Each step undoes one line of PATH's definition, from its last
    element (the sibling nearest the root)."""
    if not 0 <= m < n:
        return None
    if n == 1:
        return leaf if not elements else None
    if not elements:
        return None
    k = _k(n)
    *rest, sibling = elements
    if m < k:
        left = root_from_path(leaf, m, k, rest)
        return None if left is None else _hash(b"\x01" + left + sibling)
    right = root_from_path(leaf, m - k, n - k, rest)
    return None if right is None else _hash(b"\x01" + sibling + right)


def roots_from_proof(m: int, n: int, first_root: bytes, elements: list[bytes]) -> tuple[bytes, bytes] | None:
    """The (first, second) roots that PROOF(m, D[n]) = `elements` leads to, taking MTH(D[0:m]) = `first_root`
    where SUBPROOF leaves it out; None when the number of elements does not fit. For 0 < m <= n."""
    if not 0 < m <= n:
        return None
    return _roots(m, n, True, first_root, elements)


def _roots(m: int, n: int, b: bool, first_root: bytes, elements: list[bytes]) -> tuple[bytes, bytes] | None:
    if m == n:
        if b:
            return (first_root, first_root) if not elements else None
        return (elements[0], elements[0]) if len(elements) == 1 else None
    if not elements:
        return None
    k = _k(n)
    *rest, sibling = elements
    if m <= k:
        inner = _roots(m, k, b, first_root, rest)
        return None if inner is None else (inner[0], _hash(b"\x01" + inner[1] + sibling))
    inner = _roots(m - k, n - k, False, first_root, rest)
    if inner is None:
        return None
    return _hash(b"\x01" + sibling + inner[0]), _hash(b"\x01" + sibling + inner[1])
