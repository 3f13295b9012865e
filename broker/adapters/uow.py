"""The unit of work: a use case's one transaction. It rolls back unless the use case commits.

Repositories and views never commit (STYLE.md: the use case owns the transaction).

One exception to "one use case, one transaction": a caller may open a unit of work and make it *ambient*
(`UnitOfWork.ambient()`); while it is, the use cases it runs join it (`join_ambient`, used by `Broker.uow`), each
in a savepoint of the ambient transaction, and the caller commits once. The Idempotency-Key wrapper does this, so
that the stored response and the write it answers are committed together (broker/services/idempotency.py).

A request may also leave one piece of work for its first write transaction (`first_write`): a DPoP proof's `jti`
is used once by an insert (RFC 9449 §11.1), and doing that in the request's own write transaction instead of one of
its own saves a second durable commit per request — on SQLite a second turn of the write lock. The caller does the
work itself, in a transaction of its own, when no write unit of work of the request committed it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from types import TracebackType
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.orm import Session, SessionTransaction

from broker.adapters.database import Database, PooledConnection

# The unit of work that use cases join instead of opening their own (see the module's docstring). A context
# variable, so that each request's thread (or task) sees only its own.
_AMBIENT: ContextVar[UnitOfWork | None] = ContextVar("broker_ambient_unit_of_work", default=None)


class FirstWrite:
    """Work for the first write transaction of a request (see the module's docstring). `done` turns true when a unit
    of work that did it has committed; until then every new write unit of work does it again, first thing (the
    earlier one rolled it back with the rest of its work).

    `jti` is the same work as one row for the `dpop_proof_jtis` table, for a use case that writes in a single
    statement of its own and folds the insert into it (the PostgreSQL disclosure, services/disclosures.py); the
    use case then sets `done` once that statement has committed, and raises `replayed()` when the row was there
    already."""

    __slots__ = ("_apply", "done", "jti", "replayed")

    def __init__(
        self,
        apply: Callable[[Session], None],
        jti: dict[str, Any] | None = None,
        replayed: Callable[[], BaseException] | None = None,
    ) -> None:
        if (jti is None) != (replayed is None):
            raise ValueError("a first write's jti and its replay error go together")
        self._apply = apply
        self.done = False
        self.jti = jti
        self.replayed = replayed

    def apply(self, session: Session) -> None:
        self._apply(session)


_FIRST_WRITE: ContextVar[FirstWrite | None] = ContextVar("broker_first_write", default=None)


@contextlib.contextmanager
def first_write(
    apply: Callable[[Session], None],
    *,
    jti: dict[str, Any] | None = None,
    replayed: Callable[[], BaseException] | None = None,
) -> Iterator[FirstWrite]:
    """Inside this block, the first write unit of work on any database starts its transaction with `apply(session)`
    (an exception from it leaves the unit of work unentered and propagates to the use case's caller). After the
    block, `done` says whether a committed transaction did it; if not, the caller must do it otherwise. `jti` and
    `replayed`: the same work in a form a single statement can fold in (`FirstWrite`)."""
    pending = FirstWrite(apply, jti, replayed)
    token = _FIRST_WRITE.set(pending)
    try:
        yield pending
    finally:
        _FIRST_WRITE.reset(token)


def pending_first_write() -> FirstWrite | None:
    """The request's first-write work not yet done by a committed transaction, if there is any."""
    pending = _FIRST_WRITE.get()
    return None if pending is None or pending.done else pending


class UnitOfWork:
    """On SQLite a write unit of work holds the database's write lock (database.py) from its `BEGIN IMMEDIATE` to
    the end of its transaction. Everything else a transaction needs — the pooled connection, the session, the
    session's transaction — is set up before the lock is taken and put away after it is released: every
    microsecond inside the lock is taken from the rate of all writers (docs/benchmarks.md)."""

    def __init__(self, db: Database, *, write: bool = True, decision_lock: bool = True) -> None:
        self._db = db
        self._write = write
        # Whether a decision takes the person row's lock (services/persons.py); only test mode turns it off
        # (Settings.decision_lock), to show that the withdrawal-race test finds the race without it.
        self.decision_lock = decision_lock
        self._lock = contextlib.ExitStack()
        # SQLite writes only: the connection the session is bound to, checked out by this unit of work.
        self._connection: Connection | None = None
        self.session: Session

    def __enter__(self) -> UnitOfWork:
        self._first: FirstWrite | None = None
        if not (self._write and self._db.sqlite):
            self.session = self._db.session(write=self._write)
            return self._begin_first_write()
        connection = self._db.engine.connect()  # no transaction yet: a Connection begins on first use
        try:
            # The connection's transactions begin with BEGIN IMMEDIATE (database.py); the session begins its
            # own (no SQL) now and the connection's only when asked for it — under the lock, below.
            self.session = self._db.sessions(bind=connection.execution_options(sqlite_begin="IMMEDIATE"))
            self.session.begin()
            lock = contextlib.ExitStack()
            lock.enter_context(self._db.write_lock.hold())
            try:
                self.session.connection()  # BEGIN IMMEDIATE, the lock held
            except BaseException:
                try:
                    self.session.close()
                finally:
                    lock.close()
                raise
        except BaseException:
            connection.close()
            raise
        self._lock = lock
        self._connection = connection
        return self._begin_first_write()

    def _begin_first_write(self) -> UnitOfWork:
        pending = _FIRST_WRITE.get() if self._write else None
        if pending is None or pending.done:
            return self
        try:
            pending.apply(self.session)
        except BaseException as error:
            self.__exit__(type(error), error, error.__traceback__)
            raise
        self._first = pending
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # close() rolls back whatever was not committed and detaches the loaded rows without expiring them, so
        # values read in a read-only unit of work stay usable after it.
        connection = self._connection
        if connection is None:
            self.session.close()
            return
        # The transaction must be over before the lock is released: a writer waiting for the lock would otherwise
        # find the database still locked and sleep in SQLite's busy handler. After a commit it is over and the
        # session and connection are put away after the release; otherwise (an exception, no commit, a commit
        # that failed) they are closed first, as the connection's return to the pool rolls the driver back too.
        ended = (
            exc_type is None
            and not self.session.in_transaction()
            and not connection.invalidated
            and not getattr(connection.connection.driver_connection, "in_transaction", True)
        )
        try:
            if not ended:
                try:
                    self.session.close()
                finally:
                    connection.close()
        finally:
            self._lock.close()
        if ended:
            try:
                self.session.close()
            finally:
                connection.close()

    def commit(self) -> None:
        self.session.commit()
        if self._first is not None:
            self._first.done = True

    @property
    def postgres(self) -> bool:
        return not self._db.sqlite

    @contextlib.contextmanager
    def ambient(self) -> Iterator[None]:
        """Inside this block, `join_ambient` (and so `Broker.uow()`) on this database answers a unit of work that
        joins this one instead of opening another: on SQLite a second write unit of work would wait for the write
        lock this one holds, forever. Enter it with this unit of work's transaction open; commit it after."""
        token = _AMBIENT.set(self)
        try:
            yield
        finally:
            _AMBIENT.reset(token)


class CoreUnitOfWork(UnitOfWork):
    """A unit of work on the pool's driver connection (`PooledConnection`, database.py) instead of an ORM session,
    for a use case whose every statement is a prebuilt `Prepared` one (the disclosure transaction,
    services/disclosures.py). Same promises — one transaction, rolled back unless committed, on SQLite the write lock
    held from `BEGIN IMMEDIATE` to its end and the connection returned to the pool after the lock is released, the
    request's first write done first — without the session's set-up, state tracking and tear-down, nor SQLAlchemy's
    `Connection` and transaction objects: the statements run on the driver's cursor anyway, and the transaction is
    begun and ended on the driver too. A one-insert write transaction on SQLite, commit and write lock included,
    measured 136 µs of CPU this way against 176 µs on a Core `Connection` and 267 µs through the session.

    `session` is the `PooledConnection`, so that `Prepared` statements and the helpers that take a unit of work run
    on it unchanged; SQLAlchemy statements (`session.execute`) and ORM calls are not available, and after `commit`
    no statement is (a unit of work is one transaction)."""

    def __init__(
        self, db: Database, *, write: bool = True, decision_lock: bool = True, autocommit: bool = False
    ) -> None:
        if autocommit and write:
            # No transaction, so no write lock on SQLite, nor the request's first write: a write there is one
            # statement that folds in what it needs (`FirstWrite.jti`).
            raise ValueError("an autocommit unit of work is opened with write=False")
        super().__init__(db, write=write, decision_lock=decision_lock)
        self._autocommit = autocommit

    def __enter__(self) -> CoreUnitOfWork:
        self._first = None
        self._committed = False
        db = self._db
        # Checked out before the lock is taken. `autocommit`: each statement a transaction of its own, for a use case
        # whose reads are each one statement and that writes, if at all, in one statement (the PostgreSQL
        # disclosure, services/disclosures.py); SQLite's driver is in autocommit mode already until `begin`.
        connection = PooledConnection(db.engine, autocommit=self._autocommit)
        lock = contextlib.ExitStack()
        try:
            if db.sqlite:
                if self._write:
                    lock.enter_context(db.write_lock.hold())
                    connection.begin("IMMEDIATE")
                elif not self._autocommit:
                    connection.begin("DEFERRED")  # a read: one snapshot for all its statements, no lock
            # PostgreSQL: psycopg begins the transaction with the first statement (PooledConnection).
        except BaseException:
            # No transaction began, so none has to end before the lock is released.
            try:
                connection.close()
            finally:
                lock.close()
            raise
        self._lock = lock
        self._pooled = connection
        self.session = connection  # type: ignore[assignment]
        self._begin_first_write()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # As UnitOfWork's: the transaction is over before the lock is released — a writer waiting for the lock would
        # otherwise find the database still locked and sleep in SQLite's busy handler — and the connection goes back
        # to the pool after the release, keeping its return out of the time every writer waits for. A rollback that
        # fails leaves the transaction's state unknown: the connection is then closed instead (invalidated), which
        # ends the transaction, before the lock is released.
        connection = self._pooled
        try:
            if not self._committed:
                try:
                    connection.rollback()
                except BaseException as error:
                    connection.invalidate(error)
                    raise
        finally:
            try:
                self._lock.close()
            finally:
                connection.close()

    def commit(self) -> None:
        self._pooled.commit()
        self._committed = True
        if self._first is not None:
            self._first.done = True


class JoinedUnitOfWork(UnitOfWork):
    """A use case's unit of work inside an ambient one: a savepoint (SQL `SAVEPOINT`) of the ambient transaction.

    It keeps the promises a unit of work makes to its use case: what the use case commits stays — in the ambient
    transaction, which its owner commits or rolls back as a whole — and what it leaves uncommitted, because it
    raised or simply did not commit, is rolled back to the savepoint. A use case that writes, fails with a
    refusal and does not commit therefore leaves nothing behind even when the owner then commits."""

    def __init__(self, outer: UnitOfWork) -> None:  # the outer's database, transaction and session; no lock
        self._db = outer._db
        self._write = outer._write
        self.decision_lock = outer.decision_lock
        self._lock = contextlib.ExitStack()
        self._connection = None
        self.session = outer.session
        self._savepoint: SessionTransaction | None = None

    def __enter__(self) -> JoinedUnitOfWork:
        # SQLAlchemy emits the SAVEPOINT when the savepoint's connection is first used, not here.
        self._savepoint = self.session.begin_nested()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # The savepoint held here is never a committed one (commit() replaces it). It may be inactive after a
        # failed flush; rolling it back is then what makes the ambient transaction usable again (a use case may
        # catch the error and go on, as resolve_person does on a unique-index race).
        savepoint, self._savepoint = self._savepoint, None
        if savepoint is not None:
            savepoint.rollback()

    def commit(self) -> None:
        savepoint = self._savepoint
        if savepoint is None:
            raise RuntimeError("commit() outside the unit of work's block")
        savepoint.commit()  # RELEASE SAVEPOINT: the work is now part of the ambient transaction
        self._savepoint = None
        # Work after a commit starts a step of its own, undone again unless committed too.
        self._savepoint = self.session.begin_nested()


def join_ambient(db: Database) -> JoinedUnitOfWork | None:
    """A unit of work joining the ambient one on `db`, or None when there is none (the usual case: one
    context-variable read)."""
    outer = _AMBIENT.get()
    if outer is None or outer._db is not db:
        return None
    return JoinedUnitOfWork(outer)
