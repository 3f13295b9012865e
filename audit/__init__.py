"""The tamper-evident audit log (DESIGN.md invariant 8): canonical entries (RFC 8785) hashed into an RFC 9162
Merkle tree, and the verifier. Standard library only, so that it runs without the application."""

from audit.canonical import canonical_json
from audit.entry import (
    ENTRY_VERSION,
    EVENT_TYPES,
    build_entry,
    commit_actor,
    encode_entry,
    entry_bytes,
    new_actor_salt,
    verify_actor_commitment,
)
from audit.errors import AuditError, AuditVerificationError, CanonicalisationError, VerificationFailure
from audit.merkle import EMPTY_ROOT, HASH_SIZE, Frontier, leaf_hash, node_hash, root_hash
from audit.verify import VerifyResult, verify_log

__all__ = [
    "EMPTY_ROOT",
    "ENTRY_VERSION",
    "EVENT_TYPES",
    "HASH_SIZE",
    "AuditError",
    "AuditVerificationError",
    "CanonicalisationError",
    "Frontier",
    "VerificationFailure",
    "VerifyResult",
    "build_entry",
    "canonical_json",
    "commit_actor",
    "encode_entry",
    "entry_bytes",
    "leaf_hash",
    "new_actor_salt",
    "node_hash",
    "root_hash",
    "verify_actor_commitment",
    "verify_log",
]
