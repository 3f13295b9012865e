"""The unit of work: a use case's one transaction. It rolls back unless the use case commits.

Repositories and views never commit (STYLE.md: the use case owns the transaction)."""

from __future__ import annotations

import contextlib
from types import TracebackType

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from broker.adapters.database import Database


class UnitOfWork:
    """On SQLite a write unit of work holds the database's write lock (database.py) from its `BEGIN IMMEDIATE` to
    the end of its transaction. Everything else a transaction needs — the pooled connection, the session, the
    session's transaction — is set up before the lock is taken and put away after it is released: every
    microsecond inside the lock is taken from the rate of all writers (docs/benchmarks.md)."""

    def __init__(self, db: Database, *, write: bool = True) -> None:
        self._db = db
        self._write = write
        self._lock = contextlib.ExitStack()
        # SQLite writes only: the connection the session is bound to, checked out by this unit of work.
        self._connection: Connection | None = None
        self.session: Session

    def __enter__(self) -> UnitOfWork:
        if not (self._write and self._db.sqlite):
            self.session = self._db.session(write=self._write)
            return self
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

    @property
    def postgres(self) -> bool:
        return not self._db.sqlite
