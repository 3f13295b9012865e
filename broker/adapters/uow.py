"""The unit of work: a use case's one transaction. It rolls back unless the use case commits.

Repositories and views never commit (STYLE.md: the use case owns the transaction)."""

from __future__ import annotations

import contextlib
from types import TracebackType

from sqlalchemy.orm import Session

from broker.adapters.database import Database


class UnitOfWork:
    def __init__(self, db: Database, *, write: bool = True) -> None:
        self._db = db
        self._write = write
        self._lock: contextlib.ExitStack | None = None
        self.session: Session

    def __enter__(self) -> UnitOfWork:
        self._lock = contextlib.ExitStack()
        if self._write and self._db.sqlite:
            self._lock.enter_context(self._db.write_lock.hold())
        try:
            self.session = self._db.session(write=self._write)
        except BaseException:
            self._lock.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            # close() rolls back whatever was not committed and detaches the loaded rows without expiring
            # them, so values read in a read-only unit of work stay usable after it.
            self.session.close()
        finally:
            assert self._lock is not None
            self._lock.close()

    def commit(self) -> None:
        self.session.commit()

    @property
    def postgres(self) -> bool:
        return not self._db.sqlite
