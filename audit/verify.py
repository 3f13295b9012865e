"""Verify a stored log from its rows, streaming, and stop at the first problem.

What each check catches: a missing or repeated row (`index_gap`), bytes that are not the canonical entry
(`entry_unparsable`), rows put in another order (`index_mismatch`, the index inside the entry), an edited
entry whose stored hash was left alone (`leaf_hash_mismatch`), a cut-off tail (`size_mismatch`, needs the size
from a checkpoint), and anything rewritten consistently, hashes included (`root_mismatch`, needs the root from
a signed checkpoint). Without an expected size and root, only the first four can be detected.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

from audit.canonical import canonical_json
from audit.errors import AuditVerificationError, CanonicalisationError
from audit.merkle import Frontier


@dataclass(frozen=True, slots=True)
class VerifyResult:
    size: int
    root: bytes


def verify_log(
    rows: Iterable[tuple[int, bytes, bytes]],
    expected_size: int | None = None,
    expected_root: bytes | None = None,
) -> VerifyResult:
    """Check rows of (stored index, stored canonical entry bytes, stored leaf hash), in ascending stored-index
    order, and return the size and RFC 9162 root of the log they form.

    Raises AuditVerificationError at the first problem; its `index` is the number of rows that passed.
    """
    if expected_size is not None and expected_size < 0:
        raise ValueError("expected_size must be non-negative")
    frontier = Frontier.empty()
    position = 0
    for stored_index, data, stored_leaf in rows:
        if position == expected_size:
            raise AuditVerificationError(
                position, "size_mismatch", f"the log has more entries than the expected {expected_size}"
            )
        if stored_index != position:
            raise AuditVerificationError(
                position, "index_gap", f"expected stored index {position}, found {stored_index}"
            )
        entry = _parse_canonical(position, data)
        inner = entry.get("index")
        if isinstance(inner, bool) or inner != position:
            raise AuditVerificationError(
                position, "index_mismatch", "the entry's own index differs from its position in the log"
            )
        # RFC 9162 §2.1.1 leaf hash, inlined: this loop is the verifier's hot path.
        leaf = sha256(b"\x00" + data).digest()
        if leaf != stored_leaf:
            raise AuditVerificationError(
                position, "leaf_hash_mismatch", "the stored leaf hash is not the hash of the stored entry"
            )
        frontier.append(leaf)
        position += 1
    if expected_size is not None and position != expected_size:
        raise AuditVerificationError(
            position, "size_mismatch", f"the log has {position} entries, expected {expected_size}"
        )
    root = frontier.root()
    # compare_digest for habit's sake (STYLE.md): the root is public, but the call costs nothing here.
    if expected_root is not None and not hmac.compare_digest(root, expected_root):
        raise AuditVerificationError(position, "root_mismatch", "the entries do not hash to the expected root")
    return VerifyResult(position, root)


def _parse_canonical(position: int, data: bytes) -> dict[str, Any]:
    # Re-canonicalising must give the very bytes stored: that rejects whitespace, member order, escapes,
    # duplicate names, floats and any other second spelling of the same entry (RFC 8785 §3.2).
    try:
        entry = json.loads(data)
        canonical = canonical_json(entry)
    except (ValueError, RecursionError, CanonicalisationError):
        entry, canonical = None, b""
    if not isinstance(entry, dict) or canonical != data:
        raise AuditVerificationError(
            position, "entry_unparsable", "the stored bytes are not a canonical JSON object (RFC 8785)"
        )
    return entry
