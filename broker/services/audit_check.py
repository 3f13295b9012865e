"""`broker audit verify`: recompute every leaf and the tree root from the database and compare them with the
log head. Names the first bad index and the kind of failure."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import select

from audit import VerifyResult, verify_log
from broker.adapters.database import Database
from broker.adapters.orm import AuditEntryRow, AuditHeadRow
from broker.config import Settings
from broker.services.audit_log import HEAD_ID


def verify_database_log(settings: Settings) -> VerifyResult:
    db = Database(settings.database_url)
    try:
        return verify_log_in(db)
    finally:
        db.dispose()


def verify_log_in(db: Database) -> VerifyResult:
    with db.sessions() as session:
        head = session.get(AuditHeadRow, HEAD_ID)

        def rows() -> Iterator[tuple[int, bytes, bytes]]:
            result = session.execute(
                select(AuditEntryRow.idx, AuditEntryRow.entry, AuditEntryRow.leaf_hash)
                .order_by(AuditEntryRow.idx)
                .execution_options(yield_per=5000)
            )
            for idx, entry, leaf in result:
                yield idx, bytes(entry), bytes(leaf)

        return verify_log(
            rows(), expected_size=head.size if head else 0, expected_root=bytes(head.root) if head else None
        )
