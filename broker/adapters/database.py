"""Engines and transactions for SQLite (the embedded default) and PostgreSQL (production).

SQLite: WAL with `synchronous=FULL` (durable per commit). Write transactions are serialised by one lock — a
file lock beside the database, held across processes — and start with `BEGIN IMMEDIATE`, so that concurrent
writers queue on the lock instead of sleeping in SQLite's busy handler (see PITFALLS.md: p99 near a second
otherwise).

PostgreSQL: READ COMMITTED; the services lock the rows a decision depends on (`FOR SHARE` / `FOR UPDATE`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str, **kwargs: Any) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, **kwargs)
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    return create_engine(url, **kwargs)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin (SQLAlchemy's documented
        # pysqlite recipe), so that BEGIN IMMEDIATE can be issued for write transactions.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


class WriteLock:
    """Serialises write transactions on one SQLite database across threads and processes."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._thread_lock = threading.Lock()

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        with self._thread_lock:
            if self._path is None:
                yield
                return
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing the descriptor releases the flock


class Database:
    """The engine, its session factory and, on SQLite, the write lock."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        self.engine = make_engine(url, **engine_kwargs)
        self.sqlite = is_sqlite(self.engine)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False, autoflush=True)
        lock_path = None
        if self.sqlite:
            database = make_url(url).database
            if database and database != ":memory:":
                lock_path = Path(database + ".writelock")
        self.write_lock = WriteLock(lock_path)

    def session(self, *, write: bool) -> Session:
        session = self.sessions()
        if self.sqlite and write:
            session.connection(execution_options={"sqlite_begin": "IMMEDIATE"})
        return session

    def dispose(self) -> None:
        self.engine.dispose()
