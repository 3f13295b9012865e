"""`broker audit verify`: the whole log in the database, checked against its signed checkpoints and against the
newest checkpoint exported to the sink outside the database.

What is checked, and what each check catches:
- every sequenced entry, in index order: no gap or repeat, canonical bytes, its own index, its stored leaf hash
  (audit.verify_log's checks: edited, deleted, reordered or forged rows). The bytes checked are the final ones,
  derived from the stored pending bytes, the stored offset and the index (`audit.place_index`), so an edit of
  any of the three changes them, and an offset that cannot be right is named (`entry_unparsable`);
- every appended entry either has its place in the tree or is queued for it (`entry_unqueued`: an entry taken
  off the queue without a place would never be sequenced);
- the plain columns kept beside each entry for searching (time, event, person, organisation, category, purpose,
  effect, basis kind) say what the entry says, and the actor opening kept for the DPO opens the entry's actor
  commitment — so that a search cannot be misled by a row edited outside the leaf;
- the stored subtree hashes that proofs are built from, recomputed (a forged node would make proofs fail for
  their readers; here it is named);
- every checkpoint stored in the database: signed by one of the instance's checkpoint keys, for this log, and
  the tree root at its size is the root it signs (anything rewritten consistently by someone without the key);
- the sink's newest checkpoint: the database's tree must reach its size and have its root there (a database
  restored from an older copy, truncated or rolled back).

The first failure raises AuditVerificationError with the first bad index and the kind of failure.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from audit import AuditVerificationError, Frontier, place_index, verify_actor_commitment, verify_log
from audit.errors import AuditError
from audit.note import Checkpoint, Verifier, open_note, parse_checkpoint
from broker.adapters.orm import (
    AuditActorRow,
    AuditCheckpointRow,
    AuditEntryRow,
    AuditLeafRow,
    AuditNodeRow,
    AuditPendingRow,
)
from broker.domain.clock import utc
from broker.services import Broker
from broker.services.sequencer import Sequencer, origin_of, read_head, verifiers


@dataclass(frozen=True, slots=True)
class LogCheck:
    size: int
    root: bytes
    checkpoints: int  # signed checkpoints in the database, each verified
    exported_size: int | None  # the sink's newest checkpoint, verified against the database (None: sink empty)
    pending: int  # entries appended but not yet sequenced (not yet part of the tree)


def verify_broker_log(broker: Broker, *, check_sink: bool = True) -> LogCheck:
    try:
        return _verify(broker, check_sink)
    except (ValueError, TypeError) as error:  # a column edited into something the database cannot decode
        raise AuditVerificationError(0, "unreadable_row", f"a log row cannot be read: {error}") from None


def _verify(broker: Broker, check_sink: bool) -> LogCheck:
    origin = origin_of(broker)
    keys = verifiers(broker)
    # The sink is read before the database, and the database in one snapshot, because the log may be live: the
    # sequencer commits each checkpoint before it exports it, so what the sink holds now is in every later snapshot.
    # Read the other way round, a checkpoint committed and exported while the entries are being checked would look
    # like a rolled-back database, and on PostgreSQL (READ COMMITTED: each statement sees the newest commits) the
    # head, the checkpoints, the entries and the subtree hashes would be read at different sizes of the tree.
    exported_note = Sequencer(broker).sink.latest() if check_sink else None
    with broker.uow(write=False) as uow:
        session = uow.session
        if uow.postgres:
            session.connection(execution_options={"isolation_level": "REPEATABLE READ", "postgresql_readonly": True})
        head = read_head(uow)
        signed: dict[int, bytes] = {}
        count = 0
        for size, root, note in session.execute(
            select(AuditCheckpointRow.size, AuditCheckpointRow.root, AuditCheckpointRow.note).order_by(
                AuditCheckpointRow.id
            )
        ):
            checkpoint = _open(note, keys, origin, size)
            if checkpoint.root != bytes(root):
                raise AuditVerificationError(size, "checkpoint_mismatch", "a stored checkpoint's root column differs")
            if signed.setdefault(size, checkpoint.root) != checkpoint.root:
                raise AuditVerificationError(size, "fork", f"two different checkpoints of tree size {size} are signed")
            count += 1
        exported: int | None = None
        if exported_note is not None:
            checkpoint = _open(exported_note, keys, origin, None)
            exported = checkpoint.size
            if signed.setdefault(checkpoint.size, checkpoint.root) != checkpoint.root:
                raise AuditVerificationError(
                    checkpoint.size, "fork", "the exported checkpoint differs from the one in the database"
                )

        size = head.size if head else 0
        beyond = [s for s in signed if s > size]
        if beyond:
            raise AuditVerificationError(
                size,
                "size_mismatch",
                f"a checkpoint of {max(beyond)} entries is signed but the database's log has {size}: "
                "the database was rolled back or truncated",
            )

        frontier = Frontier.empty()
        expected_nodes: list[tuple[int, int, bytes]] = []

        # A leaf whose entry is gone drops out of the inner join: the index gap that leaves is named.
        result = session.execute(
            select(AuditLeafRow.idx, AuditLeafRow.leaf_hash, AuditEntryRow, AuditActorRow.actor_id, AuditActorRow.salt)
            .join(AuditEntryRow, AuditEntryRow.id == AuditLeafRow.entry_id)
            .outerjoin(AuditActorRow, AuditActorRow.entry_id == AuditEntryRow.id)
            .order_by(AuditLeafRow.idx)
            .execution_options(yield_per=5000)
        )

        def rows() -> Iterator[tuple[int, bytes, bytes]]:
            for idx, stored_leaf, row, actor_id, salt in result:
                try:
                    entry = place_index(bytes(row.entry), row.split, idx)
                except AuditError:  # an offset that cannot be right: no canonical entry (`entry_unparsable`)
                    entry = b""
                leaf = bytes(stored_leaf) if stored_leaf is not None else b""
                yield idx, entry, leaf
                # verify_log has checked this row (canonical, its index, its leaf) before asking for the next.
                _check_columns(idx, row, json.loads(entry), actor_id, salt)
                if len(leaf) == 32:
                    expected_nodes.extend(frontier.append_collect(leaf))
                    root = signed.get(frontier.size)
                    if root is not None and not hmac.compare_digest(root, frontier.root()):
                        raise AuditVerificationError(
                            frontier.size - 1,
                            "root_mismatch",
                            f"the entries do not hash to the root signed for tree size {frontier.size}",
                        )

        try:
            verified = verify_log(rows(), expected_size=size, expected_root=bytes(head.root) if head else None)
        finally:
            result.close()  # on PostgreSQL a server-side cursor, left open by a failure part-way
        if head is not None and bytes(head.frontier) != frontier.to_bytes():
            raise AuditVerificationError(size, "head_mismatch", "the head's stored frontier is not the tree's")
        _check_nodes(session, expected_nodes)
        pending = _check_queue(session)
    return LogCheck(verified.size, verified.root, count, exported, int(pending))


_COLUMNS = ("event", "person_id", "organisation", "category", "purpose", "effect")


def _check_queue(session: Any) -> int:
    """Every appended entry is either in the tree or queued for it; return how many are queued. Counted: the
    leaves' entries are distinct (a unique index) and each exists (the entries are read through their leaves
    below), so with queued entries that exist and are not placed, the counts add up only if none is missing."""
    entries = session.scalar(select(func.count()).select_from(AuditEntryRow)) or 0
    placed = session.scalar(select(func.count()).select_from(AuditLeafRow)) or 0
    queued = session.scalar(select(func.count()).select_from(AuditPendingRow)) or 0
    stray = (
        session.scalar(
            select(func.count())
            .select_from(AuditPendingRow)
            .outerjoin(AuditEntryRow, AuditEntryRow.id == AuditPendingRow.entry_id)
            .outerjoin(AuditLeafRow, AuditLeafRow.entry_id == AuditPendingRow.entry_id)
            .where((AuditEntryRow.id.is_(None)) | (AuditLeafRow.entry_id.is_not(None)))
        )
        or 0
    )
    if stray or entries != placed + queued:
        raise AuditVerificationError(
            placed,
            "entry_unqueued",
            "the queue of entries awaiting the sequencer does not hold exactly the entries without a place",
        )
    return int(queued)


def _check_columns(
    index: int, row: AuditEntryRow, entry: dict[str, Any], actor_id: str | None, salt: str | None
) -> None:
    for name in _COLUMNS:
        if getattr(row, name) != entry.get(name):
            raise AuditVerificationError(index, "column_mismatch", f"the row's {name} column differs from its entry")
    basis = entry.get("basis")
    kind = basis.get("kind") if isinstance(basis, dict) else None
    if row.basis_kind != (kind if isinstance(kind, str) else None):
        raise AuditVerificationError(index, "column_mismatch", "the row's basis_kind column differs from its entry")
    logged = entry.get("logged_at")
    if not isinstance(logged, str) or utc(row.logged_at) != datetime.fromisoformat(logged.replace("Z", "+00:00")):
        raise AuditVerificationError(index, "column_mismatch", "the row's logged_at column differs from its entry")
    commitment = entry.get("actor_commitment")
    if (commitment is None) != (actor_id is None):
        raise AuditVerificationError(index, "actor_mismatch", "the actor opening and the entry's commitment disagree")
    if commitment is not None:
        try:
            verify_actor_commitment(commitment, actor_id or "", salt or "")
        except AuditError:
            raise AuditVerificationError(
                index, "actor_mismatch", "the stored actor opening does not open the entry's commitment"
            ) from None


def _open(note: str, keys: list[Verifier], origin: str, size: int | None) -> Checkpoint:
    try:
        body, _names = open_note(note, keys)
        checkpoint = parse_checkpoint(body)
    except AuditError as error:
        raise AuditVerificationError(size or 0, "signature", f"a checkpoint does not verify: {error}") from None
    if checkpoint.origin != origin:
        raise AuditVerificationError(
            checkpoint.size, "origin_mismatch", f"a checkpoint of another log ({checkpoint.origin!r})"
        )
    if size is not None and checkpoint.size != size:
        raise AuditVerificationError(size, "checkpoint_mismatch", "a stored checkpoint's size column differs")
    return checkpoint


def _check_nodes(session: object, expected: list[tuple[int, int, bytes]]) -> None:
    want = {(level, idx): node for level, idx, node in expected}
    stored = session.execute(  # type: ignore[attr-defined]
        select(AuditNodeRow.level, AuditNodeRow.idx, AuditNodeRow.hash).execution_options(yield_per=5000)
    )
    seen = 0
    try:
        for level, idx, node in stored:
            expected_hash = want.get((level, idx))
            if expected_hash is None or bytes(node) != expected_hash:
                raise AuditVerificationError(
                    idx << level, "node_mismatch", f"the stored subtree hash at level {level}, index {idx} is wrong"
                )
            seen += 1
    finally:
        stored.close()
    if seen != len(want):
        raise AuditVerificationError(0, "node_missing", f"{len(want) - seen} stored subtree hash(es) are missing")
