"""The audit package's errors: one root, a stable snake_case `code` on each (STYLE.md), and messages that
never quote entry content, since a tampered or malformed entry could hold anything, an identity code included
(DESIGN.md invariant 6)."""

from __future__ import annotations

from typing import ClassVar, Literal

VerificationFailure = Literal[
    # a stored log (verify_log)
    "index_gap",
    "entry_unparsable",
    "index_mismatch",
    "leaf_hash_mismatch",
    "size_mismatch",
    "root_mismatch",
    # an export (audit.export)
    "no_checkpoint",
    "checkpoint_name",
    "signature",
    "checkpoint_malformed",
    "origin_mismatch",
    "verifier_key",
    "range_invalid",
    "checkpoint_outside_range",
    "missing_newline",
    "unverified_entries",
    # the broker's database beside the log (broker/services/audit_check.py)
    "checkpoint_mismatch",
    "fork",
    "column_mismatch",
    "actor_mismatch",
    "head_mismatch",
    "node_mismatch",
    "node_missing",
    "unreadable_row",
    "entry_unqueued",
]


class AuditError(Exception):
    code: ClassVar[str] = "audit_error"


class CanonicalisationError(AuditError):
    """The value cannot be written as RFC 8785 canonical JSON within the I-JSON subset (RFC 7493)."""

    code = "canonicalisation_error"


class AuditVerificationError(AuditError):
    """The log failed verification.

    `index` is the number of leading entries that passed every check: the position of the first offending
    row, or for `size_mismatch` and `root_mismatch` (which concern the whole log) the number of rows counted
    when the check failed. `kind` says which check failed.
    """

    code = "audit_verification_failed"

    def __init__(self, index: int, kind: VerificationFailure, message: str) -> None:
        super().__init__(f"entry {index}: {kind}: {message}")
        self.index = index
        self.kind: VerificationFailure = kind
        self.message = message
