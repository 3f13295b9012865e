"""Electing the one process that sequences the audit log.

Every broker process runs a sequencer thread; only the holder of this lock does any work. On PostgreSQL the lock
is a session-level advisory lock (`pg_try_advisory_lock`) held on a connection of its own: when the process
dies, or its connection does, the server releases it and another process takes over. On SQLite it is an
exclusive `flock` on a file beside the database, which the kernel releases when the process dies.

Holding the lock is what makes a process the sequencer, but correctness does not depend on it alone: the
sequencer also locks the head row and moves it only from the size it read, so two processes that both believed
themselves elected (a connection lost without either noticing) could never give two entries one index.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from broker.adapters.database import Database

# pg_try_advisory_lock takes one bigint; this one is the first 8 bytes of SHA-256("consent-broker/audit-sequencer")
# as a signed integer, fixed here so that every broker version elects on the same key.
ADVISORY_KEY = 0x1D6F0E3A9C2B4D57

_process_locks: dict[str, threading.Lock] = {}
_process_locks_guard = threading.Lock()


class LeaderLock:
    """A non-blocking, process-wide election. `acquire()` returns whether this process now holds the lock;
    `still_held()` checks it has not been lost; `release()` gives it up."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._held = False
        self._connection: Any = None
        self._fd: int | None = None
        self._thread_lock: threading.Lock | None = None

    @property
    def held(self) -> bool:
        return self._held

    def acquire(self) -> bool:
        if self._held:
            return True
        if self._db.sqlite:
            self._held = self._acquire_file()
        else:
            self._held = self._acquire_advisory()
        return self._held

    def still_held(self) -> bool:
        if not self._held:
            return False
        if self._connection is not None:
            try:
                self._connection.execute(text("SELECT 1"))
            except SQLAlchemyError:
                self.release()
                return False
        return True

    def release(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(SQLAlchemyError):
                self._connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_KEY})
            with contextlib.suppress(SQLAlchemyError):
                self._connection.close()
            self._connection = None
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None
        if self._thread_lock is not None:
            self._thread_lock.release()
            self._thread_lock = None
        self._held = False

    def _acquire_advisory(self) -> bool:
        try:
            connection = self._db.engine.connect()
        except SQLAlchemyError:
            return False
        try:
            got = bool(connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_KEY}).scalar())
            connection.commit()  # end the implicit transaction; the session-level lock stays
        except SQLAlchemyError:
            connection.close()
            return False
        if not got:
            connection.close()
            return False
        self._connection = connection
        return True

    def _acquire_file(self) -> bool:
        database = self._db.engine.url.database
        # flock is per open file description, so two threads of one process could both "hold" it through two
        # descriptors: a process-wide thread lock per database comes first.
        key = database or ":memory:"
        with _process_locks_guard:
            thread_lock = _process_locks.setdefault(key, threading.Lock())
        if not thread_lock.acquire(blocking=False):
            return False
        if not database or database == ":memory:":
            self._thread_lock = thread_lock
            return True
        import fcntl

        try:
            fd = os.open(Path(database + ".sequencer"), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:  # the database's folder is gone or read-only: not elected, and free to try again later
            thread_lock.release()
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            thread_lock.release()
            return False
        self._fd = fd
        self._thread_lock = thread_lock
        return True
