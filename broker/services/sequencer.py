"""The sequencer: gives appended audit entries their tree positions, signs checkpoints and exports them.

Entries are appended inside the transactions of the events they record, with an append id and no position
(broker/services/audit_log.py). The sequencer — one per deployment, elected (broker/adapters/leader.py) —
takes the committed ones in append-id order, a batch at a time (default 256), and in one transaction per batch:
gives each the next gap-free index and its final canonical bytes, hashes it into the RFC 9162 tree, stores the
perfect subtree hashes that became complete (so proofs take O(log n) reads), moves the head, and signs a
checkpoint (C2SP tlog-checkpoint in a C2SP signed-note, Ed25519) of the new tree. After the commit it hands the
newest checkpoint to the sink outside the database. An entry waits at most one interval (default 1 s) plus the
time of the batches ahead of it.

Fail closed (issue #5): if no checkpoint has reached the sink for longer than the anchoring window (default
5 minutes), disclosures are refused with 503 (`AuditUnavailable`), because their entries could then be rolled
back unnoticed. Withdrawing a consent and the portal keep working. A quiet log still re-exports its newest
checkpoint every half window, so a healthy broker never trips the window.

Before its first signature an elected sequencer checks the database against the sink's newest checkpoint: a
database restored from an older copy, or rewritten, would otherwise be signed into a second, forked history.
If the check fails the sequencer stops signing (and so disclosures stop once the window passes) until the DPO
has looked: `broker audit verify` names what differs.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from hashlib import sha256
from typing import Any

from sqlalchemy import bindparam, insert, select, update

from audit import EMPTY_ROOT, Frontier
from audit.entry import place_index
from audit.errors import AuditError
from audit.note import (
    Verifier,
    format_checkpoint,
    open_note,
    parse_checkpoint,
    parse_verifier_key,
    sign_note,
    verifier_key,
)
from audit.proofs import consistency_nodes, consistency_proof, verify_consistency
from broker.adapters.checkpoint_sink import CheckpointSink, SinkConflict, SinkError, open_sink
from broker.adapters.database import Prepared, unavailability
from broker.adapters.leader import LeaderLock
from broker.adapters.orm import AuditCheckpointRow, AuditEntryRow, AuditHeadRow, AuditNodeRow
from broker.adapters.uow import UnitOfWork
from broker.domain.clock import utc
from broker.domain.errors import BrokerError
from broker.services import Broker

log = logging.getLogger("broker.sequencer")

HEAD_ID = 1

_HEAD = AuditHeadRow.__table__
_ENTRIES = AuditEntryRow.__table__
_NODES = AuditNodeRow.__table__
_CHECKPOINTS = AuditCheckpointRow.__table__

_HEAD_COLUMNS = (_HEAD.c.size, _HEAD.c.frontier, _HEAD.c.root, _HEAD.c.exported_size, _HEAD.c.exported_at)
_READ_HEAD = Prepared(select(*_HEAD_COLUMNS).where(_HEAD.c.id == HEAD_ID))
_READ_HEAD_FOR_UPDATE = Prepared(select(*_HEAD_COLUMNS).where(_HEAD.c.id == HEAD_ID).with_for_update())
_INSERT_HEAD = Prepared(insert(_HEAD))
_MOVE_HEAD = Prepared(
    update(_HEAD)
    .where(_HEAD.c.id == HEAD_ID, _HEAD.c.size == bindparam("old_size"))
    .values(size=bindparam("size"), frontier=bindparam("frontier"), root=bindparam("root"))
)
_PENDING = Prepared(
    select(_ENTRIES.c.id, _ENTRIES.c.entry, _ENTRIES.c.split)
    .where(_ENTRIES.c.idx.is_(None))
    .order_by(_ENTRIES.c.id)
    .limit(bindparam("limit"))
)
_PLACE = Prepared(
    update(_ENTRIES)
    .where(_ENTRIES.c.id == bindparam("entry_id"), _ENTRIES.c.idx.is_(None))
    .values(idx=bindparam("idx"), entry=bindparam("final"), split=None, leaf_hash=bindparam("leaf"))
)
_INSERT_NODE = Prepared(insert(_NODES))
_INSERT_CHECKPOINT = Prepared(insert(_CHECKPOINTS).returning(_CHECKPOINTS.c.id))
_EXPORTED = (
    update(_HEAD)
    .where(_HEAD.c.id == HEAD_ID)
    .values(exported_size=bindparam("exported_size"), exported_at=bindparam("exported_at"))
)


class AuditUnavailable(BrokerError):
    """Disclosures wait: the log's newest entries are not yet anchored outside the database."""

    code = "audit_unavailable"
    status = 503


class SequencerHalted(Exception):
    """The database does not extend the newest exported checkpoint: rollback, truncation or a rewrite."""


@dataclass(frozen=True, slots=True)
class BatchResult:
    integrated: int
    size: int
    root: bytes


@dataclass(frozen=True, slots=True)
class RunResult:
    integrated: int
    size: int
    exported: bool


def origin_of(broker: Broker) -> str:
    """The log's name in its checkpoints (C2SP tlog-checkpoint: a schema-less URL, no spaces or "+")."""
    configured = broker.settings.audit_origin
    if configured:
        return configured
    host = broker.settings.issuer.split("://", 1)[-1].rstrip("/")
    return f"{host}/audit-log"


def verifier_keys(broker: Broker) -> list[str]:
    """The note verifier keys of every checkpoint key, oldest first (`verifier.key` in an export)."""
    name = origin_of(broker)
    return [verifier_key(name, key.public_key) for key in broker.keys.log_keys()]


def verifiers(broker: Broker) -> list[Verifier]:
    return [parse_verifier_key(key) for key in verifier_keys(broker)]


def read_head(uow: UnitOfWork, *, for_update: bool = False) -> Any | None:
    return (_READ_HEAD_FOR_UPDATE if for_update and uow.postgres else _READ_HEAD).first(uow.session)


class Sequencer:
    """Integrates entries, signs and exports checkpoints. Safe to call from any process: only one at a time
    moves the head (the head row is locked, and moved only from the size read)."""

    def __init__(self, broker: Broker, sink: CheckpointSink | None = None) -> None:
        self.broker = broker
        settings = broker.settings
        self.sink = sink or open_sink(
            settings.audit_sink, instance_path=settings.instance_path, ca_file=settings.audit_sink_ca
        )
        self.batch_size = settings.audit_batch_size
        self.origin = origin_of(broker)
        self._checked_sink = False

    # -- integration -------------------------------------------------------------------------------------------

    def integrate_batch(self, now: datetime) -> BatchResult:
        """Give up to one batch of pending entries their positions and sign a checkpoint of the new tree.

        The batch is read and computed — final bytes, leaf and subtree hashes, the signed checkpoint — in a read
        transaction, and only written in the write transaction: on SQLite every disclosure waits while the
        write lock is held, so the hashing and signing stay outside it (docs/benchmarks.md). Only the sequencer
        gives positions, and the write moves the head only from the size that was read (checked again under
        the row lock), so nothing can come between the two."""
        with self.broker.uow(write=False) as uow:
            head = read_head(uow)
            pending = _PENDING.rows(uow.session, {"limit": self.batch_size}) if head is not None else []
        if head is None:
            self._start_log(now)
            return self.integrate_batch(now)
        frontier = Frontier.from_bytes(head.size, bytes(head.frontier))
        old_size = frontier.size
        if not pending:
            return BatchResult(0, old_size, frontier.root())
        placed: list[dict[str, Any]] = []
        nodes: list[dict[str, Any]] = []
        for entry_id, data, split in pending:
            index = frontier.size
            final = place_index(bytes(data), split, index)
            leaf = sha256(b"\x00" + final).digest()  # RFC 9162 §2.1.1 leaf hash
            for level, idx, node in frontier.append_collect(leaf):
                nodes.append({"level": level, "idx": idx, "hash": node})
            placed.append({"entry_id": entry_id, "idx": index, "final": final, "leaf": leaf})
        root = frontier.root()
        note = self._note(frontier.size, root)
        with self.broker.uow() as uow:
            session = uow.session
            current = read_head(uow, for_update=True)
            if current is None or current.size != old_size:  # another sequencer got there first
                raise RuntimeError("the audit log head moved during sequencing")
            _PLACE.execute_many(session, placed)
            _INSERT_NODE.execute_many(session, nodes)
            moved = _MOVE_HEAD.execute(
                session, {"old_size": old_size, "size": frontier.size, "frontier": frontier.to_bytes(), "root": root}
            )
            if moved.rowcount != 1:  # never give two entries one index
                raise RuntimeError("the audit log head moved during sequencing")
            self._store_checkpoint(uow, frontier.size, root, note, now)
            uow.commit()
        return BatchResult(len(pending), frontier.size, root)

    def _start_log(self, now: datetime) -> None:
        """A new log: the head, and a first checkpoint of the empty tree (RFC 9162 §2.1.1: MTH({}) = SHA-256())."""
        empty = Frontier.empty()
        with self.broker.uow() as uow:
            if read_head(uow, for_update=True) is None:
                _INSERT_HEAD.execute(
                    uow.session,
                    {"id": HEAD_ID, "size": 0, "frontier": b"", "root": empty.root(), "exported_size": None},
                )
                self._store_checkpoint(uow, 0, empty.root(), self._note(0, empty.root()), now)
                uow.commit()

    def _note(self, size: int, root: bytes) -> str:
        key = self.broker.keys.current_log_key()
        return sign_note(format_checkpoint(self.origin, size, root), self.origin, key.private_key)

    def _store_checkpoint(self, uow: UnitOfWork, size: int, root: bytes, note: str, now: datetime) -> None:
        _INSERT_CHECKPOINT.execute(
            uow.session, {"size": size, "root": root, "note": note, "signed_at": now, "exported_at": None}
        )

    # -- export ------------------------------------------------------------------------------------------------

    def export(self, now: datetime) -> bool:
        """Hand the newest checkpoint to the sink if it is not there yet, or if the last export is older than
        half the anchoring window (a heartbeat for a quiet log). Returns whether anything was exported."""
        with self.broker.uow(write=False) as uow:
            head = read_head(uow)
            newest = uow.session.execute(
                select(AuditCheckpointRow.id, AuditCheckpointRow.size, AuditCheckpointRow.note)
                .order_by(AuditCheckpointRow.id.desc())
                .limit(1)
            ).first()
        if head is None or newest is None:
            return False
        window = self.broker.settings.audit_anchor_window or 300
        fresh = head.exported_at is not None and now - utc(head.exported_at) < timedelta(seconds=window / 2)
        if head.exported_size == newest.size and fresh:
            return False
        if not self._checked_sink:
            self.check_against_sink()
        self.sink.publish(newest.size, newest.note)
        with self.broker.uow() as uow:
            uow.session.execute(
                update(AuditCheckpointRow).where(AuditCheckpointRow.id == newest.id).values(exported_at=now)
            )
            uow.session.execute(_EXPORTED, {"exported_size": newest.size, "exported_at": now})
            uow.commit()
        self.broker.runtime.pop(_GATE, None)
        return True

    def check_against_sink(self) -> None:
        """Raise SequencerHalted unless the database's tree extends the sink's newest checkpoint."""
        text = self.sink.latest()
        self._checked_sink = True
        if text is None:
            return
        try:
            body, _signers = open_note(text, verifiers(self.broker))
            exported = parse_checkpoint(body)
        except AuditError as error:
            self._checked_sink = False
            raise SequencerHalted(f"the sink's newest checkpoint does not verify: {error}") from None
        if exported.origin != self.origin:
            self._checked_sink = False
            raise SequencerHalted(f"the sink holds checkpoints of another log ({exported.origin!r})")
        with self.broker.uow(write=False) as uow:
            head = read_head(uow)
            size = head.size if head else 0
            if exported.size > size:
                self._checked_sink = False
                raise SequencerHalted(
                    f"the database's log has {size} entries but a checkpoint of {exported.size} was exported: "
                    "the database was rolled back or truncated"
                )
            root = bytes(head.root) if head else EMPTY_ROOT
            if exported.size == size:
                consistent = exported.root == root
            elif exported.size == 0:  # every tree extends the empty one (RFC 9162 §2.1.4 needs 0 < first)
                consistent = exported.root == EMPTY_ROOT
            else:
                try:
                    nodes = load_nodes(uow, consistency_nodes(exported.size, size))
                    proof = consistency_proof(exported.size, size, nodes)
                    verify_consistency(exported.size, size, exported.root, root, proof)
                    consistent = True
                except AuditError:  # a proof that fails, or stored hashes that are missing
                    consistent = False
        if not consistent:
            self._checked_sink = False
            raise SequencerHalted(
                f"the database's log does not extend the exported checkpoint of size {exported.size}: "
                "entries before it were changed"
            )

    # -- a whole round -----------------------------------------------------------------------------------------

    def run_once(self, now: datetime | None = None) -> RunResult:
        """Integrate everything pending (batch by batch, a checkpoint each), then export. Returns totals."""
        now = now or self.broker.clock.now()
        total = 0
        while True:
            result = self.integrate_batch(now)
            total += result.integrated
            if result.integrated < self.batch_size:
                break
        exported = self.export(now)
        return RunResult(total, result.size, exported)


def load_nodes(uow: UnitOfWork, wanted: Any) -> dict[tuple[int, int], bytes]:
    """Fetch the stored hashes for (level, index) pairs: level 0 from the entries' leaf hashes, the rest from
    audit_nodes. A few dozen keys at most (O(log n)), read in one statement. Raises AuditError if any is missing."""
    found, _size = load_nodes_and_size(uow, wanted)
    missing = {(int(level), int(idx)) for level, idx in wanted} - found.keys()
    if missing:
        raise AuditError(f"the log's stored tree is missing {len(missing)} node(s), e.g. {sorted(missing)[0]}")
    return found


def load_nodes_and_size(uow: UnitOfWork, wanted: Any) -> tuple[dict[tuple[int, int], bytes], int]:
    """The stored hashes that exist among `wanted`, and the tree's size from the head (0 for a new log), in one
    statement: a proof on PostgreSQL is then one round trip inside its read transaction.

    The statement goes to the driver's cursor as plain SQL with one placeholder per key: building the same
    query as a SQLAlchemy expression (an IN and an OR per level) cost most of an inclusion proof's time
    (docs/benchmarks.md, "Audit log"). Only integers are bound."""
    keys = {(int(level), int(idx)) for level, idx in wanted}
    leaves = sorted(idx for level, idx in keys if level == 0)
    by_level: dict[int, list[int]] = {}
    for level, idx in keys:
        if level > 0:
            by_level.setdefault(level, []).append(idx)
    connection = uow.session.connection()
    mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    driver = connection.connection.driver_connection
    assert driver is not None
    # The head's size travels as a row of level -1 (its hash column NULL).
    parts, params = [f"SELECT -1, size, NULL FROM audit_head WHERE id = {mark}"], [HEAD_ID]  # noqa: S608  # nosec B608  # only placeholders
    if leaves:
        # The parentheses go with the placeholders: a lone ")" part in the f-string below makes bandit warn that the
        # suppression on that line matched nothing. The text sent is the same.
        marks = "(" + ", ".join([mark] * len(leaves)) + ")"
        parts.append(f"SELECT 0, idx, leaf_hash FROM audit_entries WHERE idx IN {marks}")  # noqa: S608  # nosec B608
        params += leaves
    if by_level:
        clauses = []
        for level, ids in sorted(by_level.items()):
            clauses.append(f"(level = {mark} AND idx IN ({', '.join([mark] * len(ids))}))")
            params += [level, *ids]
        where = " OR ".join(clauses)
        parts.append(f"SELECT level, idx, hash FROM audit_nodes WHERE {where}")  # noqa: S608  # nosec B608  # placeholders only, see above
    found: dict[tuple[int, int], bytes] = {}
    size = 0
    cursor = driver.cursor()
    try:
        # Only placeholders are put into the text; every value is bound.
        cursor.execute(" UNION ALL ".join(parts), params)
        for level, idx, node in cursor.fetchall():
            if level == -1:
                size = int(idx)
            elif node is not None:
                found[(int(level), int(idx))] = bytes(node)
    finally:
        cursor.close()
    return found, size


# -- the fail-closed gate ----------------------------------------------------------------------------------------

_GATE = "audit_anchored"  # broker.runtime key: (when read, the export time read)
_GATE_TTL = timedelta(seconds=1)


def require_anchored(broker: Broker, uow: UnitOfWork) -> None:
    """Raise AuditUnavailable when the newest export is older than the anchoring window (None: no gate).

    The export time is read from the head at most once a second per process: the window is minutes long, and
    the read would otherwise be one more statement in every disclosure."""
    window = broker.settings.audit_anchor_window
    if window is None:
        return
    now = broker.clock.now()
    cached = broker.runtime.get(_GATE)
    if cached is not None and now - cached[0] < _GATE_TTL and now >= cached[0]:
        exported_at = cached[1]
    else:
        head = read_head(uow)
        exported_at = utc(head.exported_at) if head is not None and head.exported_at is not None else None
        broker.runtime[_GATE] = (now, exported_at)
    if exported_at is None or now - exported_at > timedelta(seconds=window):
        raise AuditUnavailable(
            "the audit log's checkpoints have not reached their store outside the database recently; "
            "disclosures resume when they do (withdrawing a consent still works)"
        )


# -- the thread every broker process runs ------------------------------------------------------------------------


class SequencerThread:
    """Runs the sequencer while this process holds the election lock; otherwise waits its turn."""

    def __init__(self, broker: Broker, *, interval: float | None = None) -> None:
        self.broker = broker
        self.interval = interval if interval is not None else broker.settings.audit_interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = LeaderLock(broker.db)
        self.halted: str | None = None
        self.elected = False  # whether this process has been the sequencer at some point
        # Why the database could not be used in the last round (None: it could): an outage is logged once when it
        # starts and once when the sequencer is back, not every round.
        self.database_unavailable: str | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="audit-sequencer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._lock.release()

    def _run(self) -> None:
        sequencer: Sequencer | None = None
        while not self._stop.is_set():
            try:
                if self._lock.acquire() and self._lock.still_held():
                    if sequencer is None:
                        sequencer = Sequencer(self.broker)
                        sequencer.check_against_sink()
                        self.elected = True
                        log.info("elected audit sequencer")
                    sequencer.run_once()
                    self.halted = None
                    if self.database_unavailable is not None:
                        log.info("audit sequencer resumed: the database is back")
                        self.database_unavailable = None
                else:
                    sequencer = None
            except SequencerHalted as error:
                self.halted = str(error)
                log.error("audit sequencer halted: %s", error)
                sequencer = None
                self._lock.release()
                self._stop.wait(max(self.interval, 30.0))
                continue
            except (SinkError, SinkConflict) as error:
                log.error("checkpoint export failed: %s", error)
            except Exception as error:  # a database error, a full disk: log it and try again next round
                reason = unavailability(error)
                if reason is None:
                    log.exception("audit sequencer round failed")
                elif self.database_unavailable is None:
                    # Entries appended meanwhile wait in the database; they are sequenced when it is back.
                    log.warning("audit sequencer waits for the database", extra={"reason": reason})
                self.database_unavailable = reason
                sequencer = None
            self._stop.wait(self.interval)
